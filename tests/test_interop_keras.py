"""fd.from_keras and fd.keras_weights_to_params against Keras 3 itself."""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_dense as fd

keras = pytest.importorskip('keras')
layers = keras.layers

# Keras warns when a layer that does not support masking receives a mask:
# those models are built on purpose, to check that the mask is dropped.
pytestmark = pytest.mark.filterwarnings('ignore:Layer .* does not support')


def keras_allowed():
  """Keras's own code relies on implicit rank promotion."""
  return jax.numpy_rank_promotion('allow')


def random(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype('float32')


def build(make_model, seed=0):
  """Builds a Keras model and gives it random weights, biases included."""
  with keras_allowed():
    model = make_model()
  rng = np.random.default_rng(seed)
  model.set_weights(
    [rng.normal(size=w.shape).astype('float32') for w in model.get_weights()]
  )
  return model


def keras_output(model, x):
  with keras_allowed():
    return np.asarray(model(x, training=False))


def padded(shape, mask_value=0.0, seed=0):
  """Sequences ``(B, T, F)`` with trailing padded steps, none fully padded."""
  x = random(shape, seed)
  lengths = np.random.default_rng(seed).integers(1, shape[1] + 1, shape[0])
  lengths[0] = max(1, shape[1] - 2)  # at least two padded steps
  for row, length in enumerate(lengths):
    x[row, length:] = mask_value
  return x


def assert_imported(model, x, rtol=1e-5, atol=1e-5):
  """from_keras(model) computes model(x), with Keras's param counts."""
  module, variables = fd.from_keras(model)
  np.testing.assert_allclose(
    module.apply(variables, x), keras_output(model, x), rtol=rtol, atol=atol
  )
  info = fd.summary(module, x)
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  assert info.total_params == model.count_params()
  assert info.trainable_params == trainable
  assert info.non_trainable_params == model.count_params() - trainable
  return module, variables


def sequential(*stack):
  return lambda: keras.Sequential(list(stack))


MODELS = {
  'dense_rank2': (
    lambda: keras.Sequential(
      [
        keras.Input((6,)),
        layers.Dense(4, activation='relu'),
        layers.Dropout(0.3),
        layers.Dense(3, activation='softmax'),
      ]
    ),
    (3, 6),
  ),
  'dense_rank4_flatten': (
    lambda: keras.Sequential(
      [
        keras.Input((2, 3, 5)),
        layers.Dense(4, activation='tanh'),
        layers.Flatten(),
        layers.Dense(2, use_bias=False),
      ]
    ),
    (2, 2, 3, 5),
  ),
  'per_position': (
    lambda: keras.Sequential(
      [
        keras.Input((5, 4)),
        layers.EinsumDense(
          'abc,bcd->abd', (5, 3), bias_axes='bd', activation='sigmoid'
        ),
        # The same form with other letters, and no bias.
        layers.EinsumDense('xyz,yzw->xyw', (5, 2)),
        layers.Flatten(),
      ]
    ),
    (3, 5, 4),
  ),
  'reshaping': (
    lambda: keras.Sequential(
      [
        keras.Input((12,)),
        layers.Reshape((3, -1)),
        layers.Permute((2, 1)),
        layers.Flatten(),
        layers.RepeatVector(2),
        layers.Activation('gelu'),
        layers.SpatialDropout1D(0.2),
        layers.Dense(3, activation='leaky_relu'),
        layers.ActivityRegularization(l1=0.1),
      ]
    ),
    (2, 12),
  ),
  'spatial_dropout_2d_3d': (
    lambda: keras.Sequential(
      [
        keras.Input((3, 2, 2, 2)),
        layers.SpatialDropout3D(0.5, data_format='channels_first'),
        layers.Flatten(data_format='channels_first'),
        layers.Reshape((2, 2, 6)),
        layers.SpatialDropout2D(0.5),
        layers.Dense(2),
      ]
    ),
    (2, 3, 2, 2, 2),
  ),
}


@pytest.mark.parametrize('name', sorted(MODELS))
def test_sequential_models_match_keras(name):
  make_model, shape = MODELS[name]
  assert_imported(build(make_model), random(shape, seed=1))


def test_functional_chain_matches_keras():
  def make_model():
    inputs = keras.Input((4, 3), name='tokens')
    hidden = layers.Dense(5, activation='selu', name='hidden')(inputs)
    hidden = layers.Dropout(0.5, noise_shape=(None, 1, 5))(hidden)
    outputs = layers.EinsumDense(
      'abc,bcd->abd', (4, 2), bias_axes='bd', activation='softmax'
    )(hidden)
    return keras.Model(inputs, outputs)

  model, x = build(make_model), random((3, 4, 3))
  module, variables = assert_imported(model, x)
  np.testing.assert_allclose(
    jax.jit(module.apply)(variables, x),
    keras_output(model, x),
    rtol=1e-5,
    atol=1e-5,
  )
  assert module.names[0] == 'hidden'
  assert jax.tree.map(jnp.shape, variables['params']['hidden']) == {
    'bias': (5,),
    'kernel': (3, 5),
  }


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
  module, _ = assert_imported(model, x)
  assert module.mask_flow == (
    'compute',
    *('propagate',) * 7,  # dense_activation too
    'consume',
  )
  # The padded steps really are left out of the mean.
  with keras_allowed():
    unmasked = keras.Sequential(stack[1:])(x)
  assert not np.allclose(keras_output(model, x), unmasked, atol=1e-3)


@pytest.mark.parametrize(
  'dropping_layer',
  [
    lambda: layers.EinsumDense('abc,bcd->abd', (6, 2), bias_axes='bd'),
    # Not the identity: Keras keeps the mask of a tensor returned as is.
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
  module, _ = assert_imported(model, padded((3, 6, 2)))
  assert module.mask_flow[1:] == ('drop', 'consume')


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
  module, variables = assert_imported(model, x)
  assert module.names == (
    'a',
    'a_activity_regularizer',
    'b',
    'c',
    'c_activation',
    'c_activity_regularizer',
  )
  _, state = module.apply(variables, x, mutable=['losses'])
  with keras_allowed():
    model(x)
    expected = sum(np.asarray(loss) for loss in model.losses)
  np.testing.assert_allclose(fd.collect_losses(state), expected, rtol=1e-5)


def test_frozen_layers_go_to_constants():
  model = build(
    sequential(
      keras.Input((5, 3)),
      layers.Dense(4, name='frozen'),
      layers.EinsumDense('abc,bcd->abd', (5, 2), bias_axes='bd', name='tail'),
    )
  )
  model.get_layer('frozen').trainable = False
  module, variables = assert_imported(model, random((2, 5, 3)))
  assert jax.tree.map(jnp.shape, variables) == {
    'constants': {'frozen': {'bias': (4,), 'kernel': (3, 4)}},
    'params': {'tail': {'bias': (5, 2), 'kernel': (5, 4, 2)}},
  }
  # Gradients reach only the trainable params.
  grads = jax.grad(
    lambda params: module.apply(
      {**variables, 'params': params}, random((2, 5, 3))
    ).sum()
  )(variables['params'])
  assert set(grads) == {'tail'}
  # A training step that collects activity losses (mutable=['losses']) and
  # init both keep the frozen weights in 'constants'.
  x = random((2, 5, 3))
  outputs, state = module.apply(variables, x, mutable=['losses'])
  np.testing.assert_array_equal(outputs, module.apply(variables, x))
  assert state == {}
  assert jax.tree.map(jnp.shape, module.init(jax.random.key(0), x)) == (
    jax.tree.map(jnp.shape, variables)
  )


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
  module, variables = fd.from_keras(str(path))
  np.testing.assert_allclose(
    module.apply(variables, x), keras_output(model, x), rtol=1e-5, atol=1e-5
  )
  # A pathlib.Path works as well.
  _, same = fd.from_keras(path)
  jax.tree.map(np.testing.assert_array_equal, same, variables)


# Keras cannot build 'threshold' from its name alone (it has no defaults),
# and its 'sparsemax' is wrong when several entries are in the support
# (keras-team/keras#23425); tests/test_activations.py checks ours.
NOT_BY_NAME_IN_KERAS = {'threshold', 'sparsemax'}


def test_every_activation_name_matches_keras():
  x = 3 * random((2, 8))  # an even last axis, for glu
  for name in sorted(set(fd.KERAS_ACTIVATIONS) - NOT_BY_NAME_IN_KERAS):
    model = build(sequential(keras.Input((8,)), layers.Activation(name)))
    assert_imported(model, x)


def test_training_mode_applies_dropout():
  model = build(
    sequential(keras.Input((8,)), layers.Dense(16), layers.Dropout(0.5))
  )
  module, variables = fd.from_keras(model)
  x = random((4, 8))
  y = module.apply(
    variables, x, deterministic=False, rngs={'dropout': jax.random.key(0)}
  )
  inference = module.apply(variables, x)
  dropped = np.asarray(y) == 0
  assert 0 < dropped.mean() < 1
  np.testing.assert_allclose(
    np.asarray(y)[~dropped], 2 * np.asarray(inference)[~dropped], rtol=1e-6
  )


@pytest.mark.parametrize(
  'make_layer,class_name',
  [
    (lambda: layers.LayerNormalization(name='my_norm'), 'LayerNormalization'),
    (lambda: layers.Conv1D(3, 2, name='my_conv1d'), 'Conv1D'),
  ],
)
def test_uncovered_layer_is_an_error_naming_it(make_layer, class_name):
  model = build(sequential(keras.Input((5, 3)), make_layer()))
  name = model.layers[0].name
  with pytest.raises(ValueError) as error:
    fd.from_keras(model)
  message = str(error.value)
  assert f"{class_name} layer '{name}' of model" in message
  assert 'is not covered' in message
  assert f"fd.register_keras_layer('{class_name}', converter)" in message
  for covered in ('Dense', 'EinsumDense', 'GlobalAveragePooling1D', 'Masking'):
    assert covered in message


def test_model_errors():
  inputs = keras.Input((3,))
  with keras_allowed():
    branches = keras.Model(
      inputs, [layers.Dense(2)(inputs), layers.Dense(1)(inputs)]
    )
    shared = layers.Dense(3)
    twice = keras.Model(inputs, shared(shared(inputs)))
    hidden = layers.Dense(3)(inputs)
    skip = keras.Model(inputs, layers.Dense(2)(inputs), name='skip')
  del hidden
  # Graphs that are not chains import as KerasFunctional (more in
  # tests/test_keras_graph.py).
  assert isinstance(fd.from_keras(branches)[0], fd.KerasFunctional)
  assert isinstance(fd.from_keras(twice)[0], fd.KerasFunctional)
  assert len(skip.layers) == 2  # a dangling layer is not part of the model
  fd.from_keras(skip)

  class Subclassed(keras.Model):
    def __init__(self):
      super().__init__()
      self.dense = layers.Dense(2)

    def call(self, x):
      return self.dense(x)

  subclassed = Subclassed()
  with keras_allowed():
    subclassed(np.ones((1, 3), np.float32))
  with pytest.raises(ValueError, match='subclassed model'):
    fd.from_keras(subclassed)
  with pytest.raises(ValueError, match='is not built'):
    fd.from_keras(keras.Sequential([layers.Dense(2)]))
  with pytest.raises(ValueError, match='expected a keras.Model or the path'):
    fd.from_keras(layers.Dense(2))


@pytest.mark.parametrize(
  'make_layer,match',
  [
    (
      lambda: layers.EinsumDense('abc,cd->abd', (5, 2), bias_axes='d'),
      "EinsumDense layer '.*' has equation 'abc,cd->abd' with bias_axes 'd'",
    ),
    (
      lambda: layers.EinsumDense('abc,bcd->abd', (5, 2), bias_axes='d'),
      "bias_axes 'd'; flax_dense imports the per-position form",
    ),
    (
      lambda: layers.Dense(2, activation=keras.ops.sin),
      r"Dense layer '.*' has activation \{.*'sin'.*does not know; expected"
      ' one of',
    ),
    (
      lambda: layers.Dense(
        2, activity_regularizer=keras.regularizers.OrthogonalRegularizer()
      ),
      'activity_regularizer .*L1, L2 and L1L2',
    ),
  ],
)
def test_uncovered_options_are_errors(make_layer, match):
  model = build(sequential(keras.Input((5, 3)), make_layer()))
  with pytest.raises(ValueError, match=match):
    fd.from_keras(model)


def test_missing_keras_is_a_clear_import_error(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'keras', None)
  path = tmp_path / 'model.keras'
  path.write_bytes(b'')
  with pytest.raises(ImportError, match=r'pip install .flax_dense\[keras\]'):
    fd.from_keras(path)


# keras_weights_to_params: NumPy only, checked against plain NumPy loops.


def per_position_reference(x, kernel, bias):
  """The classic Dense2D / LocallyConnected1D(units, 1), one step at a time."""
  batch, positions, _ = x.shape
  outputs = np.zeros((batch, positions, kernel.shape[-1]), np.float32)
  for b in range(batch):
    for p in range(positions):
      window = x[b, p : p + 1].reshape(-1)  # kernel_size 1: one step
      outputs[b, p] = window @ kernel[p] + (0 if bias is None else bias[p])
  return outputs


@pytest.mark.parametrize('kind', ['dense2d', 'Dense2D', 'locally_connected1d'])
@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('positions,in_features,units', [(5, 4, 3), (1, 2, 6)])
def test_keras_weights_to_params_per_position(
  kind, use_bias, positions, in_features, units
):
  kernel = random((positions, 1 * in_features, units), seed=1)
  bias = random((positions, units), seed=2) if use_bias else None
  weights = [kernel, bias] if use_bias else [kernel]
  params = fd.keras_weights_to_params(kind, weights)
  assert set(params) == ({'kernel', 'bias'} if use_bias else {'kernel'})
  assert all(isinstance(w, np.ndarray) for w in params.values())
  x = random((3, positions, in_features), seed=3)
  np.testing.assert_allclose(
    fd.PerPositionDense(units, use_bias=use_bias).apply({'params': params}, x),
    per_position_reference(x, kernel, bias),
    rtol=1e-5,
    atol=1e-5,
  )


def test_keras_weights_to_params_dense_any_rank():
  kernel, bias = random((4, 3), seed=1), random((3,), seed=2)
  params = fd.keras_weights_to_params('Dense', [kernel, bias])
  x = random((2, 5, 4))
  np.testing.assert_allclose(
    nn.Dense(3).apply({'params': params}, x), x @ kernel + bias, rtol=1e-5
  )
  kernel[0, 0] = 42.0  # the params are copies
  assert params['kernel'][0, 0] != 42.0


@pytest.mark.parametrize(
  'kind,weights,match',
  [
    ('conv1d', [np.ones((2, 3))], "unknown kind 'conv1d'; expected one of"),
    ('dense', np.ones((2, 3)), 'must be the list'),
    ('dense', [], r'\[kernel, bias\] or \[kernel\], got 0 arrays'),
    ('dense', [np.ones((2, 3, 4))], r'kernel must be \(in_features, units\)'),
    (
      'dense2d',
      [np.ones((4, 3))],
      r'kernel must be \(positions, in_features, units\), rank 3, got shape'
      r' \(4, 3\)',
    ),
    (
      'locally_connected1d',
      [np.ones((5, 4, 3)), np.ones((3,))],
      r'kernel of shape \(5, 4, 3\) must have shape \(5, 3\), got \(3,\)',
    ),
    ('dense', [np.ones((4, 3)), np.ones((4,))], r'shape \(3,\), got \(4,\)'),
  ],
)
def test_keras_weights_to_params_errors(kind, weights, match):
  with pytest.raises(ValueError, match=match):
    fd.keras_weights_to_params(kind, weights)


def test_keras_sequential_errors():
  x = jnp.ones((2, 3, 4))
  with pytest.raises(ValueError, match=r'mask_flow must have one entry per'):
    fd.KerasSequential((nn.Dense(2),), mask_flow=()).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r'mask_flow\[0\] must be one of'):
    fd.KerasSequential((nn.Dense(2),), mask_flow=('keep',)).init(
      jax.random.key(0), x
    )
  with pytest.raises(ValueError, match='only a Masking layer does'):
    fd.KerasSequential((nn.Dense(2),), mask_flow=('compute',)).init(
      jax.random.key(0), x
    )
