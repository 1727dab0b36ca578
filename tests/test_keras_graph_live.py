"""fd.from_keras graphs: both APIs, jit, to_linen, h5py-only import, bad files.

Complements test_keras_graph.py (Keras 3 graphs) and test_keras_graph_h5.py
(the tf.keras fixtures).
"""

import pathlib
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

import flax_dense as fd

keras = pytest.importorskip('keras')
layers = keras.layers
FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
pytestmark = pytest.mark.filterwarnings('ignore:Layer .* does not support')


def random(shape, seed=0, padded=0):
  x = np.random.default_rng(seed).normal(size=shape).astype('float32')
  if padded:
    x[:, -padded:] = 0.0
  return x


def build(make_model, seed=0):
  with jax.numpy_rank_promotion('allow'):
    model = make_model()
  rng = np.random.default_rng(seed)
  model.set_weights(
    [rng.normal(size=w.shape).astype('float32') for w in model.get_weights()]
  )
  return model


def two_inputs_shared_and_merges():
  a, b = keras.Input((5, 3), name='a'), keras.Input((5, 3), name='b')
  shared = layers.Dense(4, activation='tanh', name='shared')
  left = shared(layers.Masking(0.0, name='mask_a')(a))
  right = shared(b)
  masked_right = shared(layers.Masking(0.0, name='mask_b')(b))
  merged = [
    layers.Add()([left, masked_right]),
    layers.Subtract()([left, right]),
    layers.Multiply()([left, masked_right]),
    layers.Average()([left, right]),
    layers.Maximum()([left, masked_right]),
    layers.Minimum()([left, right]),
  ]
  features = layers.Concatenate(axis=-1)([*merged, left])
  steps = layers.TimeDistributed(layers.Dense(2), name='td')(features)
  pooled = layers.GlobalAveragePooling1D()(steps)
  peak = layers.GlobalMaxPooling1D()(steps)
  along = layers.GlobalAveragePooling1D()(
    layers.Concatenate(axis=1)([left, right])
  )
  dot = layers.Dot(axes=(2, 2))([left, right])
  cosine = layers.Dot(axes=1, normalize=True)([pooled, peak])
  return keras.Model([a, b], [pooled, peak, along, dot, cosine])


def branches_one_output():
  x = keras.Input((6,))
  h = layers.Dense(5, activation='relu', name='hidden')(x)
  y = layers.Add()(
    [layers.Dense(3, name='deep')(h), layers.Dense(3, name='wide')(x)]
  )
  return keras.Model(x, y)


def shared_twice():
  x = keras.Input((3,))
  shared = layers.Dense(3, activation='sigmoid')
  return keras.Model(x, [shared(shared(x))])


GRAPHS = {
  'merges': (two_inputs_shared_and_merges, [(2, 5, 3), (2, 5, 3)]),
  'branches': (branches_one_output, [(4, 6)]),
  'shared_twice': (shared_twice, [(4, 3)]),
}


def inputs_for(shapes):
  return [
    random(shape, seed=i, padded=i + 1 if len(shape) == 3 else 0)
    for i, shape in enumerate(shapes)
  ]


def assert_same(got, want):
  if isinstance(want, list | tuple):
    assert isinstance(got, list) and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
      np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
  else:
    assert not isinstance(got, list)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize('graph', list(GRAPHS.values()), ids=list(GRAPHS))
def test_graph_matches_keras_in_both_apis(graph):
  make, shapes = graph
  model = build(make)
  x = inputs_for(shapes)
  with jax.numpy_rank_promotion('allow'):
    want = model(x if len(x) > 1 else x[0])
  want = (
    [np.asarray(w) for w in want]
    if isinstance(want, list)
    else np.asarray(want)
  )
  module, variables = fd.from_keras(model)
  assert isinstance(module, fd.KerasFunctional)
  assert_same(module.apply(variables, *x), want)
  twin = fd.from_keras(model, api='nnx')
  assert isinstance(twin, fd.nnx.KerasFunctional)
  assert_same(twin(*x), want)
  # Hashable: a static jit argument.
  assert hash(module) == hash(module.clone())
  hash(twin)
  jitted = jax.jit(lambda m, v, *x: m.apply(v, *x), static_argnums=0)
  assert_same(jitted(module, variables, *x), want)
  back, back_variables = fd.nnx.to_linen(twin)
  assert_same(back.apply(back_variables, *x), want)


def test_shared_layer_has_one_set_of_weights():
  module, variables = fd.from_keras(build(shared_twice))
  (name,) = [n for n in variables['params']]
  assert module.names.count(name) == 1
  calls = [node for node in module.nodes if node.steps == module.nodes[0].steps]
  assert len(calls) == 2


def test_keras_sequential_hashes_and_clones():
  model = build(
    lambda: keras.Sequential(
      [keras.Input((4, 3)), layers.Masking(), layers.Dense(2)]
    )
  )
  module, variables = fd.from_keras(model)
  listed = fd.KerasSequential(list(module.layers), list(module.names))
  assert hash(listed) == hash(listed.clone())
  x = random((2, 4, 3))
  np.testing.assert_allclose(
    listed.apply(variables, x), module.apply(variables, x)
  )
  hash(fd.from_keras(model, api='nnx'))


# --- tf.keras .h5 graphs ----------------------------------------------------


def fixture_io(name):
  fixture = np.load(FIXTURES / f'{name}.npz')
  inputs = [fixture[k] for k in fixture.files if k.startswith('inputs')]
  outputs = [fixture[k] for k in fixture.files if k.startswith('outputs')]
  return inputs, outputs


@pytest.mark.parametrize(
  'name', ['functional_graph', 'functional_locally_connected']
)
@pytest.mark.parametrize('api', ['linen', 'nnx'])
def test_tf_keras_graph_files_match_tf_keras(name, api):
  inputs, want = fixture_io(name)
  if api == 'linen':
    module, variables = fd.from_keras(FIXTURES / f'{name}.h5')
    got = module.apply(variables, *inputs)
  else:
    got = fd.from_keras(FIXTURES / f'{name}.h5', api='nnx')(*inputs)
  assert_same(got, want)


def test_tf_keras_merges_and_masks_as_tf_keras():
  # The fixture's two inputs are masked at different steps, so an OR of the
  # masks (Keras 3) would average other steps than tf.keras's AND.
  module, _ = fd.from_keras(FIXTURES / 'functional_graph.h5')
  merges = {node.merge for node in module.nodes if node.merge}
  assert merges == {
    'Add',
    'Subtract',
    'Multiply',
    'Average',
    'Maximum',
    'Minimum',
    'Concatenate',
    'Dot',
  }
  assert all(
    dict(node.options).get('keras2')
    for node in module.nodes
    if node.merge and node.merge != 'Dot'
  )


def test_h5_import_needs_neither_tensorflow_nor_keras():
  script = f"""
import sys
sys.modules['keras'] = None
sys.modules['tensorflow'] = None
sys.modules['tf_keras'] = None
import numpy as np
import flax_dense as fd
for name in ('functional_graph', 'sequential'):
  module, variables = fd.from_keras({str(FIXTURES)!r} + f'/{{name}}.h5')
print('ok')
"""
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'ok'


# --- bad input --------------------------------------------------------------


def test_missing_and_wrong_kind_of_files(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'from_keras: no such file'):
    fd.from_keras(tmp_path / 'nothing.h5')
  with pytest.raises(
    ValueError, match=r'from_keras: .*sequential_weights.h5.* weights-only'
  ):
    fd.from_keras(FIXTURES / 'sequential_weights.h5')
  truncated = tmp_path / 'model.h5'
  truncated.write_bytes((FIXTURES / 'sequential.h5').read_bytes()[:1000])
  with pytest.raises(
    ValueError, match=r'from_keras: .*model.h5.* is not a readable HDF5'
  ) as error:
    fd.from_keras(truncated)
  assert error.value.__cause__ is None
  other = tmp_path / 'model.txt'
  other.write_text('x')
  with pytest.raises(ValueError, match=r'neither a .keras file'):
    fd.from_keras(other)
  with pytest.raises(
    ValueError, match=r'load_keras_weights: .*sequential.h5.* whole-model'
  ):
    fd.load_keras_weights({}, FIXTURES / 'sequential.h5')


def copy(tmp_path, name):
  path = tmp_path / name
  path.write_bytes((FIXTURES / name).read_bytes())
  return path


def test_keras_1_file(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  with h5py.File(path, 'a') as file:
    file.attrs['keras_version'] = '1.2.2'
  with pytest.raises(ValueError, match=r'from_keras: .* Keras 1'):
    fd.from_keras(path)


def test_unknown_layer_in_a_file(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  with h5py.File(path, 'a') as file:
    config = file.attrs['model_config']
    config = config.decode() if isinstance(config, bytes) else config
    file.attrs['model_config'] = config.replace('"Maximum"', '"MyMaximum"')
  with pytest.raises(
    ValueError,
    match=r"from_keras: MyMaximum layer 'maximum' of file '.*functional_graph"
    r".h5' is not covered; .*fd.register_keras_layer\('MyMaximum',",
  ):
    fd.from_keras(path)


def test_weight_that_disagrees_with_the_config(tmp_path):
  path = copy(tmp_path, 'functional_locally_connected.h5')
  with h5py.File(path, 'a') as file:
    group = file['model_weights/head/head']
    del group['bias:0']
    group['bias:0'] = np.zeros((7,), np.float32)
  with pytest.raises(
    ValueError,
    match=r"from_keras: Dense layer 'head' of file"
    r" '.*functional_locally_connected.h5' has weights that do not fit",
  ):
    fd.from_keras(path)


# --- Keras 3 weights-only files ---------------------------------------------


@pytest.mark.parametrize('api', ['linen', 'nnx'])
def test_load_keras_weights(api, tmp_path):
  model = build(branches_one_output)
  path = tmp_path / 'x.weights.h5'
  model.save_weights(path)
  fresh = build(branches_one_output, seed=1)
  x = inputs_for([(4, 6)])
  with jax.numpy_rank_promotion('allow'):
    want = np.asarray(model(x[0]))
  if api == 'linen':
    module, variables = fd.from_keras(fresh)
    loaded = fd.load_keras_weights(variables, path)
    assert_same(module.apply(loaded, *x), want)
    with pytest.raises(AssertionError):
      assert_same(module.apply(variables, *x), want)
  else:
    twin = fd.from_keras(fresh, api='nnx')
    assert fd.load_keras_weights(twin, path) is twin
    assert_same(twin(*x), want)


def test_load_keras_weights_errors(tmp_path):
  _, variables = fd.from_keras(FIXTURES / 'functional.h5')
  variables['params']['dense']['kernel'] = np.zeros((4, 6))
  with pytest.raises(
    ValueError,
    match=r"load_keras_weights: .*keras3.weights.h5.*: layer 'dense' holds"
    r' weights of shapes \[\(4, 5\), \(5,\)\]',
  ):
    fd.load_keras_weights(variables, FIXTURES / 'keras3.weights.h5')
  with pytest.raises(ValueError, match=r'they must be the same'):
    fd.load_keras_weights({'params': {}}, FIXTURES / 'keras3.weights.h5')
  with pytest.raises(TypeError, match=r'load_keras_weights: expected'):
    fd.load_keras_weights([1], FIXTURES / 'keras3.weights.h5')


# --- keras.ops calls, uncovered layers, boolean arguments (issue 21). -----


def ops_graph():
  a, b = keras.Input((5, 3), name='a'), keras.Input((5, 3), name='b')
  shared = layers.Dense(3, name='shared')
  left = shared(layers.Masking(0.0, name='mask_a')(a))
  product = keras.ops.multiply(left, b)
  difference = keras.ops.subtract(product, keras.ops.maximum(shared(b), a))
  total = keras.ops.add(keras.ops.minimum(difference, left), a)
  pooled = layers.GlobalAveragePooling1D(name='pool')(total)
  return keras.Model([a, b], pooled)


def test_keras_ops_on_two_tensors_import_and_ignore_masks():
  model = build(ops_graph)
  a, b = random((2, 5, 3), 1, padded=2), random((2, 5, 3), 2)
  with jax.numpy_rank_promotion('allow'):  # Keras's Dense adds its bias so
    want = np.asarray(model([a, b]))
    module, variables = fd.from_keras(model)
    exported = fd.to_keras_model(module, variables, input_shape=[(5, 3)] * 2)
    exported_outputs = exported.predict([a, b], verbose=0)
  np.testing.assert_allclose(
    module.apply(variables, a, b), want, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(exported_outputs, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'call, operation',
  [
    (lambda x: keras.ops.add(x, 1.0), 'Add'),
    (keras.ops.tanh, 'Tanh'),
    (lambda x: keras.ops.sum(x, axis=-1), 'Sum'),
  ],
)
def test_other_keras_ops_are_refused_naming_the_op(call, operation):
  inputs = keras.Input((4,))
  model = keras.Model(inputs, call(layers.Dense(3, name='dense')(inputs)))
  with pytest.raises(ValueError) as error:
    fd.from_keras(model)
  message = str(error.value)
  assert f'keras.src.ops.numpy.{operation}' in message
  assert 'calls the Keras operation' in message


def test_uncovered_layer_with_non_trainable_weights_gets_the_advice():
  model = keras.Sequential([keras.Input((3,)), layers.BatchNormalization()])
  with pytest.raises(ValueError) as error:
    fd.from_keras(model)
  assert "register_keras_layer('BatchNormalization'" in str(error.value)


def test_boolean_arguments_of_the_containers_must_be_bools():
  module, variables = fd.from_keras(build(two_inputs_shared_and_merges))
  a, b = random((2, 5, 3), 1), random((2, 5, 3), 2)
  with pytest.raises(TypeError, match='KerasFunctional: deterministic'):
    module.apply(variables, a, b, deterministic='False')
  odd = module.clone(single_output='False')
  with pytest.raises(TypeError, match='KerasFunctional: single_output'):
    odd.apply(variables, a, b)
  chain = fd.KerasSequential((fd.Dropout(0.5),))
  with pytest.raises(TypeError, match='KerasSequential: deterministic'):
    chain.apply({}, a, deterministic='False')
