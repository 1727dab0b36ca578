"""``fd.to_keras_model``: Keras models imported, trained in JAX, handed back.

Each small Keras model goes ``from_keras`` -> a few optax steps on the Flax
module -> ``to_keras_model``; Keras's own ``predict`` of the rebuilt model
must equal the trained Flax outputs (and differ from the untrained ones, so
the trained weights are the ones set).
"""

import os

os.environ.setdefault('KERAS_BACKEND', 'jax')

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import flax_dense as fd  # noqa: E402

L = keras.layers


def _padded(shape, seed=0):
  """Inputs with trailing all-zero steps, for the masking models."""
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  if len(shape) == 3:
    x[0, shape[1] - 2 :] = 0.0
  return x


def _predict(model, x):
  """Keras's predict; Keras's own ops broadcast ranks, which conftest bans."""
  with jax.numpy_rank_promotion('allow'):
    return model.predict(x, verbose=0)


def _frozen_dense():
  layer = L.Dense(4, activation='relu', name='frozen')
  layer.trainable = False
  return layer


#: name: (Keras layers after the Input, per-example input shape).
MODELS = {
  'Dense-EinsumDense': (
    lambda: [
      L.Dense(4, activation='relu', name='hidden'),
      L.EinsumDense(
        'abc,bcd->abd', (5, 3), bias_axes='bd', activation='tanh', name='e'
      ),
      L.Flatten(),
      L.Dense(2),
    ],
    (5, 3),
  ),
  'EinsumDense-no-bias-softmax': (
    lambda: [
      L.EinsumDense('abc,bcd->abd', (5, 3), activation='softmax'),
      L.Reshape((3, 5)),
      L.Permute((2, 1)),
      L.Activation('gelu'),
    ],
    (5, 4),
  ),
  'Masking-Dropout-GlobalAveragePooling1D': (
    lambda: [
      L.Masking(0.0),
      L.Dense(4, activation='tanh'),
      L.Dropout(0.3),
      L.GlobalAveragePooling1D(),
      L.Dense(2),
    ],
    (6, 3),
  ),
  'SpatialDropout1D-GlobalMaxPooling1D-keepdims': (
    lambda: [
      L.SpatialDropout1D(0.2),
      L.Dense(3),
      L.GlobalMaxPooling1D(keepdims=True),
    ],
    (6, 3),
  ),
  'RepeatVector-ActivityRegularization': (
    lambda: [
      L.Dense(3, activity_regularizer=keras.regularizers.L2(0.01)),
      L.RepeatVector(4),
      L.ActivityRegularization(l1=0.01),
      L.Flatten(),
    ],
    (5,),
  ),
  'SpatialDropout2D': (
    lambda: [L.SpatialDropout2D(0.2), L.Dense(2), L.Flatten()],
    (3, 4, 2),
  ),
  'SpatialDropout3D-channels-first': (
    lambda: [
      L.SpatialDropout3D(0.2, data_format='channels_first'),
      L.Flatten('channels_first'),
      L.Dense(2),
    ],
    (2, 2, 3, 2),
  ),
  'frozen-Dense': (lambda: [_frozen_dense(), L.Dense(2)], (5,)),
}


def _train(module, variables, x, with_losses, steps=3):
  """A few Adam steps on a squared loss, dropout on: the trained variables."""
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}
  optimizer = optax.adam(0.05)

  def loss(params, key):
    outputs = module.apply(
      {'params': params, **rest},
      x,
      deterministic=False,
      rngs={'dropout': key},
      **({'mutable': ['losses']} if with_losses else {}),
    )
    if with_losses:
      outputs, state = outputs
      return jnp.mean(jnp.square(outputs - 1.0)) + fd.collect_losses(state)
    return jnp.mean(jnp.square(outputs - 1.0))

  gradient = jax.jit(jax.grad(loss))
  state = optimizer.init(params)
  for key in jax.random.split(jax.random.key(1), steps):
    grads = gradient(params, key)
    updates, state = optimizer.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return {'params': params, **rest}


@pytest.mark.parametrize('name', MODELS)
def test_round_trip_predict_equals_the_trained_flax_outputs(name):
  layers, shape = MODELS[name]
  source = keras.Sequential([keras.Input(shape), *layers()])
  module, variables = fd.from_keras(source)
  x = _padded((4, *shape))
  # Sown losses are collected where there are any: a frozen layer cannot
  # be applied with mutable=['losses'] yet.
  trained = _train(module, variables, x, 'Regularization' in name)
  model = fd.to_keras_model(module, trained, input_shape=shape)
  expected = module.apply(trained, x)
  np.testing.assert_allclose(_predict(model, x), expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(module.apply(variables, x), expected)
  assert [layer.name for layer in model.layers] == list(module.names)
  assert len(model.trainable_weights) == len(jax.tree.leaves(trained['params']))
  if 'frozen' in name:
    assert not model.get_layer('frozen').trainable
    np.testing.assert_array_equal(
      model.get_layer('frozen').get_weights()[0],
      np.asarray(trained['constants']['frozen']['kernel']),
    )


def test_functional_graph_with_a_shared_layer():
  a, b = keras.Input((5, 3)), keras.Input((5, 3))
  masked = L.Masking()(a)
  shared = L.Dense(4, activation='tanh', name='shared')
  joined = L.Concatenate()([shared(masked), shared(b)])
  outputs = [
    L.GlobalAveragePooling1D()(joined),
    L.Add()([shared(b), shared(masked)]),
  ]
  source = keras.Model([a, b], outputs)
  module, variables = fd.from_keras(source)
  xa, xb = _padded((3, 5, 3)), _padded((3, 5, 3), seed=1)
  model = fd.to_keras_model(module, variables, input_shape=[(5, 3), (5, 3)])
  got = _predict(model, [xa, xb])
  for actual, expected in zip(
    got, module.apply(variables, xa, xb), strict=True
  ):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
  assert len(model.get_layer('shared').weights) == 2


@pytest.mark.parametrize('trainable', [False, True])
def test_const_product_is_a_registered_keras_layer_that_saves(
  tmp_path, trainable
):
  module = fd.KerasSequential(
    (nn.Dense(3), fd.ConstProduct([0.5, -1.0, 2.0], trainable=trainable)),
    names=('dense', 'product'),
  )
  x = _padded((4, 5))
  variables = module.init(jax.random.key(0), x)
  collection = 'params' if trainable else 'constants'
  model = fd.to_keras_model(module, variables, input_shape=(5,))
  product = model.get_layer('product')
  assert product.trainable is trainable
  assert len(model.non_trainable_weights) == (0 if trainable else 1)
  expected = module.apply(variables, x)
  np.testing.assert_allclose(_predict(model, x), expected, rtol=1e-6)
  path = tmp_path / 'product.keras'
  model.save(path)
  fd.keras_custom_objects()
  reloaded = keras.models.load_model(path)
  np.testing.assert_array_equal(_predict(reloaded, x), _predict(model, x))
  # And back to Flax, from the live model, the .keras file and an .h5 file
  # (where its class is named 'flax_dense>ConstProduct'): the same module,
  # frozen weights again constants.
  model.save(tmp_path / 'product.h5')
  for source in (model, str(path), str(tmp_path / 'product.h5')):
    again, again_variables = fd.from_keras(source)
    assert again.layers[-1] == fd.ConstProduct(
      None if trainable else variables[collection]['product']['kernel'],
      trainable=trainable,
    )
    assert jax.tree.map(np.shape, again_variables) == jax.tree.map(
      np.shape, variables
    )
    np.testing.assert_allclose(
      again.apply(again_variables, x), expected, rtol=1e-6
    )


def test_single_layer():
  layer = fd.PerPositionDense(2, use_bias=False, activation='relu')
  x = _padded((3, 4, 5))
  variables = layer.init(jax.random.key(0), x)
  model = fd.to_keras_model(layer, variables, input_shape=(4, 5))
  np.testing.assert_allclose(
    _predict(model, x), layer.apply(variables, x), rtol=1e-6
  )


@pytest.mark.parametrize(
  'layer',
  [fd.LocallyConnected1D(2, 2), fd.AttentionDecoder(3, 2)],
  ids=['LocallyConnected1D', 'AttentionDecoder'],
)
def test_a_layer_without_keras_counterpart_names_to_keras(layer):
  module = fd.KerasSequential((layer,), names=('odd',))
  x = _padded((2, 6, 3))
  variables = module.init(jax.random.key(0), x)
  with pytest.raises(
    ValueError, match=r"layer 'odd' is a .* no Keras.*to_keras"
  ):
    fd.to_keras_model(module, variables, input_shape=(6, 3))


def test_an_activation_function_has_no_keras_name():
  module = fd.KerasSequential((fd.PerPositionDense(2, activation=jnp.sin),))
  x = _padded((2, 4, 3))
  variables = module.init(jax.random.key(0), x)
  with pytest.raises(
    ValueError, match='has activation .* take activations by name'
  ):
    fd.to_keras_model(module, variables, input_shape=(4, 3))


@pytest.mark.parametrize('shape', [None, (3,), [(3,), (3,), (3,)]])
def test_a_functional_model_needs_one_input_shape_per_input(shape):
  a, b = keras.Input((3,)), keras.Input((3,))
  source = keras.Model([a, b], L.Add()([a, b]))
  module, variables = fd.from_keras(source)
  with pytest.raises(ValueError, match='one shape per input'):
    fd.to_keras_model(module, variables, input_shape=shape)


def test_without_input_shape_the_layers_are_built_from_their_weights():
  module = fd.KerasSequential(
    (fd.PerPositionDense(2), fd.Flatten()), names=('dense', 'flatten')
  )
  x = _padded((3, 4, 5))
  variables = module.init(jax.random.key(0), x)
  model = fd.to_keras_model(module, variables)
  np.testing.assert_allclose(
    _predict(model, x), module.apply(variables, x), rtol=1e-6
  )


def test_an_nnx_model_holds_its_own_weights():
  source = keras.Sequential(
    [keras.Input((4, 3)), L.Masking(), L.Dense(2), L.GlobalAveragePooling1D()]
  )
  model = fd.from_keras(source, api='nnx')
  x = _padded((3, 4, 3))
  back = fd.to_keras_model(model)
  np.testing.assert_allclose(_predict(back, x), model(x), rtol=1e-6)
  with pytest.raises(ValueError, match='NNX module holds its own weights'):
    fd.to_keras_model(model, {})
