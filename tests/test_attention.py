"""AttentionDecoder against a NumPy transcription of the tutorial's equations."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense.functional import attention_decoder, attention_decoder_shapes


def sigmoid(v):
  return 1 / (1 + np.exp(-v))


def softmax(v):
  exps = np.exp(v - v.max())
  return exps / exps.sum()


def reference(x, params, mask=None, return_probabilities=False):
  """The recurrence written out in float64 NumPy, one example and step at a time.

  x: (B, T, D); params: the module's params; mask: (B, T) or None. Masked
  timesteps read as zeros, s0 included.
  """
  p = {name: np.asarray(value, np.float64) for name, value in params.items()}
  x = np.asarray(x, np.float64)
  batch, timesteps, _ = x.shape
  outputs = []
  for n in range(batch):
    xs = x[n] if mask is None else np.where(mask[n][:, None], x[n], 0.0)
    uxpb = xs @ p['U_a'] + p['b_a']
    s = np.tanh(xs[0] @ p['W_s'])
    y = np.zeros(p['W_o'].shape[0])
    emitted = []
    for _ in range(timesteps):
      e = np.tanh(s @ p['W_a'] + uxpb) @ p['V_a']
      if mask is None:
        a = softmax(e)
      else:
        a = np.where(mask[n], np.exp(e), 0.0)
        if a.sum() > 0:
          a = a / a.sum()
      context = a @ xs
      r = sigmoid(y @ p['W_r'] + s @ p['U_r'] + context @ p['C_r'] + p['b_r'])
      z = sigmoid(y @ p['W_z'] + s @ p['U_z'] + context @ p['C_z'] + p['b_z'])
      s_tilde = np.tanh(
        y @ p['W_p'] + (r * s) @ p['U_p'] + context @ p['C_p'] + p['b_p']
      )
      s_next = (1 - z) * s + z * s_tilde
      y = softmax(y @ p['W_o'] + s @ p['U_o'] + context @ p['C_o'] + p['b_o'])
      s = s_next
      emitted.append(a if return_probabilities else y)
    outputs.append(emitted)
  return np.array(outputs)


@functools.cache
def init(shape, units, output_dim):
  """Random inputs and the params of an AttentionDecoder, built once per case.

  The biases are drawn nonzero so that they are tested.
  """
  x_key, init_key = jax.random.split(jax.random.key(0))
  x = jax.random.normal(x_key, shape)
  layer = fd.AttentionDecoder(
    units, output_dim, bias_init=nn.initializers.normal(0.5)
  )
  return layer, x, layer.init(init_key, x)['params']


@pytest.mark.parametrize(
  'shape,units,output_dim',
  [((2, 5, 3), 4, 6), ((1, 1, 2), 3, 2), ((4, 6, 3), 5, 4)],
)
def test_matches_numpy(shape, units, output_dim):
  layer, x, params = init(shape, units, output_dim)
  assert jax.tree.map(jnp.shape, params) == attention_decoder_shapes(
    shape[-1], units, output_dim
  )
  batch, timesteps, _ = shape
  for return_probabilities, width in [(False, output_dim), (True, timesteps)]:
    y = layer.clone(return_probabilities=return_probabilities).apply(
      {'params': params}, x
    )
    assert y.shape == (batch, timesteps, width)
    expected = reference(x, params, return_probabilities=return_probabilities)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


MASK = np.array(
  [
    [True] * 6,
    [True, True, True, True, False, False],
    [False, True, False, True, True, False],
    [False] * 6,
  ]
)


def test_mask_matches_numpy_and_zeroes_masked_timesteps():
  layer, x, params = init((4, 6, 3), 5, 4)
  for return_probabilities in [False, True]:
    y = layer.clone(return_probabilities=return_probabilities).apply(
      {'params': params}, x, MASK
    )
    expected = reference(x, params, MASK, return_probabilities)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(y))
  weights = np.asarray(y)
  assert np.all(weights[np.broadcast_to(~MASK[:, None, :], weights.shape)] == 0)
  np.testing.assert_allclose(weights[:3].sum(-1), 1.0, rtol=1e-5)
  assert np.all(weights[3] == 0)  # fully masked: attends to nothing.


@pytest.mark.parametrize('padding', [np.nan, np.inf, -np.inf, 1e30])
def test_nan_or_inf_in_masked_steps_changes_nothing(padding):
  layer, x, params = init((4, 6, 3), 5, 4)
  padded = np.where(MASK[:, :, None], np.asarray(x), padding)
  zeroed = np.where(MASK[:, :, None], np.asarray(x), 0.0)

  def loss(params, x):
    return jnp.sum(layer.apply({'params': params}, x, MASK) ** 2)

  for inputs in (padded, zeroed):
    y = layer.apply({'params': params}, inputs, MASK)
    assert np.all(np.isfinite(y))
  np.testing.assert_array_equal(
    layer.apply({'params': params}, padded, MASK),
    layer.apply({'params': params}, zeroed, MASK),
  )
  grads, input_grads = jax.grad(loss, argnums=(0, 1))(params, padded)
  expected, expected_input_grads = jax.grad(loss, argnums=(0, 1))(
    params, zeroed
  )
  for name in params:
    assert np.all(np.isfinite(grads[name])), name
    np.testing.assert_array_equal(grads[name], expected[name])
  np.testing.assert_array_equal(input_grads, expected_input_grads)
  assert np.all(np.asarray(input_grads)[~MASK] == 0)


def test_masked_timesteps_do_not_change_outputs():
  layer, x, params = init((4, 6, 3), 5, 4)
  # The initial state reads timestep 0 whatever the mask, as in the tutorial.
  replaced = ~MASK
  replaced[:, 0] = False
  noise = 100 * jax.random.normal(jax.random.key(1), x.shape)
  garbage = jnp.where(replaced[..., None], noise, x)
  np.testing.assert_allclose(
    layer.apply({'params': params}, garbage, MASK),
    layer.apply({'params': params}, x, MASK),
    rtol=1e-6,
  )


def test_fully_masked_gradients_are_finite():
  layer, x, params = init((4, 6, 3), 5, 4)

  def loss(params, x):
    return jnp.sum(layer.apply({'params': params}, x, MASK) ** 2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  # Masked timesteps are invisible: no gradient reaches them. Timestep 0
  # always gets one, through the initial state.
  invisible = ~MASK
  invisible[:, 0] = False
  assert np.all(np.asarray(grads[1])[invisible] == 0)


@pytest.mark.parametrize('mask', [None, np.array([True, False, True])])
def test_gradients_match_finite_differences(mask):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2))
    params = {
      name: 0.5 * rng.normal(size=shape)
      for name, shape in attention_decoder_shapes(2, 3, 2).items()
    }

    def decode(x, params):
      return attention_decoder(x, params, mask)

    check_grads(jax.jit(decode), (x, params), order=1, modes=['rev'])


def test_leading_axes_jit_and_vmap():
  layer, x, params = init((4, 6, 3), 5, 4)
  y = layer.apply({'params': params}, x, MASK)
  nested = layer.apply(
    {'params': params}, x.reshape(2, 2, 6, 3), MASK.reshape(2, 2, 6)
  )
  np.testing.assert_allclose(nested.reshape(y.shape), y, rtol=1e-6)
  unbatched = layer.apply({'params': params}, x[1], MASK[1])
  np.testing.assert_allclose(unbatched, y[1], rtol=1e-5, atol=1e-6)
  jitted = jax.jit(layer.apply)({'params': params}, x, MASK)
  np.testing.assert_allclose(jitted, y, rtol=1e-5, atol=1e-6)
  per_example = jax.vmap(attention_decoder, (0, None, 0))(x, params, MASK)
  np.testing.assert_allclose(per_example, y, rtol=1e-5, atol=1e-6)


def test_program_does_not_grow_with_timesteps():
  layer, _, params = init((4, 6, 3), 5, 4)

  def size(timesteps):
    x = jnp.ones((2, timesteps, 3))
    return len(jax.make_jaxpr(layer.apply)({'params': params}, x).eqns)

  assert size(3) == size(300)


def test_default_initializers_dtype_and_logical_partitioning(key):
  x = jnp.ones((2, 3, 8))
  layer = fd.AttentionDecoder(
    8,
    8,
    dtype=jnp.bfloat16,
    recurrent_init=nn.with_logical_partitioning(
      nn.initializers.orthogonal(), ('embed', 'hidden')
    ),
  )
  variables = layer.init(key, x)
  params = nn.meta.unbox(variables['params'])
  assert isinstance(variables['params']['U_z'], nn.Partitioned)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  np.testing.assert_allclose(
    params['U_r'] @ params['U_r'].T, np.eye(8), atol=1e-5
  )
  assert not np.any(params['b_o'])
  limit = np.sqrt(3 / 8)  # Keras's Glorot fans for the vector V_a.
  assert np.all(np.abs(params['V_a']) <= limit)
  assert np.std(params['V_a']) > limit / 4
  assert layer.apply(variables, x).dtype == jnp.bfloat16


@pytest.mark.parametrize(
  'kwargs,shape,mask_shape,message',
  [
    ({'units': 0}, (2, 3, 4), None, 'AttentionDecoder: units must be a'),
    ({}, (4,), None, 'rank >= 2 and at least one timestep, got shape (4,)'),
    ({}, (2, 0, 4), None, 'at least one timestep, got shape (2, 0, 4)'),
    ({}, (2, 3, 4), (2, 4), 'mask must have shape (2, 3)'),
  ],
)
def test_errors(kwargs, shape, mask_shape, message, key):
  layer = fd.AttentionDecoder(**{'units': 4, 'output_dim': 2, **kwargs})
  mask = None if mask_shape is None else jnp.ones(mask_shape, bool)
  with pytest.raises(ValueError, match=re.escape(message)):
    layer.init(key, jnp.ones(shape), mask)


def test_a_float_size_is_a_type_error(key):
  layer = fd.AttentionDecoder(units=4, output_dim=2.0)
  with pytest.raises(
    TypeError,
    match=re.escape(
      'AttentionDecoder: output_dim must be a positive integer, got 2.0 of'
      ' type float.'
    ),
  ):
    layer.init(key, jnp.ones((2, 3, 4)))


def test_error_on_features_other_than_built():
  layer, _, params = init((4, 6, 3), 5, 4)
  message = (
    'AttentionDecoder: inputs of shape (2, 6, 4) with units=5 and'
    ' output_dim=4 need U_a of shape (4, 5), but it was built with shape'
    ' (3, 5)'
  )
  with pytest.raises(ValueError, match=re.escape(message)):
    layer.apply({'params': params}, jnp.ones((2, 6, 4)))
