"""LocallyConnected1D against a NumPy loop, tf.keras outputs, and itself."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense.functional import locally_connected_1d

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
BENCHMARK = (
  pathlib.Path(__file__).parents[1] / 'benchmarks' / 'locally_connected.py'
)

NUMPY_ACTIVATIONS = {
  None: lambda y: y,
  'tanh': np.tanh,
  'softmax': lambda y: (
    np.exp(y - y.max(-1, keepdims=True))
    / np.exp(y - y.max(-1, keepdims=True)).sum(-1, keepdims=True)
  ),
}


def reference(
  x, kernel, bias, kernel_size, strides, data_format, activation=None
):
  """Keras 2's implementation=1, one output step at a time, in float64.

  A window is the input slice of ``kernel_size`` steps flattened in memory
  order, as Keras's ``local_conv`` reshapes it; for channels_first Keras's
  ``bias_add`` reshapes the (L_out, F) bias to (F, L_out).
  """
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  length, _, filters = kernel.shape
  out = np.zeros(x.shape[:-2] + (length, filters))
  for o in range(length):
    start = o * strides
    if data_format == 'channels_last':
      window = x[..., start : start + kernel_size, :]
    else:
      window = x[..., :, start : start + kernel_size]
    window = window.reshape(*x.shape[:-2], -1)
    out[..., o, :] = window @ kernel[o]
  if data_format == 'channels_first':
    out = np.swapaxes(out, -1, -2)
  if bias is not None:
    bias = np.asarray(bias, np.float64)
    if data_format == 'channels_first':
      bias = bias.reshape(filters, length)
    out = out + bias
  return NUMPY_ACTIVATIONS[activation](out)


def inputs_for(shape, data_format, key):
  """Inputs ``(batch, L, D)`` in the layout of ``data_format``."""
  x = jax.random.normal(key, shape)
  return x if data_format == 'channels_last' else jnp.swapaxes(x, -1, -2)


def random_params(layer, x, key):
  """The layer's params with every weight random (the bias is zero-init)."""
  params = layer.init(key, x)['params']
  keys = jax.random.split(key, len(params))
  return {
    name: jax.random.normal(k, value.shape)
    for k, (name, value) in zip(keys, sorted(params.items()), strict=True)
  }


# (batch, steps, features), filters, kernel_size, strides
CASES = [
  ((2, 7, 3), 4, 3, 2),
  ((3, 5, 2), 3, 1, 1),
  ((1, 6, 4), 2, 6, 1),
  ((2, 9, 1), 5, 2, 3),
  ((2, 8, 3), 2, 3, 1),
]


@pytest.mark.parametrize(
  'use_bias,activation', [(True, None), (False, 'tanh'), (True, 'softmax')]
)
@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
@pytest.mark.parametrize('shape,filters,kernel_size,strides', CASES)
def test_matches_numpy_loop(
  shape, filters, kernel_size, strides, data_format, use_bias, activation, key
):
  x = inputs_for(shape, data_format, key)
  layer = fd.LocallyConnected1D(
    filters,
    kernel_size,
    strides=strides,
    data_format=data_format,
    use_bias=use_bias,
    activation=activation,
  )
  params = random_params(layer, x, jax.random.key(1))
  length = (shape[1] - kernel_size) // strides + 1
  assert params['kernel'].shape == (length, kernel_size * shape[2], filters)
  assert set(params) == ({'kernel', 'bias'} if use_bias else {'kernel'})
  y = layer.apply({'params': params}, x)
  expected = reference(
    x,
    params['kernel'],
    params.get('bias'),
    kernel_size,
    strides,
    data_format,
    activation,
  )
  assert y.shape == expected.shape
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
def test_nnx_equals_linen_with_the_same_weights(data_format, key):
  x = inputs_for((3, 9, 4), data_format, key)
  linen = fd.LocallyConnected1D(
    5, 3, strides=2, data_format=data_format, activation='tanh'
  )
  params = random_params(linen, x, key)
  layer = fd.nnx.LocallyConnected1D(
    9,
    4,
    5,
    3,
    strides=2,
    data_format=data_format,
    activation='tanh',
    rngs=nnx.Rngs(0),
  )
  assert layer.kernel[...].shape == params['kernel'].shape
  assert layer.bias[...].shape == params['bias'].shape
  layer.kernel[...] = params['kernel']
  layer.bias[...] = params['bias']
  np.testing.assert_allclose(
    layer(x), linen.apply({'params': params}, x), rtol=1e-6, atol=1e-6
  )


def test_tf_keras_fixture_outputs_from_its_weights():
  # Implementation-1 weights need no conversion: straight from get_weights().
  for name, (filters, kernel_size, strides, data_format, activation) in {
    'locally_connected_k1': (3, 1, 1, 'channels_last', 'softmax'),
    'locally_connected_k3s2': (3, 3, 2, 'channels_last', 'tanh'),
    'locally_connected_k3s2_channels_first': (3, 3, 2, 'channels_first', None),
  }.items():
    fixture = np.load(FIXTURES / f'{name}.npz')
    x = fixture['inputs']
    params = {
      'kernel': fixture['weights/impl1/0'],
      'bias': fixture['weights/impl1/1'],
    }
    layer = fd.LocallyConnected1D(
      filters,
      kernel_size,
      strides=strides,
      data_format=data_format,
      activation=activation,
    )
    want = fixture['outputs/impl1']
    np.testing.assert_allclose(
      layer.apply({'params': params}, x), want, rtol=1e-5, atol=1e-6
    )
    steps, features = x.shape[1:][
      :: 1 if data_format == 'channels_last' else -1
    ]
    twin = fd.nnx.LocallyConnected1D(
      steps,
      features,
      filters,
      kernel_size,
      strides=strides,
      data_format=data_format,
      activation=activation,
      rngs=nnx.Rngs(0),
    )
    twin.kernel[...] = params['kernel']
    twin.bias[...] = params['bias']
    np.testing.assert_allclose(twin(x), want, rtol=1e-5, atol=1e-6)


def test_channels_first_bias_is_read_as_keras_reshapes_it(key):
  # Keras 2 adds bias.reshape(filters, L_out), not its transpose; with
  # filters != L_out (both > 1) the two differ, and the fixture says which.
  fixture = np.load(FIXTURES / 'locally_connected_k3s2_channels_first.npz')
  kernel, bias = fixture['weights/impl1/0'], fixture['weights/impl1/1']
  x = fixture['inputs']
  without_bias = locally_connected_1d(x[0], kernel, None, 2, 'channels_first')
  want = fixture['outputs/impl1'][0]
  np.testing.assert_allclose(
    without_bias + bias.reshape(3, 4), want, rtol=1e-5, atol=1e-6
  )
  assert not np.allclose(without_bias + bias.T, want, atol=1e-3)


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
def test_kernel_size_1_equals_per_position_dense(data_format, key):
  x = jax.random.normal(key, (4, 6, 5))
  dense = fd.PerPositionDense(3, activation='tanh')
  params = random_params(dense, x, key)
  layer = fd.LocallyConnected1D(
    3, 1, data_format=data_format, activation='tanh'
  )
  want = dense.apply({'params': params}, x)
  if data_format == 'channels_last':
    got = layer.apply({'params': params}, x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
      locally_connected_1d(x[0], params['kernel'], params['bias']),
      fd.functional.per_position_dense(x[0], params['kernel'], params['bias']),
      rtol=1e-6,
      atol=1e-6,
    )
  else:  # the same layer on transposed inputs, its bias read as Keras does
    params['bias'] = params['bias'].T.reshape(params['bias'].shape)
    got = layer.apply({'params': params}, jnp.swapaxes(x, -1, -2))
    np.testing.assert_allclose(
      got, jnp.swapaxes(want, -1, -2), rtol=1e-6, atol=1e-6
    )


def test_default_init_is_keras_glorot_uniform_with_its_fans(key):
  steps, in_features, filters, kernel_size = 66, 20, 30, 3
  length = steps - kernel_size + 1
  x = jnp.ones((1, steps, in_features))
  params = fd.LocallyConnected1D(filters, kernel_size).init(key, x)['params']
  twin = fd.nnx.LocallyConnected1D(
    steps, in_features, filters, kernel_size, rngs=nnx.Rngs(0)
  )
  # tf.keras's _compute_fans of a 3-D kernel multiply both fans by the
  # leading axis: fan_in = L_out * k * D, fan_out = L_out * filters.
  limit = np.sqrt(6 / (length * kernel_size * in_features + length * filters))
  for kernel in (params['kernel'], twin.kernel[...]):
    assert kernel.shape == (length, kernel_size * in_features, filters)
    assert float(jnp.abs(kernel).max()) <= limit
    assert float(jnp.abs(kernel).max()) > 0.95 * limit
    np.testing.assert_allclose(
      float(kernel.std()), limit / np.sqrt(3), rtol=0.02
    )
  np.testing.assert_array_equal(params['bias'], np.zeros((length, filters)))
  np.testing.assert_array_equal(twin.bias[...], np.zeros((length, filters)))


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
def test_batched_layer_is_vmap_of_the_core(data_format, key):
  x = inputs_for((5, 8, 3), data_format, key)
  layer = fd.LocallyConnected1D(4, 3, strides=2, data_format=data_format)
  params = random_params(layer, x, key)
  batched = layer.apply({'params': params}, x)
  mapped = jax.vmap(locally_connected_1d, in_axes=(0, None, None, None, None))(
    x, params['kernel'], params['bias'], 2, data_format
  )
  np.testing.assert_allclose(batched, mapped, rtol=1e-6, atol=1e-6)
  # One example without a batch axis, and two leading batch axes.
  np.testing.assert_allclose(
    layer.apply({'params': params}, x[0]), batched[0], rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(
    layer.apply({'params': params}, x.reshape(5, 1, *x.shape[1:])),
    batched.reshape(5, 1, *batched.shape[1:]),
    rtol=1e-6,
    atol=1e-6,
  )


def test_jit_and_vmap_over_apply(key):
  x = jax.random.normal(key, (3, 2, 7, 3))
  layer = fd.LocallyConnected1D(2, 2, strides=2, activation='softmax')
  variables = {'params': random_params(layer, x[0], key)}
  want = layer.apply(variables, x)
  np.testing.assert_allclose(
    jax.jit(layer.apply)(variables, x), want, rtol=1e-6, atol=1e-6
  )
  mapped = jax.vmap(layer.apply, in_axes=(None, 0))(variables, x)
  np.testing.assert_allclose(mapped, want, rtol=1e-6, atol=1e-6)
  twin = fd.nnx.LocallyConnected1D(7, 3, 2, 2, strides=2, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(
    nnx.jit(lambda m, x: m(x))(twin, x), twin(x), rtol=1e-6, atol=1e-6
  )


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
def test_gradients_match_finite_differences(data_format, key):
  x = inputs_for((2, 5, 2), data_format, key)
  layer = fd.LocallyConnected1D(
    2, 2, strides=2, data_format=data_format, activation='tanh'
  )
  params = random_params(layer, x, key)

  def loss(params, x):
    return jnp.sum(layer.apply({'params': params}, x) ** 2)

  with jax.enable_x64():
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    check_grads(
      loss, (params64, x.astype(jnp.float64)), order=2, modes=['rev', 'fwd']
    )


def test_dtype_and_param_dtype(key):
  x = jax.random.normal(key, (2, 7, 4))
  layer = fd.LocallyConnected1D(
    3, 3, strides=2, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16
  )
  variables = layer.init(key, x)
  assert variables['params']['kernel'].dtype == jnp.bfloat16
  y = layer.apply(variables, x)
  assert y.dtype == jnp.bfloat16
  expected = reference(
    x,
    variables['params']['kernel'].astype(jnp.float32),
    None,
    3,
    2,
    'channels_last',
  )
  np.testing.assert_allclose(
    y.astype(np.float32), expected, atol=0.05, rtol=0.05
  )


def test_sizes_as_tuples_of_one_like_keras(key):
  x = jax.random.normal(key, (2, 7, 3))
  as_ints = fd.LocallyConnected1D(2, 3, strides=2)
  as_tuples = fd.LocallyConnected1D(2, (3,), strides=[2], padding='VALID')
  params = random_params(as_ints, x, key)
  np.testing.assert_array_equal(
    as_tuples.apply({'params': params}, x), as_ints.apply({'params': params}, x)
  )


# --- errors: the same message from both front ends -------------------------


def first_line(error):
  """Our message, without the note JAX appends below it inside a trace."""
  return str(error.value).splitlines()[0]


def linen_error(x, filters, kernel_size, **options):
  layer = fd.LocallyConnected1D(filters, kernel_size, **options)
  layer.init(jax.random.key(0), x)


def nnx_error(x, filters, kernel_size, **options):
  data_format = options.get('data_format', 'channels_last')
  steps, features = x.shape[-2:]
  if data_format == 'channels_first':
    steps, features = features, steps
  fd.nnx.LocallyConnected1D(
    steps, features, filters, kernel_size, rngs=nnx.Rngs(0), **options
  )


@pytest.mark.parametrize(
  'filters,kernel_size,options,message',
  [
    (
      0,
      3,
      {},
      r'LocallyConnected1D: filters must be a positive integer, got 0',
    ),
    (2, 0, {}, r'kernel_size must be a positive integer, got 0'),
    (2, (3, 3), {}, r'kernel_size must be .*, got \(3, 3\)'),
    (2, 3, {'strides': 0}, r'strides must be a positive integer, got 0'),
    (2, 3, {'padding': 'same'}, r"padding must be 'valid'.*got 'same'"),
    (2, 3, {'padding': 'causal'}, r"padding must be 'valid'.*got 'causal'"),
    (2, 3, {'data_format': 'NWC'}, r'data_format must be one of .*NWC'),
    (2, 3, {'activation': 'softmaxx'}, r"unknown activation 'softmaxx'"),
    (
      2,
      9,
      {},
      r'8 input steps are fewer than kernel_size=9, so no window fits',
    ),
    (
      2,
      5,
      {'data_format': 'channels_first'},
      r'4 input steps are fewer than kernel_size=5.*'
      r'\(\.\.\., features, steps\)',
    ),
  ],
)
def test_option_errors_read_the_same_from_both_front_ends(
  filters, kernel_size, options, message
):
  x = jnp.ones((1, 8, 4))
  messages = []
  for make in (linen_error, nnx_error):
    with pytest.raises(ValueError, match=message) as error:
      make(x, filters, kernel_size, **options)
    messages.append(first_line(error))
  assert messages[0] == messages[1]


@pytest.mark.parametrize(
  'kernel_size,options,message',
  [
    ('3', {}, r"kernel_size must be .*, got '3' of type str"),
    (3, {'strides': 2.0}, r'strides must be .*, got 2.0 of type float'),
    (3, {'use_bias': 'yes'}, r"use_bias must be True or False.*got 'yes'"),
  ],
)
def test_option_types_read_the_same_from_both_front_ends(
  kernel_size, options, message
):
  x = jnp.ones((1, 8, 4))
  messages = []
  for make in (linen_error, nnx_error):
    with pytest.raises(TypeError, match=message) as error:
      make(x, 2, kernel_size, **options)
    messages.append(first_line(error))
  assert messages[0] == messages[1]


def test_inputs_of_another_shape_than_built(key):
  x = jnp.ones((2, 9, 4))
  layer = fd.LocallyConnected1D(3, 3, strides=2)
  variables = layer.init(key, x)
  twin = fd.nnx.LocallyConnected1D(9, 4, 3, 3, strides=2, rngs=nnx.Rngs(0))
  for wrong, text in [
    (jnp.ones((2, 11, 4)), '11 steps of 4 features'),
    (jnp.ones((2, 9, 5)), '9 steps of 5 features'),
  ]:
    messages = []
    for call in (lambda x: layer.apply(variables, x), twin):
      with pytest.raises(
        ValueError,
        match=rf'LocallyConnected1D: inputs of shape .* have {text} and need'
        r' a kernel of shape .* but the kernel was built with shape'
        r' \(4, 12, 3\)',
      ) as error:
        call(wrong)
      messages.append(first_line(error))
    assert messages[0] == messages[1]
  for call in (lambda x: layer.apply(variables, x), twin):
    with pytest.raises(ValueError, match=r'rank >= 2, got shape \(4,\)'):
      call(jnp.ones((4,)))


def test_nnx_constructor_errors():
  with pytest.raises(ValueError, match='input_length must be a positive'):
    fd.nnx.LocallyConnected1D(0, 4, 3, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='in_features must be a positive'):
    fd.nnx.LocallyConnected1D(9, -1, 3, 3, rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match=r'rngs must be an nnx.Rngs'):
    fd.nnx.LocallyConnected1D(9, 4, 3, 3, rngs=0)
  with pytest.raises(
    ValueError, match=r'initializer of kernel must return shape \(7, 12, 3\)'
  ):
    fd.nnx.LocallyConnected1D(
      9,
      4,
      3,
      3,
      kernel_init=lambda key, shape, dtype: jnp.zeros((2, 2)),
      rngs=nnx.Rngs(0),
    )


def test_quick_benchmark_checks_peers_and_writes_json(tmp_path):
  # No timing is asserted: the machine running the tests may be busy.
  spec = importlib.util.spec_from_file_location('benchmark', BENCHMARK)
  benchmark = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(benchmark)
  results = benchmark.main(
    ['--quick', '--repeats', '1', '--out', str(tmp_path)]
  )
  with open(tmp_path / 'locally_connected.json') as f:
    assert json.load(f)['sizes'] == results['sizes']
  assert len(results['sizes']) == 2
  for entry in results['sizes']:
    assert set(entry['implementations']) == {
      'fd.LocallyConnected1D',
      'vmap(locally_connected_1d)',
      'windows -> PerPositionDense path',
      'flax nn.ConvLocal',
    }
    for record in entry['implementations'].values():
      assert record['output_relative_error'] < 1e-5
      assert record['gradient_relative_error'] < 1e-5
      assert record['forward_median_s'] > 0 and record['step_median_s'] > 0
