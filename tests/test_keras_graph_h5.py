"""fd.from_keras('model.h5'): legacy tf.keras models, h5py only.

The fixtures were written by tf.keras 2.21 (``fixtures/make_keras2_h5.py``)
with their inputs and ``predict`` outputs: Sequential and functional
configs, a graph with two masked inputs, a shared layer, every merge layer
and five outputs, and LocallyConnected1D of both kinds inside a branching
graph. The imported modules must give tf.keras's outputs, for linen and
NNX, without TensorFlow or Keras.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_dense as fd

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
MODELS = {
  'sequential': fd.KerasSequential,
  'functional': fd.KerasSequential,  # a chain
  'functional_graph': fd.KerasFunctional,
  'functional_locally_connected': fd.KerasFunctional,
  'locally_connected_k1': fd.KerasFunctional,
  'locally_connected_k3s2': fd.KerasFunctional,
  'locally_connected_k3s2_channels_first': fd.KerasFunctional,
  # TimeDistributed of LocallyConnected1D (both kinds) and Flatten.
  'time_distributed': fd.KerasSequential,
}


def fixture(name):
  """``(inputs, outputs)`` of a fixture, in the model's order."""
  with h5py.File(FIXTURES / f'{name}.h5') as file:
    config = json.loads(file.attrs['model_config'])['config']
  arrays = np.load(FIXTURES / f'{name}.npz')
  if 'inputs' in arrays:
    inputs = [arrays['inputs']]
  else:
    inputs = [arrays[f'inputs/{name}'] for name, _, _ in config['input_layers']]
  if 'outputs' in arrays:
    outputs = [arrays['outputs']]
  else:
    outputs = [
      arrays[f'outputs/{name}'] for name, _, _ in config['output_layers']
    ]
  return inputs, outputs


def as_list(outputs):
  return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def assert_outputs(got, want):
  got = as_list(got)
  assert len(got) == len(want)
  for index, (a, b) in enumerate(zip(got, want, strict=True)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg=index)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_tf_keras_file_gives_tf_keras_outputs(name):
  module, variables = fd.from_keras(FIXTURES / f'{name}.h5')
  assert type(module) is MODELS[name]
  inputs, outputs = fixture(name)
  assert_outputs(module.apply(variables, *inputs), outputs)
  nnx_model = fd.from_keras(str(FIXTURES / f'{name}.h5'), api='nnx')
  assert_outputs(nnx_model(*inputs), outputs)


def test_shared_layer_of_a_file_has_one_set_of_weights():
  _, variables = fd.from_keras(FIXTURES / 'functional_graph.h5')
  weights = np.load(FIXTURES / 'functional_graph.npz')
  assert sorted(variables['params']) == ['per_step_td', 'shared']
  np.testing.assert_array_equal(
    variables['params']['shared']['kernel'], weights['weights/shared/0']
  )


def test_graph_fixture_tells_keras_2_masks_from_keras_3_masks():
  # tf.keras ANDs the masks of a merge's inputs, Keras 3 ORs them: the
  # fixture's inputs are masked at different steps, so the two differ and
  # the pooled outputs compared above depend on which one is used.
  (a, b), _ = fixture('functional_graph')
  keep_a, keep_b = np.any(a != 0, axis=-1), np.any(b != 0, axis=-1)
  assert ((keep_a & keep_b) != (keep_a | keep_b)).any()


def test_locally_connected_in_a_graph_becomes_both_layers():
  module, variables = fd.from_keras(
    FIXTURES / 'functional_locally_connected.h5'
  )
  shapes = jax.tree.map(jnp.shape, variables['params'])
  # kernel_size 3, strides 2 (implementation 2): LocallyConnected1D, 4
  # windows of 3 steps of 5 features; kernel_size 1 (implementation 3):
  # PerPositionDense, one (5, 2) kernel per step.
  assert shapes['windows'] == {'bias': (4, 3), 'kernel': (4, 15, 3)}
  assert shapes['positions'] == {'bias': (9, 2), 'kernel': (9, 5, 2)}
  kinds = {type(layer).__name__ for layer in module.layers}
  assert {'LocallyConnected1D', 'PerPositionDense'} <= kinds


def test_h5_import_needs_neither_tensorflow_nor_keras():
  # Both blocked: importing either raises ImportError in the child.
  script = textwrap.dedent(
    f"""
    import sys
    sys.modules['keras'] = None
    sys.modules['tensorflow'] = None
    sys.modules['tf_keras'] = None
    import numpy as np
    import flax_dense as fd
    fixtures = {str(FIXTURES)!r}
    for name in (
      'functional_graph', 'functional_locally_connected', 'time_distributed'
    ):
      module, variables = fd.from_keras(f'{{fixtures}}/{{name}}.h5')
      fd.from_keras(f'{{fixtures}}/{{name}}.h5', api='nnx')
    module, variables = fd.from_keras(f'{{fixtures}}/functional.h5')
    fd.load_keras_weights(variables, f'{{fixtures}}/keras3.weights.h5')
    loaded = [
      m for m, module in sys.modules.items()
      if m.split('.')[0] in ('keras', 'tensorflow', 'tf_keras') and module
    ]
    print('imported', loaded)
    """
  )
  result = subprocess.run(
    [sys.executable, '-c', script], capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'imported []' in result.stdout


def test_keras3_weights_file_loads_into_an_imported_model():
  module, variables = fd.from_keras(FIXTURES / 'functional.h5')
  zeros = jax.tree.map(jnp.zeros_like, variables)
  loaded = fd.load_keras_weights(zeros, FIXTURES / 'keras3.weights.h5')
  inputs, outputs = fixture('functional')
  assert_outputs(module.apply(loaded, *inputs), outputs)
  # The given variables are left alone.
  assert all(not leaf.any() for leaf in jax.tree.leaves(zeros))
  nnx_model = fd.from_keras(FIXTURES / 'functional.h5', api='nnx')
  same = fd.load_keras_weights(nnx_model, FIXTURES / 'keras3.weights.h5')
  assert same is nnx_model
  assert_outputs(nnx_model(*inputs), outputs)


# --- Bad input: one clear error naming the file (and layer). --------------


def copy(tmp_path, name):
  path = tmp_path / name
  shutil.copy(FIXTURES / name, path)
  return path


def edit_config(path, edit):
  with h5py.File(path, 'a') as file:
    config = json.loads(file.attrs['model_config'])
    edit(config['config']['layers'])
    file.attrs['model_config'] = json.dumps(config)


def layer(layers, name):
  return next(entry for entry in layers if entry['config']['name'] == name)


def assert_our_error(error):
  assert error.value.__cause__ is None
  assert error.value.__suppress_context__ or error.value.__context__ is None


def test_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nothing.h5'):
    fd.from_keras(tmp_path / 'nothing.h5')


@pytest.mark.parametrize('fraction', [0.0, 0.3, 0.9])
def test_truncated_file(tmp_path, fraction):
  path = copy(tmp_path, 'functional_graph.h5')
  path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])
  with pytest.raises(ValueError, match='functional_graph.h5') as error:
    fd.from_keras(path)
  assert_our_error(error)


def test_weights_only_file_where_a_model_is_expected():
  with pytest.raises(ValueError, match='keras3.weights.h5.* weights-only'):
    fd.from_keras(FIXTURES / 'keras3.weights.h5')


def test_model_file_where_weights_are_expected():
  _, variables = fd.from_keras(FIXTURES / 'functional.h5')
  with pytest.raises(ValueError, match='functional_graph.h5.* whole-model'):
    fd.load_keras_weights(variables, FIXTURES / 'functional_graph.h5')


def test_weights_of_another_model(tmp_path):
  _, variables = fd.from_keras(FIXTURES / 'functional_graph.h5')
  with pytest.raises(ValueError, match='keras3.weights.h5') as error:
    fd.load_keras_weights(variables, FIXTURES / 'keras3.weights.h5')
  assert_our_error(error)


def test_keras_1_file(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  with h5py.File(path, 'a') as file:
    file.attrs['keras_version'] = '1.2.2'
  with pytest.raises(ValueError, match='functional_graph.h5.*Keras 1'):
    fd.from_keras(path)


def test_unknown_layer_names_the_file_the_layer_and_the_fix(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  edit_config(
    path, lambda layers: layer(layers, 'dot').update(class_name='Conv1D')
  )
  with pytest.raises(ValueError) as error:
    fd.from_keras(path)
  message = str(error.value)
  assert "Conv1D layer 'dot'" in message
  assert 'functional_graph.h5' in message
  assert 'register_keras_layer' in message


def test_layer_without_class_name_names_the_file_and_the_layer(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  edit_config(path, lambda layers: layer(layers, 'dot').pop('class_name'))
  with pytest.raises(ValueError) as error:
    fd.from_keras(path)
  message = str(error.value)
  assert "layer 'dot'" in message
  assert 'functional_graph.h5' in message
  assert 'no class_name' in message
  assert_our_error(error)


def test_weight_shape_that_disagrees_with_the_config(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  edit_config(
    path, lambda layers: layer(layers, 'shared')['config'].update(units=7)
  )
  with pytest.raises(
    ValueError, match=r"'shared' of file '.*functional_graph.h5'"
  ) as error:
    fd.from_keras(path)
  assert_our_error(error)


def test_inbound_node_of_an_unknown_layer(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')

  def rewire(layers):
    layer(layers, 'add')['inbound_nodes'][0][0][0] = 'nowhere'

  edit_config(path, rewire)
  with pytest.raises(
    ValueError, match=r"functional_graph.h5.*'nowhere'"
  ) as error:
    fd.from_keras(path)
  assert_our_error(error)


# --- Nothing dropped, nothing silently wrong (issue 21). ------------------


def rewrite(path, edit):
  """Replaces the file's model_config by ``edit(model_config)``."""
  with h5py.File(path, 'a') as file:
    config = json.loads(file.attrs['model_config'])
    file.attrs['model_config'] = json.dumps(edit(config))


def with_config(model_config, **config):
  return {**model_config, 'config': {**model_config['config'], **config}}


def assert_refused(path, match, kind=ValueError):
  with pytest.raises(kind) as error:
    fd.from_keras(path)
  assert str(path.name) in str(error.value)
  assert re.search(match, str(error.value)), str(error.value)
  assert_our_error(error)


@pytest.mark.parametrize(
  'edit, match',
  [
    (lambda c: {'class_name': c['class_name']}, 'has config null'),
    (lambda c: with_config(c, layers=[]), 'has layers'),
    (lambda c: with_config(c, layers={}), 'has layers'),
    (lambda c: with_config(c, layers=c['config']['layers'][:1]), 'InputLayer'),
    (lambda c: [c], 'is a JSON list'),
    (lambda c: {**c, 'config': 'sequential'}, 'has config string'),
    (lambda c: with_config(c, layers=['dense']), 'layer 0 a JSON string'),
    (
      lambda c: with_config(
        c, layers=[{**c['config']['layers'][0], 'config': []}]
      ),
      'layer 0 without a name',
    ),
  ],
)
def test_sequential_config_of_the_wrong_shape(tmp_path, edit, match):
  path = copy(tmp_path, 'sequential.h5')
  rewrite(path, edit)
  assert_refused(path, match)


def test_two_layers_of_one_name(tmp_path):
  path = copy(tmp_path, 'sequential.h5')

  def rename(config):
    config['config']['layers'][3]['config']['name'] = 'dense'  # the dropout
    return config

  rewrite(path, rename)
  assert_refused(path, "two layers named 'dense'")


@pytest.mark.parametrize(
  'key, value, match',
  [
    ('output_layers', [], 'has output_layers'),
    ('input_layers', [], 'has input_layers'),
    ('output_layers', 'dot', 'has output_layers'),
    ('output_layers', [['dot', 0]], 'has output_layers'),
    ('output_layers', [['nowhere', 0, 0]], r"naming no layer.*'nowhere'"),
    ('input_layers', {'a': ['a', 0, 0]}, r'made by no layer|takes'),
  ],
)
def test_functional_endpoints_of_the_wrong_shape(tmp_path, key, value, match):
  path = copy(tmp_path, 'functional_graph.h5')
  rewrite(path, lambda c: with_config(c, **{key: value}))
  assert_refused(path, match)


def test_layer_config_that_is_not_an_object(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  edit_config(path, lambda layers: layer(layers, 'add').update(config=[]))
  assert_refused(path, "layer 'add' with config list")


def test_inbound_node_of_the_wrong_shape(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  edit_config(
    path, lambda layers: layer(layers, 'add').update(inbound_nodes=['add'])
  )
  assert_refused(path, 'not one Keras writes')


def test_weights_no_output_needs_are_refused(tmp_path):
  path = copy(tmp_path, 'functional_graph.h5')
  rewrite(
    path,
    lambda c: with_config(c, output_layers=[['joined_pool', 0, 0]]),
  )
  assert_refused(path, r"\['per_step_td'\].*would be dropped")


def test_weights_of_a_weightless_layer_class_are_refused(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  edit_config(
    path, lambda layers: layer(layers, 'dense').update(class_name='Masking')
  )
  assert_refused(path, r"\['dense'\].*would be dropped")


def test_weights_of_a_layer_the_config_lacks_are_refused(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  layers_before = 5

  def drop_dense(config):
    layers = config['config']['layers']
    assert len(layers) == layers_before + 1
    return with_config(
      config, layers=[e for e in layers if e['class_name'] != 'Dense']
    )

  rewrite(path, drop_dense)
  assert_refused(path, r"weights for the layers \['dense'\]")


def test_trainable_that_is_not_a_bool(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  edit_config(
    path,
    lambda layers: layer(layers, 'dense')['config'].update(trainable='False'),
  )
  assert_refused(
    path, "layer 'dense'.*trainable must be True or False", TypeError
  )


def test_model_config_that_is_not_utf8(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  with h5py.File(path, 'a') as file:
    text = file.attrs['model_config']
    text = text.encode() if isinstance(text, str) else text
    file.attrs['model_config'] = np.bytes_(text.replace(b'dense', b'd\xffnse'))
  assert_refused(path, 'not UTF-8')


def test_weights_shaped_for_another_input_name_the_file_and_layer(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  edit_config(
    path,
    lambda layers: layers[0]['config'].update(batch_input_shape=[None, 6, 7]),
  )
  assert_refused(path, r"Dense layer 'dense' of file .* cannot take inputs")


def test_big_endian_weights_are_read_in_native_order(tmp_path):
  path = copy(tmp_path, 'sequential.h5')
  with h5py.File(path, 'a') as file:
    group = file['model_weights/dense/dense']
    for name in list(group):
      value = group[name][()]
      del group[name]
      group.create_dataset(name, data=value.astype('>f4'))
      assert group[name].dtype.byteorder == '>'
  module, variables = fd.from_keras(path)
  assert variables['params']['dense']['kernel'].dtype == jnp.float32
  inputs, outputs = fixture('sequential')
  assert_outputs(module.apply(variables, *inputs), outputs)


@pytest.mark.parametrize('name, count', [('add', 0), ('subtract', 3)])
def test_merge_called_on_a_wrong_number_of_tensors(tmp_path, name, count):
  path = copy(tmp_path, 'functional_graph.h5')
  edit_config(
    path,
    lambda layers: layer(layers, name).update(
      inbound_nodes=[[['shared', 0, 0, {}]] * count]
    ),
  )
  assert_refused(path, f"layer '{name}' .* called on {count} tensors")
