"""fd.from_keras and fd.keras_weights_to_params against Keras 3 itself.

Keras models imported on either front end (the ``api`` fixture): the same
outputs as Keras in inference, with Keras's parameter counts; masks flowing
as in Keras; frozen layers as constants that training leaves alone;
dropout only in training; activity penalties as Keras's ``model.losses``.
An NNX import has the linen import's variables and computes the same.
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cases import pad, random
from flax import nnx

import flax_dense as fd

keras = pytest.importorskip('keras')
layers = keras.layers

# Keras warns when a layer that does not support masking receives a mask:
# those models are built on purpose, to check that the mask is dropped.
pytestmark = pytest.mark.filterwarnings('ignore:Layer .* does not support')


def padded(shape, mask_value=0.0, seed=0):
  """Sequences ``(B, T, F)`` with trailing padded steps, none fully padded."""
  return pad(random(shape, seed), mask_value, seed)


@pytest.fixture
def keras_output(keras_allowed):
  """``keras_output(model, x)``: the Keras model's inference output."""

  def output(model, x):
    with keras_allowed():
      return np.asarray(model(x, training=False))

  return output


@pytest.fixture
def assert_imported(keras_output):
  """``assert_imported(model, x, api='linen', rngs=None)`` checks that
  ``fd.from_keras(model, api=api)`` computes ``model(x)``.

  Linen: with Keras's parameter counts. NNX: as the linen import does, with
  its names and mask flow, and back to linen with its variables.

  Returns ``(call, imported, variables)``: ``call(x)`` runs the import in
  inference, ``imported`` is the linen module or the NNX model, and
  ``variables`` those of the linen import.
  """

  def check(model, x, api='linen', rngs=None, rtol=1e-5, atol=1e-5):
    module, variables = fd.from_keras(model)
    expected = keras_output(model, x)
    if api == 'linen':
      np.testing.assert_allclose(
        module.apply(variables, x), expected, rtol=rtol, atol=atol
      )
      info = fd.summary(module, x)
      trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
      assert info.total_params == model.count_params()
      assert info.trainable_params == trainable
      assert info.non_trainable_params == model.count_params() - trainable
      return (lambda x: module.apply(variables, x)), module, variables
    nnx_model = fd.from_keras(model, api='nnx', rngs=rngs)
    assert isinstance(nnx_model, fd.nnx.KerasSequential)
    np.testing.assert_allclose(nnx_model(x), expected, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(nnx_model(x), module.apply(variables, x))
    assert nnx_model.names == module.names
    assert nnx_model.mask_flow == module.mask_flow
    # Back to linen: the linen import's variables.
    _, back = fd.nnx.to_linen(nnx_model)
    assert jax.tree.structure(back) == jax.tree.structure(variables)
    jax.tree.map(np.testing.assert_array_equal, back, variables)
    return nnx_model, nnx_model, variables

  return check


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
def test_sequential_models_match_keras(name, api, keras_model, assert_imported):
  make_model, shape = MODELS[name]
  assert_imported(keras_model(make_model), random(shape, seed=1), api)


def test_functional_chain_matches_keras_under_jit(
  api, keras_model, keras_output, assert_imported
):
  def make_model():
    inputs = keras.Input((4, 3), name='tokens')
    hidden = layers.Dense(5, activation='selu', name='hidden')(inputs)
    hidden = layers.Dropout(0.5, noise_shape=(None, 1, 5))(hidden)
    outputs = layers.EinsumDense(
      'abc,bcd->abd', (4, 2), bias_axes='bd', activation='softmax'
    )(hidden)
    return keras.Model(inputs, outputs)

  model, x = keras_model(make_model), random((3, 4, 3))
  _, imported, variables = assert_imported(model, x, api)
  if api == 'linen':
    jitted = jax.jit(imported.apply)(variables, x)
  else:
    jitted = nnx.jit(lambda m, x: m(x))(imported, x)
  np.testing.assert_allclose(
    jitted, keras_output(model, x), rtol=1e-5, atol=1e-5
  )
  assert imported.names[0] == 'hidden'
  if api == 'linen':
    assert jax.tree.map(jnp.shape, variables['params']['hidden']) == {
      'bias': (5,),
      'kernel': (3, 5),
    }
  else:
    assert isinstance(imported.layers[0], nnx.Linear)
    assert isinstance(imported.layers[-1], fd.nnx.PerPositionDense)


@pytest.mark.parametrize('mask_value', [0.0, -1.0])
@pytest.mark.parametrize('functional', [False, True])
def test_mask_flows_from_masking_to_pooling(
  mask_value, functional, api, keras_model, keras_allowed, assert_imported
):
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

  model = keras_model(make_model)
  x = padded((4, 6, 2), mask_value)
  call, imported, _ = assert_imported(model, x, api)
  assert imported.mask_flow == (
    'compute',
    *('propagate',) * 7,  # dense_activation too
    'consume',
  )
  # The padded steps really are left out of the mean.
  with keras_allowed():
    unmasked = keras.Sequential(stack[1:])(x)
  assert not np.allclose(call(x), unmasked, atol=1e-3)


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
def test_layers_without_masking_drop_the_mask(
  dropping_layer, api, keras_model, assert_imported
):
  model = keras_model(
    sequential(
      keras.Input((6, 2)),
      layers.Masking(),
      dropping_layer(),
      layers.GlobalAveragePooling1D(),
    )
  )
  _, imported, _ = assert_imported(model, padded((3, 6, 2)), api)
  assert imported.mask_flow[1:] == ('drop', 'consume')


def test_activity_regularizers_match_keras_losses(
  api, keras_model, keras_allowed, assert_imported
):
  model = keras_model(
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
  _, imported, variables = assert_imported(model, x, api)
  assert imported.names == (
    'a',
    'a_activity_regularizer',
    'b',
    'c',
    'c_activation',
    'c_activity_regularizer',
  )
  module, _ = fd.from_keras(model)
  _, state = module.apply(variables, x, mutable=['losses'])
  if api == 'linen':
    losses = state
  else:
    outputs, losses = nnx.capture(imported, fd.nnx.Loss)(x)
    np.testing.assert_array_equal(outputs, imported(x))
    np.testing.assert_allclose(
      fd.collect_losses(losses), fd.collect_losses(state), rtol=1e-6
    )
  with keras_allowed():
    model(x)
    expected = sum(np.asarray(loss) for loss in model.losses)
  np.testing.assert_allclose(fd.collect_losses(losses), expected, rtol=1e-5)


def test_frozen_layers_are_constants_that_training_leaves_alone(
  api, keras_model, assert_imported
):
  model = keras_model(
    sequential(
      keras.Input((5, 3)),
      layers.Dense(4, name='frozen'),
      layers.EinsumDense('abc,bcd->abd', (5, 2), bias_axes='bd', name='tail'),
    )
  )
  model.get_layer('frozen').trainable = False
  x = random((2, 5, 3))
  _, imported, variables = assert_imported(model, x, api)
  if api == 'linen':
    module = imported
    assert jax.tree.map(jnp.shape, variables) == {
      'constants': {'frozen': {'bias': (4,), 'kernel': (3, 4)}},
      'params': {'tail': {'bias': (5, 2), 'kernel': (5, 4, 2)}},
    }
    # Gradients reach only the trainable params.
    grads = jax.grad(
      lambda params: module.apply({**variables, 'params': params}, x).sum()
    )(variables['params'])
    assert set(grads) == {'tail'}
    # A training step that collects activity losses (mutable=['losses'])
    # and init both keep the frozen weights in 'constants'.
    outputs, state = module.apply(variables, x, mutable=['losses'])
    np.testing.assert_array_equal(outputs, module.apply(variables, x))
    assert state == {}
    assert jax.tree.map(jnp.shape, module.init(jax.random.key(0), x)) == (
      jax.tree.map(jnp.shape, variables)
    )
    return
  nnx_model = imported
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


def test_keras_file_round_trip(api, tmp_path, keras_model, keras_output):
  model = keras_model(
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
  # A str and a pathlib.Path.
  imports = [fd.from_keras(source, api=api) for source in (str(path), path)]
  for imported in imports:
    if api == 'linen':
      module, variables = imported
      outputs = module.apply(variables, x)
    else:
      outputs = imported(x)
    np.testing.assert_allclose(
      outputs, keras_output(model, x), rtol=1e-5, atol=1e-5
    )
  if api == 'linen':
    jax.tree.map(np.testing.assert_array_equal, imports[1][1], imports[0][1])


# Keras cannot build 'threshold' from its name alone (it has no defaults),
# and its 'sparsemax' is wrong when several entries are in the support
# (keras-team/keras#23425); tests/test_activations.py checks ours.
NOT_BY_NAME_IN_KERAS = {'threshold', 'sparsemax'}


def test_every_activation_name_matches_keras(keras_model, assert_imported):
  x = 3 * random((2, 8))  # an even last axis, for glu
  for name in sorted(set(fd.KERAS_ACTIVATIONS) - NOT_BY_NAME_IN_KERAS):
    model = keras_model(sequential(keras.Input((8,)), layers.Activation(name)))
    assert_imported(model, x)


def test_dropout_is_on_only_in_training(api, keras_model, assert_imported):
  model = keras_model(
    sequential(keras.Input((8,)), layers.Dense(16), layers.Dropout(0.5))
  )
  x = random((4, 8))
  if api == 'linen':
    module, variables = fd.from_keras(model)
    y = module.apply(
      variables, x, deterministic=False, rngs={'dropout': jax.random.key(0)}
    )
    inference = module.apply(variables, x)
    dropped = np.asarray(y) == 0
    assert 0 < dropped.mean() < 1
    np.testing.assert_allclose(
      np.asarray(y)[~dropped], 2 * np.asarray(inference)[~dropped], rtol=1e-6
    )
    return
  _, nnx_model, _ = assert_imported(model, x, api, rngs=nnx.Rngs(dropout=0))
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


def test_nnx_training_without_rngs_asks_for_them(keras_model):
  model = keras_model(sequential(keras.Input((8,)), layers.Dropout(0.5)))
  nnx_model = fd.from_keras(model, api='nnx')
  nnx_model.train()
  with pytest.raises(ValueError, match=r'^Dropout: dropout needs random keys'):
    nnx_model(random((2, 8)))
  assert nnx_model(random((2, 8)), rngs=jax.random.key(0)).shape == (2, 8)


def test_api_and_rngs_errors(keras_model):
  model = keras_model(sequential(keras.Input((3,)), layers.Dense(2)))
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


@pytest.mark.parametrize(
  'make_layer,class_name',
  [
    (lambda: layers.LayerNormalization(name='my_norm'), 'LayerNormalization'),
    (lambda: layers.Conv1D(3, 2, name='my_conv1d'), 'Conv1D'),
  ],
)
def test_uncovered_layer_is_an_error_naming_it(
  make_layer, class_name, keras_model
):
  model = keras_model(sequential(keras.Input((5, 3)), make_layer()))
  name = model.layers[0].name
  with pytest.raises(ValueError) as error:
    fd.from_keras(model)
  message = str(error.value)
  assert f"{class_name} layer '{name}' of model" in message
  assert 'is not covered' in message
  assert f"fd.register_keras_layer('{class_name}', converter)" in message
  for covered in ('Dense', 'EinsumDense', 'GlobalAveragePooling1D', 'Masking'):
    assert covered in message


def test_model_errors(keras_allowed):
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
def test_uncovered_options_are_errors(make_layer, match, keras_model):
  model = keras_model(sequential(keras.Input((5, 3)), make_layer()))
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
