"""TimeDistributed: any layer on every step, against a loop and Keras 3."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd

BATCH, STEPS, POSITIONS, FEATURES, UNITS = 2, 3, 5, 4, 3
X = np.random.default_rng(0).normal(size=(BATCH, STEPS, POSITIONS, FEATURES))
X = X.astype(np.float32)


def _per_step_loop(run_inner, x):
  """The reference: the inner layer on each step in turn, stacked."""
  return np.stack([run_inner(x[:, t]) for t in range(x.shape[1])], axis=1)


def test_linen_equals_the_inner_layer_on_each_step():
  inner = fd.PerPositionDense(UNITS, activation='tanh')
  layer = fd.TimeDistributed(inner)
  variables = layer.init(jax.random.key(0), X)
  assert jax.tree.map(jnp.shape, variables['params']) == {
    'layer': {
      'bias': (POSITIONS, UNITS),
      'kernel': (POSITIONS, FEATURES, UNITS),
    }
  }
  inner_variables = {'params': variables['params']['layer']}
  expected = _per_step_loop(lambda x: inner.apply(inner_variables, x), X)
  np.testing.assert_allclose(layer.apply(variables, X), expected, rtol=1e-6)
  # Under jit and grad, the gradient is the sum of the steps' gradients.
  grads = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, X) ** 2)))(
    variables
  )
  step_grads = [
    jax.grad(lambda v, t=t: jnp.sum(inner.apply(v, X[:, t]) ** 2))(
      inner_variables
    )
    for t in range(STEPS)
  ]
  expected_grads = jax.tree.map(lambda *g: sum(g), *step_grads)
  np.testing.assert_allclose(
    grads['params']['layer']['kernel'],
    expected_grads['params']['kernel'],
    rtol=1e-5,
  )


def test_nnx_equals_the_inner_layer_on_each_step():
  inner = fd.nnx.PerPositionDense(POSITIONS, FEATURES, UNITS, rngs=nnx.Rngs(0))
  layer = fd.nnx.TimeDistributed(inner)
  np.testing.assert_allclose(layer(X), _per_step_loop(inner, X), rtol=1e-6)
  assert layer.layer is inner  # one set of weights for every step


def test_several_outputs_are_each_unfolded():
  layer = fd.TimeDistributed(fd.GRU(UNITS, return_state=True))
  variables = layer.init(jax.random.key(0), X)
  outputs, state = layer.apply(variables, X)
  assert outputs.shape == state.shape == (BATCH, STEPS, UNITS)
  np.testing.assert_array_equal(outputs, state)  # the last h, twice


@pytest.mark.parametrize('api', ['linen', 'nnx'])
def test_dropout_draws_one_mask_per_example_and_step(api):
  # SpatialDropout1D drops whole channels of one (example, step): the kept
  # channels differ across steps and agree across positions.
  x = jnp.ones((BATCH, 8, POSITIONS, 16))
  if api == 'linen':
    layer = fd.TimeDistributed(fd.SpatialDropout1D(0.5))
    y = layer.apply(
      {}, x, deterministic=False, rngs={'dropout': jax.random.key(1)}
    )
    assert (layer.apply({}, x, deterministic=True) == x).all()
  else:
    layer = fd.nnx.TimeDistributed(
      fd.nnx.SpatialDropout1D(0.5, rngs=nnx.Rngs(dropout=1))
    )
    y = layer(x)
    layer.eval()
    assert layer.layer.deterministic
    assert (layer(x) == x).all()
  y = np.asarray(y)
  assert set(np.unique(y)) == {0.0, 2.0}
  # One key, the same draw on both front ends.
  key = jax.random.key(7)
  np.testing.assert_array_equal(
    fd.TimeDistributed(fd.SpatialDropout1D(0.5)).apply(
      {}, x, deterministic=False, rng=key
    ),
    fd.nnx.TimeDistributed(fd.nnx.SpatialDropout1D(0.5))(x, rngs=key),
  )
  assert (y == y[:, :, :1]).all()  # shared across positions
  assert len({y[0, t, 0].tobytes() for t in range(8)}) > 1


def _keras_time_distributed(make_inner):
  return lambda: keras.Sequential(
    [
      keras.Input((STEPS, POSITIONS, FEATURES)),
      keras.layers.TimeDistributed(make_inner(), name='steps'),
    ]
  )


#: Keras layers that do not take every leading axis as a batch axis: they
#: import inside fd.TimeDistributed.
WRAPPED = {
  'EinsumDense': lambda: keras.layers.EinsumDense(
    'abc,bcd->abd', output_shape=(POSITIONS, UNITS), bias_axes='bd'
  ),
  'Flatten': keras.layers.Flatten,
  'GlobalAveragePooling1D': keras.layers.GlobalAveragePooling1D,
  'Reshape': lambda: keras.layers.Reshape((FEATURES, POSITIONS)),
}


@pytest.mark.parametrize('inner', sorted(WRAPPED))
def test_keras_time_distributed_of_any_layer_imports_and_exports(
  inner, api, keras_model, keras_allowed
):
  model = keras_model(_keras_time_distributed(WRAPPED[inner]))
  with keras_allowed():
    expected = model.predict(X, verbose=0)
  if api == 'nnx':
    imported = fd.from_keras(model, api='nnx')
    np.testing.assert_allclose(imported(X), expected, rtol=1e-5, atol=1e-6)
    assert isinstance(imported.layers[0], fd.nnx.TimeDistributed)
    module, variables = fd.nnx.to_linen(imported)
  else:
    module, variables = fd.from_keras(model)
    np.testing.assert_allclose(
      module.apply(variables, X), expected, rtol=1e-5, atol=1e-6
    )
  (layer,) = module.layers
  assert isinstance(layer, fd.TimeDistributed)
  exported = fd.to_keras_model(
    module, variables, input_shape=(STEPS, POSITIONS, FEATURES)
  )
  (wrapper,) = exported.layers
  assert isinstance(wrapper, keras.layers.TimeDistributed)
  assert type(wrapper.layer).__name__ == inner
  with keras_allowed():
    again = exported.predict(X, verbose=0)
  np.testing.assert_allclose(again, expected, rtol=1e-5, atol=1e-6)


def test_a_layer_of_every_leading_axis_imports_as_itself(keras_model):
  model = keras_model(
    lambda: keras.Sequential(
      [
        keras.Input((STEPS, FEATURES)),
        keras.layers.TimeDistributed(keras.layers.Dense(UNITS), name='steps'),
      ]
    )
  )
  module, variables = fd.from_keras(model)
  assert not isinstance(module.layers[0], fd.TimeDistributed)
  assert set(variables['params']['steps']) == {'kernel', 'bias'}


def test_imported_time_distributed_dropout_follows_the_model(keras_model):
  model = keras_model(
    _keras_time_distributed(lambda: keras.layers.SpatialDropout1D(0.5))
  )
  module, variables = fd.from_keras(model)
  np.testing.assert_array_equal(module.apply(variables, X), X)
  dropped = module.apply(
    variables, X, deterministic=False, rngs={'dropout': jax.random.key(0)}
  )
  assert (np.asarray(dropped) == 0).any()


@pytest.mark.parametrize('api', ['linen', 'nnx'])
def test_bad_arguments(api):
  if api == 'linen':

    def run(layer, x):
      return fd.TimeDistributed(layer).init(jax.random.key(0), x)

    inner = fd.Flatten()
  else:

    def run(layer, x):
      return fd.nnx.TimeDistributed(layer)(x)

    inner = fd.nnx.Flatten()
  with pytest.raises(
    TypeError,
    match=r'^TimeDistributed: layer must be (a linen|an NNX) Module \(a layer'
    r' to run on each step\), got ',
  ):
    run(jnp.tanh, X)
  with pytest.raises(
    ValueError,
    match=r'^TimeDistributed: inputs must have shape \(batch, steps, \.\.\.\)'
    r' with rank >= 3, got shape \(2, 3\)',
  ):
    run(inner, X[:, :, 0, 0])
  with pytest.raises(
    TypeError, match=r'^TimeDistributed: inputs must be an array, got'
  ):
    run(inner, 'x')
