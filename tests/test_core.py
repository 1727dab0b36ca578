"""Activation, Reshape, Permute, Flatten, RepeatVector, Lambda vs Keras 3."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense import functional

keras = pytest.importorskip('keras')


def keras_call(layer, x):
  """Calls a Keras layer, whose code relies on implicit rank promotion."""
  with jax.numpy_rank_promotion('allow'):
    return np.asarray(layer(x))


def random(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype('float32')


@pytest.mark.parametrize(
  'name', ['relu', 'softmax', 'tanh', 'gelu', 'leaky_relu', 'hard_sigmoid']
)
def test_activation_matches_keras(name):
  x = random((2, 3, 4))
  np.testing.assert_allclose(
    fd.Activation(name).apply({}, x),
    keras_call(keras.layers.Activation(name), x),
    rtol=1e-6,
    atol=1e-6,
  )


def test_activation_takes_a_callable_or_none():
  x = random((2, 3))
  np.testing.assert_array_equal(
    fd.Activation(jnp.square).apply({}, x), np.square(x)
  )
  np.testing.assert_array_equal(fd.Activation(None).apply({}, x), x)


@pytest.mark.parametrize(
  'shape,target_shape',
  [
    ((2, 12), (3, 4)),
    ((2, 12), (-1, 6)),
    ((3, 2, 3, 4), (4, -1)),
    ((2, 6), (2, 1, -1)),
    ((2, 3, 4), (12,)),
  ],
)
def test_reshape_matches_keras(shape, target_shape):
  x = random(shape)
  expected = keras_call(keras.layers.Reshape(target_shape), x)
  np.testing.assert_array_equal(fd.Reshape(target_shape).apply({}, x), expected)
  one = functional.reshape(x[0], expected.shape[1:])
  np.testing.assert_array_equal(one, expected[0])


@pytest.mark.parametrize(
  'shape,dims',
  [((2, 3, 4), (2, 1)), ((2, 3, 4, 5), (3, 1, 2)), ((2, 3), (1,))],
)
def test_permute_matches_keras(shape, dims):
  x = random(shape)
  np.testing.assert_array_equal(
    fd.Permute(dims).apply({}, x), keras_call(keras.layers.Permute(dims), x)
  )


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
@pytest.mark.parametrize('shape', [(3,), (2, 5), (2, 3, 4), (2, 3, 4, 5)])
def test_flatten_matches_keras(shape, data_format):
  x = random(shape)
  np.testing.assert_array_equal(
    fd.Flatten(data_format).apply({}, x),
    keras_call(keras.layers.Flatten(data_format=data_format), x),
  )


def test_flatten_channels_first_moves_channels_last():
  x = random((2, 3, 4, 5))  # (B, C, H, W)
  np.testing.assert_array_equal(
    fd.Flatten('channels_first').apply({}, x),
    np.transpose(x, (0, 2, 3, 1)).reshape(2, -1),
  )


@pytest.mark.parametrize('shape,n', [((2, 3), 4), ((5, 1), 1), ((1, 6), 3)])
def test_repeat_vector_matches_keras(shape, n):
  x = random(shape)
  np.testing.assert_array_equal(
    fd.RepeatVector(n).apply({}, x),
    keras_call(keras.layers.RepeatVector(n), x),
  )


def test_lambda_matches_keras_and_passes_arguments():
  x = random((2, 3, 4))
  function = lambda x: jnp.cumsum(x, axis=1) * 2.0  # noqa: E731
  np.testing.assert_allclose(
    fd.Lambda(function).apply({}, x),
    keras_call(keras.layers.Lambda(function), x),
    rtol=1e-6,
  )
  pair = fd.Lambda(lambda a, b, scale: (a + b) * scale).apply({}, x, x, scale=3)
  np.testing.assert_allclose(pair, 6 * x, rtol=1e-6)


class Model(nn.Module):
  """A model made of every layer of this family, Keras-style."""

  @nn.compact
  def __call__(self, x):  # (B, 4, 6)
    x = fd.Permute((2, 1))(x)  # (B, 6, 4)
    x = fd.Reshape((3, -1))(x)  # (B, 3, 8)
    x = fd.Lambda(lambda x: x[:, :, :5])(x)  # (B, 3, 5)
    x = fd.Activation('tanh')(x)
    x = fd.PerPositionDense(2)(x)  # (B, 3, 2)
    x = fd.Flatten()(x)  # (B, 6)
    return fd.RepeatVector(4)(x)  # (B, 4, 6)


def test_summary_shows_every_layer_shape_like_keras():
  info = fd.summary(Model(), jax.ShapeDtypeStruct((7, 4, 6), jnp.float32))
  shapes = {row.type: row.output_shape for row in info.rows}
  keras_model = keras.Sequential(
    [
      keras.Input((4, 6)),
      keras.layers.Permute((2, 1)),
      keras.layers.Reshape((3, -1)),
      keras.layers.Lambda(lambda x: x[:, :, :5]),
      keras.layers.Activation('tanh'),
      keras.layers.EinsumDense('abc,bcd->abd', (3, 2), bias_axes='bd'),
      keras.layers.Flatten(),
      keras.layers.RepeatVector(4),
    ]
  )
  ours = [
    shapes[name][1:]
    for name in [
      'Permute',
      'Reshape',
      'Lambda',
      'Activation',
      'PerPositionDense',
      'Flatten',
      'RepeatVector',
    ]
  ]
  assert ours == [tuple(layer.output.shape[1:]) for layer in keras_model.layers]
  assert shapes['Model'] == (7, 4, 6)
  assert info.total_params == keras_model.count_params() == 3 * 5 * 2 + 3 * 2
  assert 'Lambda_0 (Lambda)' in str(info)


def test_jit_vmap_and_grad_compose(key):
  x = random((2, 4, 6))
  model = Model()
  variables = model.init(key, x)
  np.testing.assert_allclose(
    jax.jit(model.apply)(variables, x), model.apply(variables, x), rtol=1e-6
  )
  # Each example alone (batch of one) under vmap gives the batched result.
  mapped = jax.vmap(lambda e: model.apply(variables, e[None])[0])(x)
  np.testing.assert_allclose(mapped, model.apply(variables, x), rtol=1e-6)
  check_grads(
    jax.jit(lambda x: model.apply(variables, x)), (x,), order=1, modes=['rev']
  )
  for layer, function in [
    (
      fd.Flatten('channels_first'),
      lambda e: functional.flatten(e, 'channels_first'),
    ),
    (fd.Permute((2, 1)), lambda e: functional.permute(e, (2, 1))),
    (fd.Reshape((6, -1)), lambda e: functional.reshape(e, (6, 4))),
  ]:
    np.testing.assert_array_equal(jax.vmap(function)(x), layer.apply({}, x))
  np.testing.assert_array_equal(
    jax.vmap(functional.repeat_vector, in_axes=(0, None))(x[:, 0], 3),
    fd.RepeatVector(3).apply({}, x[:, 0]),
  )


@pytest.mark.parametrize(
  'layer,x,match',
  [
    (fd.Reshape((-1, -1)), (2, 12), r'target_shape \(-1, -1\) has more than'),
    (
      fd.Reshape((5, -1)),
      (2, 12),
      r'examples of shape \(12,\) \(12 elements\) into target_shape \(5, -1\)'
      r' \(a multiple of 5 elements\)',
    ),
    (fd.Reshape((5, 3)), (2, 12), r'into target_shape \(5, 3\) \(15 elem'),
    (fd.Reshape((0, -1)), (2, 12), r'a multiple of 0 elements'),
    (fd.Reshape((-2, 6)), (2, 12), r'non-negative integers and at most one'),
    (fd.Reshape((1,)), (), r'Reshape: inputs must have shape \(batch'),
    (fd.Permute((1, 3)), (2, 3, 4), r'permutation of 1..2 .*got \(1, 3\)'),
    (fd.Permute((0, 1)), (2, 3, 4), r'permutation of 1..2'),
    (
      fd.Permute((2, 1)),
      (2, 3),
      r'Permute: inputs must be \(batch, 2 axes permuted by dims=\(2, 1\)\)'
      r' \(rank 3\), got shape \(2, 3\)',
    ),
    (
      fd.Flatten('NHWC'),
      (2, 3),
      r"Flatten: data_format must be one of .*'NHWC'",
    ),
    (fd.Flatten(), (), r'Flatten: inputs must have shape \(batch'),
    (fd.RepeatVector(0), (2, 3), r'RepeatVector: n must be a positive .* 0'),
    (
      fd.RepeatVector(2),
      (2, 3, 4),
      r'RepeatVector: inputs must be \(batch, features\) \(rank 2\), got'
      r' shape \(2, 3, 4\)',
    ),
    (fd.Activation('swishy'), (2,), r"Activation: unknown activation 'swishy'"),
  ],
)
def test_errors_name_the_layer_argument_and_values(layer, x, match):
  with pytest.raises(ValueError, match=match):
    layer.apply({}, jnp.ones(x))


@pytest.mark.parametrize(
  'layer,x,match',
  [
    (fd.Reshape((2.0, 6)), (2, 12), r'Reshape: target_shape must be a tuple'),
    (
      fd.Reshape(12),
      (2, 12),
      r'target_shape must be a tuple .* 12 of type int',
    ),
    (fd.Permute(2), (2, 3), r'Permute: dims must be a tuple of integers'),
    (fd.Permute(('1', '2')), (2, 3, 4), r'Permute: dims must be a tuple'),
    (fd.Flatten(None), (2, 3), r'Flatten: data_format must be one of'),
    (fd.RepeatVector(True), (2, 3), r'RepeatVector: n must be .*True of type'),
    (fd.RepeatVector(2.0), (2, 3), r'RepeatVector: n must be .*2.0 of type'),
    (fd.RepeatVector('3'), (2, 3), r"RepeatVector: n must be .*'3' of type"),
    (fd.Lambda(3), (2,), r'Lambda: function must be a callable, got 3'),
  ],
)
def test_wrong_types_are_type_errors(layer, x, match):
  with pytest.raises(TypeError, match=match):
    layer.apply({}, jnp.ones(x))


def test_numpy_integers_are_integers():
  x = jnp.ones((2, 3, 4))
  np.testing.assert_array_equal(
    fd.Permute((np.int64(2), np.int32(1))).apply({}, x),
    jnp.swapaxes(x, 1, 2),
  )
  assert fd.RepeatVector(np.int64(3)).apply({}, x[:, 0]).shape == (2, 3, 4)
  assert fd.Reshape((np.int16(4), -1)).apply({}, x).shape == (2, 4, 3)


@pytest.mark.parametrize(
  'call,error,match',
  [
    (lambda x: functional.permute(x, (0, 1)), ValueError, r'permute: dims'),
    (lambda x: functional.permute(x, (1,)), ValueError, r'permute: inputs'),
    (lambda x: functional.permute(x, 1), TypeError, r'permute: dims must be'),
    (lambda x: functional.reshape(x, (5, -1)), ValueError, r'reshape: cannot'),
    (lambda x: functional.reshape(x, 6), TypeError, r'reshape: target_shape'),
    (lambda x: functional.flatten(x, 'NCHW'), ValueError, r'flatten: data_f'),
    (lambda x: functional.repeat_vector(x[0], 0), ValueError, r'repeat_vec'),
    (lambda x: functional.repeat_vector(x[0], 2.0), TypeError, r'repeat_vec'),
    (lambda x: functional.repeat_vector(x, 2), ValueError, r'repeat_vector:'),
  ],
)
def test_pure_functions_check_their_arguments(call, error, match):
  with pytest.raises(error, match=match):
    call(jnp.ones((2, 3)))
  # The same check under jit: the arguments are static.
  with pytest.raises(error, match=match):
    jax.jit(call)(jnp.ones((2, 3)))
