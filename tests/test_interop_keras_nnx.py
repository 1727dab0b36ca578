"""fd.from_keras(..., api='nnx') against Keras 3 itself.

The models of tests/test_interop_keras.py, imported as NNX models: the same
outputs as Keras in inference, masks flowing as in Keras, frozen layers as
``fd.nnx.Constant``, dropout on only after ``model.train()``, activity
penalties as Keras's ``model.losses``; and the same variables as the linen
import.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_interop_keras import (
  MODELS,
  build,
  keras_allowed,
  keras_output,
  padded,
  random,
  sequential,
)

import flax_dense as fd

keras = pytest.importorskip('keras')
layers = keras.layers

# Keras warns when a layer that does not support masking receives a mask:
# those models are built on purpose, to check that the mask is dropped.
pytestmark = pytest.mark.filterwarnings('ignore:Layer .* does not support')


def assert_imported(model, x, rngs=None):
  """from_keras(model, api='nnx') computes model(x), as the linen import."""
  nnx_model = fd.from_keras(model, api='nnx', rngs=rngs)
  assert isinstance(nnx_model, fd.nnx.KerasSequential)
  np.testing.assert_allclose(
    nnx_model(x), keras_output(model, x), rtol=1e-5, atol=1e-5
  )
  module, variables = fd.from_keras(model)
  np.testing.assert_array_equal(nnx_model(x), module.apply(variables, x))
  assert nnx_model.names == module.names
  assert nnx_model.mask_flow == module.mask_flow
  # Back to linen: the linen import's variables.
  _, back = fd.nnx.to_linen(nnx_model)
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  jax.tree.map(np.testing.assert_array_equal, back, variables)
  return nnx_model


@pytest.mark.parametrize('name', sorted(MODELS))
def test_sequential_models_match_keras(name):
  make_model, shape = MODELS[name]
  assert_imported(build(make_model), random(shape, seed=1))


def test_functional_chain_matches_keras_under_nnx_jit():
  def make_model():
    inputs = keras.Input((4, 3), name='tokens')
    hidden = layers.Dense(5, activation='selu', name='hidden')(inputs)
    hidden = layers.Dropout(0.5, noise_shape=(None, 1, 5))(hidden)
    outputs = layers.EinsumDense(
      'abc,bcd->abd', (4, 2), bias_axes='bd', activation='softmax'
    )(hidden)
    return keras.Model(inputs, outputs)

  model, x = build(make_model), random((3, 4, 3))
  nnx_model = assert_imported(model, x)
  np.testing.assert_allclose(
    nnx.jit(lambda m, x: m(x))(nnx_model, x),
    keras_output(model, x),
    rtol=1e-5,
    atol=1e-5,
  )
  assert nnx_model.names[0] == 'hidden'
  assert isinstance(nnx_model.layers[0], nnx.Linear)
  assert isinstance(nnx_model.layers[-1], fd.nnx.PerPositionDense)


@pytest.mark.parametrize('mask_value', [0.0, -1.0])
@pytest.mark.parametrize('functional', [False, True])
def test_mask_flows_from_masking_to_pooling(mask_value, functional):
  stack = [
    layers.Masking(mask_value),
    layers.Dense(4, activation='tanh'),
    layers.Dropout(0.2),
    layers.Activation('relu'),
    layers.ActivityRegularization(l2=0.1),
    layers.SpatialDropout1D(0.1),
    layers.Dense(3),
    layers.GlobalAveragePooling1D(),
  ]

  def make_model():
    inputs = keras.Input((6, 2))
    if not functional:
      return keras.Sequential([inputs, *stack])
    outputs = inputs
    for layer in stack:
      outputs = layer(outputs)
    return keras.Model(inputs, outputs)

  model = build(make_model)
  x = padded((4, 6, 2), mask_value)
  nnx_model = assert_imported(model, x)
  assert nnx_model.mask_flow == ('compute', *('propagate',) * 7, 'consume')
  with keras_allowed():
    unmasked = keras.Sequential(stack[1:])(x)
  assert not np.allclose(nnx_model(x), unmasked, atol=1e-3)


@pytest.mark.parametrize(
  'dropping_layer',
  [
    lambda: layers.EinsumDense('abc,bcd->abd', (6, 2), bias_axes='bd'),
    lambda: layers.Reshape((3, 4)),
    lambda: layers.Permute((2, 1)),
  ],
  ids=['EinsumDense', 'Reshape', 'Permute'],
)
def test_layers_without_masking_drop_the_mask(dropping_layer):
  model = build(
    sequential(
      keras.Input((6, 2)),
      layers.Masking(),
      dropping_layer(),
      layers.GlobalAveragePooling1D(),
    )
  )
  nnx_model = assert_imported(model, padded((3, 6, 2)))
  assert nnx_model.mask_flow[1:] == ('drop', 'consume')


def test_activity_regularizers_match_keras_losses():
  model = build(
    sequential(
      keras.Input((4,)),
      layers.Dense(
        3, activity_regularizer=keras.regularizers.L1L2(0.1, 0.2), name='a'
      ),
      layers.ActivityRegularization(l1=0.3, name='b'),
      layers.Dense(2, activation='tanh', activity_regularizer='l2', name='c'),
    )
  )
  x = random((5, 4))
  nnx_model = assert_imported(model, x)
  outputs, losses = nnx.capture(nnx_model, fd.nnx.Loss)(x)
  np.testing.assert_array_equal(outputs, nnx_model(x))
  with keras_allowed():
    model(x)
    expected = sum(np.asarray(loss) for loss in model.losses)
  np.testing.assert_allclose(fd.collect_losses(losses), expected, rtol=1e-5)
  module, variables = fd.from_keras(model)
  _, state = module.apply(variables, x, mutable=['losses'])
  np.testing.assert_allclose(
    fd.collect_losses(losses), fd.collect_losses(state), rtol=1e-6
  )


def test_frozen_layers_are_constants_that_training_leaves_alone():
  model = build(
    sequential(
      keras.Input((5, 3)),
      layers.Dense(4, name='frozen'),
      layers.EinsumDense('abc,bcd->abd', (5, 2), bias_axes='bd', name='tail'),
    )
  )
  model.get_layer('frozen').trainable = False
  x = random((2, 5, 3))
  nnx_model = assert_imported(model, x)
  frozen, tail = nnx_model.layers
  assert isinstance(frozen.kernel, fd.nnx.Constant)
  assert isinstance(frozen.bias, fd.nnx.Constant)
  assert isinstance(tail.kernel, nnx.Param)
  np.testing.assert_array_equal(
    frozen.kernel[...], model.get_layer('frozen').get_weights()[0]
  )
  constants = jax.tree.map(
    np.array, nnx.to_pure_dict(nnx.state(nnx_model, fd.nnx.Constant))
  )
  tail_kernel = np.array(tail.kernel[...])

  def loss(model, x):
    return jnp.sum(model(x) ** 2)

  grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(nnx_model, x)
  assert list(nnx.to_pure_dict(grads)['layers']) == [1]  # the tail only
  optimizer = nnx.Optimizer(nnx_model, optax.sgd(0.1), wrt=nnx.Param)
  optimizer.update(nnx_model, grads)
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.to_pure_dict(nnx.state(nnx_model, fd.nnx.Constant)),
    constants,
  )
  assert not np.allclose(tail.kernel[...], tail_kernel)


def test_keras_file_round_trip(tmp_path):
  model = build(
    sequential(
      keras.Input((5, 3)),
      layers.Masking(),
      layers.Dense(4, activation='swish'),
      layers.GlobalAveragePooling1D(),
      layers.Dense(2, activation='softmax'),
    )
  )
  path = tmp_path / 'model.keras'
  model.save(path)
  x = padded((3, 5, 3))
  for source in (str(path), path):
    np.testing.assert_allclose(
      fd.from_keras(source, api='nnx')(x),
      keras_output(model, x),
      rtol=1e-5,
      atol=1e-5,
    )


def test_dropout_is_off_until_train():
  model = build(
    sequential(
      keras.Input((8,)),
      layers.Dense(16),
      layers.Dropout(0.5),
    )
  )
  x = random((4, 8))
  nnx_model = assert_imported(model, x, rngs=nnx.Rngs(dropout=0))
  inference = np.asarray(nnx_model(x))
  assert nnx_model.layers[1].deterministic is True
  nnx_model.train()
  first, second = np.asarray(nnx_model(x)), np.asarray(nnx_model(x))
  dropped = first == 0
  assert 0 < dropped.mean() < 1
  np.testing.assert_allclose(
    first[~dropped], 2 * inference[~dropped], rtol=1e-6
  )
  assert not np.array_equal(first, second)  # the stream moves on
  # A key for one call instead of the layers' own streams.
  key = jax.random.key(4)
  np.testing.assert_array_equal(nnx_model(x, rngs=key), nnx_model(x, rngs=key))
  np.testing.assert_array_equal(nnx_model(x, deterministic=True), inference)
  nnx_model.eval()
  np.testing.assert_array_equal(nnx_model(x), inference)


def test_training_without_rngs_asks_for_them():
  model = build(sequential(keras.Input((8,)), layers.Dropout(0.5)))
  nnx_model = fd.from_keras(model, api='nnx')
  nnx_model.train()
  with pytest.raises(ValueError, match=r'^Dropout: dropout needs random keys'):
    nnx_model(random((2, 8)))
  assert nnx_model(random((2, 8)), rngs=jax.random.key(0)).shape == (2, 8)


def test_api_and_rngs_errors():
  model = build(sequential(keras.Input((3,)), layers.Dense(2)))
  with pytest.raises(
    ValueError,
    match=r"^from_keras: api must be one of \('linen', 'nnx'\) \(the front"
    r" end of the model it returns\), got 'NNX'.",
  ):
    fd.from_keras(model, api='NNX')
  with pytest.raises(ValueError, match=r"^from_keras: rngs is for api='nnx'"):
    fd.from_keras(model, rngs=nnx.Rngs(0))
  with pytest.raises(
    TypeError,
    match=r'^from_keras: rngs must be an nnx.Rngs \(the streams of the'
    r' dropout layers\) or None, got 0.',
  ):
    fd.from_keras(model, api='nnx', rngs=0)
  # The api is checked before anything is read.
  with pytest.raises(ValueError, match='api must be one of'):
    fd.from_keras('missing.keras', api='jax')
