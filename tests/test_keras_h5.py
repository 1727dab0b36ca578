"""The h5py reader of Keras HDF5 files, and LocallyConnected1D's layouts.

The fixtures in ``fixtures/`` were written by tf.keras 2.21 and Keras 3
(``fixtures/README.md``); each ``.npz`` holds the model's ``get_weights()``
and ``predict`` outputs, the independent reference for what is read here.
"""

import itertools
import pathlib
import re
import shutil
import sys

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd
from flax_dense._src.keras.h5 import read_keras_h5, read_keras_weights_h5
from flax_dense._src.registry.locally_connected import (
  locally_connected1d_weights,
)

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
MODELS = [
  'sequential',
  'functional',
  'locally_connected_k1',
  'locally_connected_k3s2',
  'locally_connected_k3s2_channels_first',
]
LOCALLY_CONNECTED = MODELS[2:]
IMPLEMENTATIONS = ['impl1', 'impl2', 'impl3', 'impl3_no_bias']


def npz_weights(name):
  """``{layer: [arrays]}`` from the fixture's ``get_weights()``."""
  fixture = np.load(FIXTURES / f'{name}.npz')
  weights = {}
  for key in sorted(k for k in fixture.files if k.startswith('weights/')):
    _, layer, index = key.split('/')
    weights.setdefault(layer, {})[int(index)] = fixture[key]
  return {
    layer: [arrays[i] for i in sorted(arrays)]
    for layer, arrays in weights.items()
  }


def layer_configs(model_config):
  return {
    layer['config']['name']: layer for layer in model_config['config']['layers']
  }


def assert_same_weights(got, want):
  assert got.keys() == want.keys()
  for name in want:
    assert len(got[name]) == len(want[name]), name
    for a, b in zip(got[name], want[name], strict=True):
      assert a.dtype == b.dtype and a.shape == b.shape, name
      np.testing.assert_array_equal(a, b)


# --- reading ---------------------------------------------------------------


@pytest.mark.parametrize('name', MODELS)
def test_reads_config_and_weights_of_tf_keras_models(name):
  model_config, weights, version = read_keras_h5(FIXTURES / f'{name}.h5')
  assert version.startswith('2.')
  assert model_config['config']['name'] == name
  configs = layer_configs(model_config)
  # Every layer of the file, in the model's order; weightless ones too.
  assert list(weights) == [n for n in configs if n in weights]
  with_weights = npz_weights(name)
  assert_same_weights(
    {n: w for n, w in weights.items() if w},
    with_weights,
  )
  assert all(weights[n] == [] for n in weights if n not in with_weights)


def test_sequential_model_layers():
  model_config, weights, _ = read_keras_h5(str(FIXTURES / 'sequential.h5'))
  assert model_config['class_name'] == 'Sequential'
  assert [
    layer['class_name'] for layer in model_config['config']['layers']
  ] == [
    'InputLayer',
    'Masking',
    'Dense',
    'Dropout',
    'LocallyConnected1D',
    'TimeDistributed',
  ]
  assert list(weights) == [
    'masking',
    'dense',
    'dropout',
    'locally_connected1d',
    'time_distributed',
  ]
  # A wrapper lists the weights of the layer it wraps.
  assert [w.shape for w in weights['time_distributed']] == [(4, 3), (3,)]


def test_weights_only_tf_keras_file_equals_the_whole_model():
  weights, version = read_keras_weights_h5(FIXTURES / 'sequential_weights.h5')
  _, model_weights, model_version = read_keras_h5(FIXTURES / 'sequential.h5')
  assert version == model_version
  assert_same_weights(weights, model_weights)


def test_keras3_weights_file_equals_its_tf_keras_twin():
  weights, version = read_keras_weights_h5(FIXTURES / 'keras3.weights.h5')
  assert version == '3'
  _, tf_keras_weights, _ = read_keras_h5(FIXTURES / 'functional.h5')
  assert sorted(weights) == sorted(tf_keras_weights)
  assert_same_weights(
    weights, {name: tf_keras_weights[name] for name in weights}
  )


def test_sequential_fixture_outputs_from_the_weights_read():
  # The whole chain by hand: Masking (zeroes masked steps), Dense on 3-D
  # input, Dropout (inference), LocallyConnected1D, TimeDistributed(Dense).
  _, weights, _ = read_keras_h5(FIXTURES / 'sequential.h5')
  fixture = np.load(FIXTURES / 'sequential.npz')
  x = np.asarray(fixture['inputs'], np.float64)
  x = x * np.any(x != 0, axis=-1, keepdims=True)
  kernel, bias = weights['dense']
  x = np.tanh(x @ kernel + bias)
  kernel, bias = weights['locally_connected1d']
  x = fd.LocallyConnected1D(4, 3, strides=2, activation='tanh').apply(
    {'params': {'kernel': kernel, 'bias': bias}}, x.astype(np.float32)
  )
  kernel, bias = weights['time_distributed']
  logits = np.asarray(x, np.float64) @ kernel + bias
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  np.testing.assert_allclose(
    probabilities, fixture['outputs'], rtol=1e-5, atol=1e-6
  )


def test_reading_imports_no_tensorflow():
  read_keras_h5(FIXTURES / 'locally_connected_k3s2.h5')
  read_keras_weights_h5(FIXTURES / 'keras3.weights.h5')
  assert 'tensorflow' not in sys.modules
  assert 'tf_keras' not in sys.modules


# --- LocallyConnected1D from the files -------------------------------------


def input_shape(model_config):
  """``(input_length, in_features)`` from the model's InputLayer config."""
  layer = model_config['config']['layers'][0]
  assert layer['class_name'] == 'InputLayer'
  return tuple(layer['config']['batch_input_shape'][1:])


@pytest.mark.parametrize(
  'name,layer_name',
  [(name, layer) for name in LOCALLY_CONNECTED for layer in IMPLEMENTATIONS],
)
def test_locally_connected_weights_reproduce_tf_keras(name, layer_name):
  model_config, weights, _ = read_keras_h5(FIXTURES / f'{name}.h5')
  config = layer_configs(model_config)[layer_name]['config']
  fixture = np.load(FIXTURES / f'{name}.npz')
  shape = input_shape(model_config)
  if config['data_format'] == 'channels_first':
    shape = shape[::-1]
  input_length, in_features = shape
  kernel, *bias = locally_connected1d_weights(
    weights[layer_name],
    config['implementation'],
    input_length,
    in_features,
    config['kernel_size'],
    config['strides'],
    config['filters'],
    config['data_format'],
  )
  options = dict(
    strides=config['strides'],
    data_format=config['data_format'],
    activation=config['activation'],
    use_bias=config['use_bias'],
  )
  assert bool(bias) == config['use_bias']
  params = {'kernel': kernel, **({'bias': bias[0]} if bias else {})}
  layer = fd.LocallyConnected1D(
    config['filters'], config['kernel_size'], **options
  )
  want = fixture[f'outputs/{layer_name}']
  np.testing.assert_allclose(
    layer.apply({'params': params}, fixture['inputs']),
    want,
    rtol=1e-5,
    atol=1e-6,
  )
  twin = fd.nnx.LocallyConnected1D(
    input_length,
    in_features,
    config['filters'],
    config['kernel_size'],
    rngs=nnx.Rngs(0),
    **options,
  )
  nnx.update(twin, nnx.State(params))
  np.testing.assert_allclose(
    twin(jnp.asarray(fixture['inputs'])), want, rtol=1e-5, atol=1e-6
  )


def keras_layouts(kernel, input_length, kernel_size, strides, data_format):
  """Implementation 2's and 3's kernels from implementation 1's, by loops.

  Transcribes tf-keras: implementation 2 puts ``kernel[o, feature, f]`` at
  input step ``o * strides + j`` of a dense kernel whose other entries are
  masked out (filled with noise here, which must be ignored);
  implementation 3 lists the values of the sparse (output, input) matrix
  in the order of ``sorted(conv_kernel_idxs(...))``.
  """
  length, window_features, filters = kernel.shape
  in_features = window_features // kernel_size
  channels_first = data_format == 'channels_first'
  dense_shape = (
    (in_features, input_length, filters, length)
    if channels_first
    else (input_length, in_features, length, filters)
  )
  dense = np.random.default_rng(1).normal(size=dense_shape)
  entries = []
  for o, j, d, f in itertools.product(
    range(length), range(kernel_size), range(in_features), range(filters)
  ):
    step = o * strides + j
    if channels_first:
      value = kernel[o, d * kernel_size + j, f]
      dense[d, step, f, o] = value
      key = (f * length + o, d * input_length + step)
    else:
      value = kernel[o, j * in_features + d, f]
      dense[step, d, o, f] = value
      key = (o * filters + f, step * in_features + d)
    entries.append((key, value))
  sparse = np.array([value for _, value in sorted(entries)])
  return dense, sparse


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
@pytest.mark.parametrize(
  'input_length,in_features,kernel_size,strides,filters',
  [(9, 4, 3, 2, 3), (5, 2, 1, 1, 4), (7, 3, 7, 1, 2), (10, 1, 2, 3, 5)],
)
def test_converter_inverts_keras_layouts(
  input_length, in_features, kernel_size, strides, filters, data_format
):
  length = (input_length - kernel_size) // strides + 1
  rng = np.random.default_rng(0)
  kernel = rng.normal(size=(length, kernel_size * in_features, filters))
  bias = rng.normal(size=(length, filters))
  dense, sparse = keras_layouts(
    kernel, input_length, kernel_size, strides, data_format
  )
  for implementation, stored in ((1, kernel), (2, dense), (3, sparse)):
    got = locally_connected1d_weights(
      [stored, bias],
      implementation,
      input_length,
      in_features,
      kernel_size,
      strides,
      filters,
      data_format,
    )
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], kernel)
    np.testing.assert_array_equal(got[1], bias)
  # Without bias, sizes as Keras's tuples of one.
  (alone,) = locally_connected1d_weights(
    [sparse],
    3,
    input_length,
    in_features,
    (kernel_size,),
    [strides],
    filters,
    data_format,
  )
  np.testing.assert_array_equal(alone, kernel)


@pytest.mark.parametrize(
  'weights,implementation,message',
  [
    (
      [np.zeros((4, 12, 3))],
      4,
      r'locally_connected1d_weights: implementation must be one of'
      r' \(1, 2, 3\), got 4',
    ),
    (
      [np.zeros((9, 4, 5, 3))],
      2,
      r'implementation=2 kernel of a layer with input_length=9,'
      r' in_features=4, kernel_size=3, strides=2, filters=3,'
      r" data_format='channels_last' and padding='valid' must have shape"
      r' \(9, 4, 4, 3\), got \(9, 4, 5, 3\)',
    ),
    ([np.zeros((143,))], 3, r'must have shape \(144,\), got \(143,\)'),
    (
      [np.zeros((4, 12, 3)), np.zeros((3, 4))],
      1,
      r'the bias must have shape \(4, 3\) \(output_length, filters\), got'
      r' \(3, 4\)',
    ),
    ([np.zeros((4, 12, 3))] * 3, 1, r'got 3 arrays'),
    (np.zeros((4, 12, 3)), 1, r'must be the list \[kernel, bias\]'),
  ],
)
def test_converter_errors(weights, implementation, message):
  with pytest.raises(ValueError, match=message):
    locally_connected1d_weights(weights, implementation, 9, 4, 3, 2, 3)


def test_converter_argument_errors():
  kernel = [np.zeros((4, 12, 3))]
  with pytest.raises(ValueError, match=r'input_length must be a positive'):
    locally_connected1d_weights(kernel, 1, 0, 4, 3, 2, 3)
  with pytest.raises(ValueError, match=r'data_format must be one of'):
    locally_connected1d_weights(kernel, 1, 9, 4, 3, 2, 3, 'NWC')
  with pytest.raises(
    ValueError,
    match=r'locally_connected1d_weights: 2 input steps are fewer than'
    r' kernel_size=3',
  ):
    locally_connected1d_weights(kernel, 1, 2, 4, 3, 2, 3)


# --- errors reading files ---------------------------------------------------


def copy(tmp_path, name):
  path = tmp_path / name
  shutil.copy(FIXTURES / name, path)
  return path


def assert_our_error(error):
  """Our own message, with no h5py or KeyError traceback chained to it."""
  assert error.value.__cause__ is None
  assert error.value.__suppress_context__ or error.value.__context__ is None


@pytest.mark.parametrize('read', [read_keras_h5, read_keras_weights_h5])
def test_missing_file(read, tmp_path):
  path = tmp_path / 'nothing.h5'
  with pytest.raises(
    FileNotFoundError, match=rf'{read.__name__}: no such file .*nothing.h5'
  ):
    read(path)


@pytest.mark.parametrize('read', [read_keras_h5, read_keras_weights_h5])
@pytest.mark.parametrize('fraction', [0.0, 0.01, 0.5, 0.99])
def test_truncated_file(read, fraction, tmp_path):
  path = copy(tmp_path, 'locally_connected_k3s2.h5')
  data = path.read_bytes()
  path.write_bytes(data[: int(len(data) * fraction)])
  with pytest.raises(
    ValueError,
    match=rf'{read.__name__}: .*locally_connected_k3s2.h5.* is not a readable'
    r' HDF5 file \(not HDF5, or truncated or corrupt\)',
  ) as error:
    read(path)
  assert_our_error(error)


@pytest.mark.parametrize('read', [read_keras_h5, read_keras_weights_h5])
def test_not_an_hdf5_file(read, tmp_path):
  path = tmp_path / 'model.h5'
  path.write_text('{"class_name": "Sequential"}')
  with pytest.raises(ValueError, match=r'is not a readable HDF5 file'):
    read(path)


def test_corrupt_file(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  data = bytearray(path.read_bytes())
  data[2048:-2048] = b'\xff' * (len(data) - 4096)
  path.write_bytes(bytes(data))
  with pytest.raises(
    ValueError, match=r"read_keras_h5: (cannot read )?'.*sequential.h5'"
  ) as error:
    read_keras_h5(path)
  assert_our_error(error)


@pytest.mark.parametrize('name', ['sequential_weights.h5', 'keras3.weights.h5'])
def test_weights_only_file_where_a_model_is_expected(name):
  with pytest.raises(
    ValueError,
    match=rf'read_keras_h5: .*{name}.* is a weights-only file .*'
    r' read it with read_keras_weights_h5',
  ):
    read_keras_h5(FIXTURES / name)


def test_model_file_where_weights_are_expected():
  with pytest.raises(
    ValueError,
    match=r'read_keras_weights_h5: .*sequential.h5.* is a whole-model file'
    r' .*read it with read_keras_h5',
  ):
    read_keras_weights_h5(FIXTURES / 'sequential.h5')


@pytest.mark.parametrize('read', [read_keras_h5, read_keras_weights_h5])
def test_hdf5_file_that_is_not_keras(read, tmp_path):
  path = tmp_path / 'data.h5'
  with h5py.File(path, 'w') as file:
    file['x'] = np.zeros(3)
  with pytest.raises(ValueError, match=r'is an HDF5 file but not'):
    read(path)


@pytest.mark.parametrize(
  'name,read',
  [
    ('sequential.h5', read_keras_h5),
    ('sequential_weights.h5', read_keras_weights_h5),
  ],
)
@pytest.mark.parametrize('version', ['1.2.2', None])
def test_keras_1_file(name, read, version, tmp_path):
  path = copy(tmp_path, name)
  with h5py.File(path, 'a') as file:
    if version is None:  # Keras reads a file without a version as Keras 1.
      del file.attrs['keras_version']
    else:
      file.attrs['keras_version'] = version
  with pytest.raises(
    ValueError,
    match=rf'{read.__name__}: .*{name}.* was written by Keras'
    rf' {version or 1} \(Keras 1\).*save it again',
  ):
    read(path)


def re_shape(shape):
  """A regular expression matching ``str(shape)``."""
  return re.escape(str(tuple(shape)))


@pytest.mark.parametrize(
  'layer,shape,implementation',
  [
    ('impl1', (4, 12, 2), 1),  # filters 2, config says 3
    ('impl1', (4, 10, 3), 1),  # 10 features is no multiple of kernel_size 3
    ('impl2', (9, 4, 5, 3), 2),  # 5 output steps, the config gives 4
    ('impl3', (143,), 3),
  ],
)
def test_weight_shape_that_disagrees_with_the_config(
  layer, shape, implementation, tmp_path
):
  path = copy(tmp_path, 'locally_connected_k3s2.h5')
  with h5py.File(path, 'a') as file:
    group = file[f'model_weights/{layer}/{layer}']
    del group['kernel:0']
    group['kernel:0'] = np.zeros(shape, np.float32)
  with pytest.raises(
    ValueError,
    match=rf"from_keras: LocallyConnected1D layer '{layer}' of file"
    rf" '.*locally_connected_k3s2.h5' \(implementation={implementation}\)"
    rf' has weights of shapes \[{re_shape(shape)}, \(4, 3\)\] that do not'
    r' fit its config',
  ) as error:
    fd.from_keras(path)
  assert_our_error(error)


def test_dense_weight_shape_that_disagrees_with_the_config(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  with h5py.File(path, 'a') as file:
    group = file['model_weights/dense/dense']
    del group['bias:0']
    group['bias:0'] = np.zeros((6,), np.float32)
  with pytest.raises(
    ValueError,
    match=r"from_keras: Dense layer 'dense' of file '.*sequential.h5' has"
    r' weights that do not fit: .*the bias of a kernel of shape \(4, 5\)'
    r' must have shape \(5,\), got \(6,\)',
  ):
    fd.from_keras(path)


def test_damaged_weights_group(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  with h5py.File(path, 'a') as file:
    del file['model_weights/dense/dense/kernel:0']
  with pytest.raises(
    ValueError,
    match=r"layer 'dense' lists weight 'dense/kernel:0' but the file holds"
    r' no such dataset',
  ):
    read_keras_h5(path)
  with h5py.File(path, 'a') as file:
    del file['model_weights/dense']
  with pytest.raises(
    ValueError, match=r"lists layer 'dense' in layer_names but holds no"
  ):
    read_keras_h5(path)


def test_model_config_that_is_not_json(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  with h5py.File(path, 'a') as file:
    file.attrs['model_config'] = '{"class_name": '
  with pytest.raises(ValueError, match=r'model_config is not valid JSON'):
    read_keras_h5(path)
