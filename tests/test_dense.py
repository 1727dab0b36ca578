"""PerPositionDense against a NumPy loop, and its transformations."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense.functional import per_position_dense

NUMPY_ACTIVATIONS = {
  None: lambda y: y,
  'linear': lambda y: y,
  'relu': lambda y: np.maximum(y, 0),
  'tanh': np.tanh,
  'sigmoid': lambda y: 1 / (1 + np.exp(-y)),
  'softmax': lambda y: (
    np.exp(y - y.max(-1, keepdims=True))
    / np.exp(y - y.max(-1, keepdims=True)).sum(-1, keepdims=True)
  ),
}


def reference(x, kernel, bias, activation=None):
  """Plain loop over positions: y[..., p, :] = act(x[..., p, :] @ W_p + b_p)."""
  x = np.asarray(x, np.float64)
  out = np.empty(x.shape[:-1] + (kernel.shape[-1],))
  for p in range(kernel.shape[0]):
    out[..., p, :] = x[..., p, :] @ np.asarray(kernel[p], np.float64)
    if bias is not None:
      out[..., p, :] += np.asarray(bias[p], np.float64)
  return NUMPY_ACTIVATIONS[activation](out)


@pytest.mark.parametrize('activation', list(NUMPY_ACTIVATIONS))
@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize(
  'shape,features', [((4, 5, 3), 2), ((2, 3, 7, 6), 4), ((7, 1), 5)]
)
def test_matches_numpy_loop(activation, use_bias, shape, features, key):
  x_key, init_key, bias_key = jax.random.split(key, 3)
  x = jax.random.normal(x_key, shape)
  layer = fd.PerPositionDense(
    features, use_bias=use_bias, activation=activation
  )
  variables = layer.init(init_key, x)
  params = variables['params']
  if use_bias:  # the default bias is zero: perturb it so it is tested.
    params['bias'] = jax.random.normal(bias_key, params['bias'].shape)
  assert set(params) == ({'kernel', 'bias'} if use_bias else {'kernel'})
  assert params['kernel'].shape == (*shape[-2:], features)
  y = layer.apply({'params': params}, x)
  expected = reference(x, params['kernel'], params.get('bias'), activation)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_callable_activation_and_jit(key):
  x = jax.random.normal(key, (3, 4, 5))
  layer = fd.PerPositionDense(6, activation=jax.nn.gelu)
  variables = layer.init(key, x)
  y = jax.jit(layer.apply)(variables, x)
  expected = jax.nn.gelu(
    reference(x, variables['params']['kernel'], variables['params']['bias'])
  )
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_softmax_rows_sum_to_one(key):
  x = jax.random.normal(key, (2, 8, 16))
  layer = fd.PerPositionDense(10, activation='softmax')
  y = layer.apply(layer.init(key, x), x)
  np.testing.assert_allclose(y.sum(-1), np.ones((2, 8)), rtol=1e-5)


def test_default_init_uses_per_position_fans(key):
  positions, in_features, features = 64, 200, 50
  kernel = fd.PerPositionDense(features).init(
    key, jnp.ones((1, positions, in_features))
  )['params']['kernel']
  # Glorot uniform: limit = sqrt(6 / (fan_in + fan_out)), one position's fans.
  limit = np.sqrt(6 / (in_features + features))
  assert float(jnp.abs(kernel).max()) <= limit
  assert float(jnp.abs(kernel).max()) > 0.95 * limit
  np.testing.assert_allclose(float(kernel.std()), limit / np.sqrt(3), rtol=0.02)
  # Positions are drawn independently, not copies of one matrix.
  assert not np.allclose(kernel[0], kernel[1])


def test_batched_call_is_vmap_of_core(key):
  x = jax.random.normal(key, (5, 6, 3))
  layer = fd.PerPositionDense(4)
  params = layer.init(key, x)['params']
  batched = layer.apply({'params': params}, x)
  mapped = jax.vmap(per_position_dense, in_axes=(0, None, None))(
    x, params['kernel'], params['bias']
  )
  np.testing.assert_allclose(batched, mapped, rtol=1e-6, atol=1e-6)
  # The module also accepts one example with no batch axis.
  np.testing.assert_allclose(
    layer.apply({'params': params}, x[0]), batched[0], rtol=1e-6, atol=1e-6
  )


def test_vmap_over_module_apply(key):
  x = jax.random.normal(key, (3, 2, 6, 3))
  layer = fd.PerPositionDense(4, activation='tanh')
  variables = layer.init(key, x[0])
  mapped = jax.vmap(layer.apply, in_axes=(None, 0))(variables, x)
  np.testing.assert_allclose(
    mapped, layer.apply(variables, x), rtol=1e-6, atol=1e-6
  )


def test_gradients_match_finite_differences(key):
  x = jax.random.normal(key, (2, 3, 4), jnp.float32)
  layer = fd.PerPositionDense(2, activation='tanh')
  params = layer.init(key, x)['params']

  def loss(params, x):
    return jnp.sum(layer.apply({'params': params}, x) ** 2)

  with jax.enable_x64():
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    check_grads(
      loss, (params64, x.astype(jnp.float64)), order=2, modes=['rev', 'fwd']
    )


def test_dtype_and_param_dtype(key):
  x = jax.random.normal(key, (2, 3, 4))
  layer = fd.PerPositionDense(5, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  variables = layer.init(key, x)
  assert variables['params']['kernel'].dtype == jnp.bfloat16
  y = layer.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  expected = reference(
    x, variables['params']['kernel'].astype(jnp.float32), None
  )
  np.testing.assert_allclose(
    y.astype(np.float32), expected, atol=0.05, rtol=0.05
  )


def test_compiles_inside_user_model(key):
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = fd.PerPositionDense(8, activation='relu')(x)
      return fd.PerPositionDense(3, activation='softmax')(x)

  x = jax.random.normal(key, (4, 5, 6))
  variables = Model().init(key, x)
  assert jax.tree.map(jnp.shape, variables['params']) == {
    'PerPositionDense_0': {'bias': (5, 8), 'kernel': (5, 6, 8)},
    'PerPositionDense_1': {'bias': (5, 3), 'kernel': (5, 8, 3)},
  }
  assert jax.jit(Model().apply)(variables, x).shape == (4, 5, 3)


@settings(max_examples=15, deadline=None)
@given(
  batch=st.lists(st.integers(1, 3), max_size=2),
  positions=st.integers(1, 6),
  in_features=st.integers(1, 6),
  features=st.integers(1, 6),
)
def test_property_shapes_and_values(batch, positions, in_features, features):
  x = (
    np.random.default_rng(0)
    .normal(size=(*batch, positions, in_features))
    .astype(np.float32)
  )
  layer = fd.PerPositionDense(features)
  variables = layer.init(jax.random.key(1), x)
  y = layer.apply(variables, x)
  assert y.shape == (*batch, positions, features)
  np.testing.assert_allclose(
    y,
    reference(x, variables['params']['kernel'], variables['params']['bias']),
    rtol=1e-5,
    atol=1e-5,
  )


# --- errors -----------------------------------------------------------------


def test_unknown_activation_lists_known_names(key):
  layer = fd.PerPositionDense(3, activation='softmaxx')
  with pytest.raises(
    ValueError,
    match=r"PerPositionDense: unknown activation 'softmaxx'.*softmax.*tanh",
  ):
    layer.init(key, jnp.ones((2, 3, 4)))


def test_activation_of_wrong_type(key):
  with pytest.raises(
    TypeError,
    match='activation must be None, a callable or a Keras name, got 3',
  ):
    fd.PerPositionDense(3, activation=3).init(key, jnp.ones((2, 3, 4)))


@pytest.mark.parametrize('shape', [(), (5,)])
def test_rank_below_two(shape, key):
  with pytest.raises(
    ValueError, match=rf'rank >= 2, got shape {re.escape(str(shape))}'
  ):
    fd.PerPositionDense(3).init(key, jnp.ones(shape))


@pytest.mark.parametrize(
  'features,error',
  [(0, ValueError), (-2, ValueError), (2.5, TypeError), ('3', TypeError)],
)
def test_bad_features(features, error, key):
  with pytest.raises(error, match='features must be a positive integer'):
    fd.PerPositionDense(features).init(key, jnp.ones((2, 3, 4)))


@pytest.mark.parametrize(
  'shape,axis', [((2, 0, 4), '0 positions'), ((2, 3, 0), '0 features')]
)
def test_zero_positions_or_features(shape, axis, key):
  with pytest.raises(ValueError, match=f'PerPositionDense: .*{axis}'):
    fd.PerPositionDense(3).init(key, jnp.ones(shape))


@pytest.mark.parametrize(
  'init,error,match',
  [
    (None, TypeError, r'kernel_init must be an initializer.*None'),
    ('glorot_uniform', TypeError, r"kernel_init .*'glorot_uniform' of type"),
    (
      lambda key, shape, dtype: jnp.ones((2,), dtype),
      ValueError,
      r'the initializer of kernel must return shape \(3, 4, 5\), got shape \(2,\)',
    ),
  ],
)
def test_bad_initializer(init, error, match, key):
  with pytest.raises(error, match=f'PerPositionDense: {match}'):
    fd.PerPositionDense(5, kernel_init=init).init(key, jnp.ones((2, 3, 4)))
  with pytest.raises(error, match=f'PerPositionDense: {match}'):
    fd.nnx.PerPositionDense(3, 4, 5, kernel_init=init, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('shape', [(2, 6, 4), (2, 5, 7)])
def test_inputs_not_matching_kernel(shape, key):
  layer = fd.PerPositionDense(3)
  variables = layer.init(key, jnp.ones((2, 5, 4)))
  with pytest.raises(
    ValueError,
    match=r'PerPositionDense: inputs of shape .* have .* positions .* kernel'
    r' was built with shape \(5, 4, 3\)',
  ):
    layer.apply(variables, jnp.ones(shape))
