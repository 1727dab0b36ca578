"""Parity with Keras 3 itself (JAX backend) on the same weights and inputs."""

import jax
import numpy as np
import pytest

import flax_dense as fd

keras = pytest.importorskip('keras')


def run_keras(layer, method, *args):
  """Calls Keras, whose own code relies on implicit rank promotion."""
  with jax.numpy_rank_promotion('allow'):
    return np.asarray(getattr(layer, method)(*args))


@pytest.mark.parametrize('activation', [None, 'softmax', 'tanh', 'relu'])
@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('shape,features', [((3, 5, 4), 2), ((2, 16, 8), 10)])
def test_per_position_dense_matches_einsum_dense(
  activation, use_bias, shape, features, key
):
  x = np.asarray(jax.random.normal(key, shape))
  keras_layer = keras.layers.EinsumDense(
    'abc,bcd->abd',
    output_shape=(shape[1], features),
    bias_axes='bd' if use_bias else None,
    activation=activation,
  )
  keras_layer.build(shape)
  rng = np.random.default_rng(0)
  weights = [
    rng.normal(size=w.shape).astype('float32')
    for w in keras_layer.get_weights()
  ]
  keras_layer.set_weights(weights)
  params = {'kernel': weights[0]}
  if use_bias:
    params['bias'] = weights[1]
  layer = fd.PerPositionDense(
    features, use_bias=use_bias, activation=activation
  )
  assert jax.tree.map(np.shape, layer.init(key, x)['params']) == jax.tree.map(
    np.shape, params
  )
  np.testing.assert_allclose(
    layer.apply({'params': params}, x),
    run_keras(keras_layer, '__call__', x),
    rtol=1e-5,
    atol=1e-5,
  )


@pytest.mark.parametrize('mask_value', [0.0, -1.0])
@pytest.mark.parametrize('shape', [(2, 6, 3), (4, 5, 1), (2, 3, 4, 2)])
def test_masking_matches_keras(mask_value, shape):
  rng = np.random.default_rng(1)
  x = rng.integers(-1, 2, size=shape).astype('float32')
  x[0, 1] = mask_value  # at least one fully masked timestep
  keras_layer = keras.layers.Masking(mask_value=mask_value)
  np.testing.assert_array_equal(
    fd.Masking(mask_value).apply({}, x), run_keras(keras_layer, '__call__', x)
  )
  np.testing.assert_array_equal(
    fd.compute_mask(x, mask_value), run_keras(keras_layer, 'compute_mask', x)
  )
