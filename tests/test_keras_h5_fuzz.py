"""fd.from_keras on .h5 files whose model_config JSON has the wrong shape.

An independent probe: starting from the tf.keras fixtures, hypothesis
rewrites the ``model_config`` (a value of another JSON type at any level, a
key removed, a list emptied, a layer repeated or renamed to another's name,
bytes that are not UTF-8). Each import must either succeed with every
weight of the file in the variables, or raise our own ``ValueError`` /
``TypeError`` naming the file: never ``KeyError``, ``AttributeError``,
``IndexError``, nor an error of h5py, JAX or Flax.
"""

import copy
import json
import pathlib
import shutil
import tempfile

import h5py
import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import flax_dense as fd
from flax_dense._src.keras.h5 import read_keras_h5

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
FILES = ('sequential.h5', 'functional_graph.h5')

#: Values of every JSON type, and a few Keras would never write.
ODD_VALUES = (
  None,
  0,
  -1,
  7,
  10**12,
  1.5,
  True,
  'x',
  '',
  'False',
  [],
  {},
  [None],
  [[]],
  {'a': 1},
  ['dense', 0, 0],
  [['shared', 0, 5]],
  {'class_name': '__keras_tensor__', 'config': {}},
)


def _config(name):
  with h5py.File(FIXTURES / name) as file:
    return json.loads(file.attrs['model_config'])


CONFIGS = {name: _config(name) for name in FILES}


def _children(value):
  if isinstance(value, dict):
    return list(value)
  if isinstance(value, list):
    return list(range(len(value)))
  return []


def _walk(data, parent, key, depth):
  """A drawn descent of up to ``depth`` levels below ``parent[key]``."""
  node = parent[key]
  while _children(node) and depth > 0:
    parent, key = node, data.draw(st.sampled_from(_children(node)))
    node, depth = node[key], depth - 1
  return parent, key


def _mutate(data, config):
  """One drawn change of ``config`` (in place, or a new root returned)."""
  root = {'model': config}
  parent, key = root, 'model'
  scope = data.draw(st.sampled_from(['layer', 'layer', 'model', 'graph']))
  inner = config.get('config') if isinstance(config, dict) else None
  layers = inner.get('layers') if isinstance(inner, dict) else None
  if scope == 'model':
    parent, key = _walk(data, root, 'model', data.draw(st.integers(0, 3)))
  elif isinstance(layers, list) and layers:
    index = data.draw(st.integers(0, len(layers) - 1))
    entry = layers[index]
    if (
      scope == 'graph'
      and isinstance(entry, dict)
      and entry.get('inbound_nodes')
    ):
      parent, key = _walk(data, entry, 'inbound_nodes', 4)
    elif scope == 'graph' and 'output_layers' in inner:
      endpoint = data.draw(st.sampled_from(['input_layers', 'output_layers']))
      parent, key = _walk(data, inner, endpoint, 2)
    else:
      depth = data.draw(st.sampled_from([2, 3, 2, 1]))
      parent, key = _walk(data, layers, index, depth)
  kind = data.draw(
    st.sampled_from(
      ['replace'] * 6 + ['delete'] * 2 + ['empty', 'repeat', 'rename']
    )
  )
  node = parent[key]
  if kind == 'replace' or parent is root:
    parent[key] = copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES)))
  elif kind == 'delete':
    del parent[key]
  elif kind == 'empty':
    parent[key] = type(node)() if isinstance(node, list | dict) else None
  elif isinstance(layers, list) and layers:
    index = data.draw(st.integers(0, len(layers) - 1))
    other = data.draw(st.integers(0, len(layers) - 1))
    if kind == 'repeat':
      layers.insert(other, copy.deepcopy(layers[index]))
    elif all(isinstance(layers[i], dict) for i in (index, other)):
      name = layers[other].get('name') or layers[other].get('config', {})
      name = name.get('name') if isinstance(name, dict) else name
      layers[index]['name'] = name
      if isinstance(layers[index].get('config'), dict):
        layers[index]['config']['name'] = name
  return root['model']


def _assert_all_weights_used(path, variables):
  _, weights, _ = read_keras_h5(path)
  stored = sum(w.size for arrays in weights.values() for w in arrays)
  imported = sum(x.size for x in jax.tree.leaves(variables))
  assert imported == stored
  collections = [tree for tree in variables.values()]
  for name, arrays in weights.items():
    if arrays:
      assert any(name in tree for tree in collections), name


@settings(
  max_examples=100,
  deadline=None,
  derandomize=True,
  suppress_health_check=list(HealthCheck),
  database=None,
  phases=[Phase.generate],
)
@given(data=st.data())
def test_wrong_model_config_imports_whole_or_fails_naming_the_file(data):
  name = data.draw(st.sampled_from(FILES))
  config = copy.deepcopy(CONFIGS[name])
  for _ in range(data.draw(st.integers(1, 3))):
    config = _mutate(data, config)
  text = json.dumps(config).encode()
  if data.draw(st.integers(0, 9)) == 9:
    at = data.draw(st.integers(0, len(text)))
    text = text[:at] + b'\xff\xfe' + text[at:]
  with tempfile.TemporaryDirectory() as directory:
    path = pathlib.Path(directory) / name
    shutil.copy(FIXTURES / name, path)
    with h5py.File(path, 'a') as file:
      file.attrs['model_config'] = np.bytes_(text)
    try:
      _, variables = fd.from_keras(path)
    except (ValueError, TypeError) as error:
      assert type(error) in (ValueError, TypeError), repr(error)
      assert str(path) in str(error), repr(error)
    else:
      _assert_all_weights_used(path, variables)


@pytest.mark.parametrize('name', FILES)
def test_the_unchanged_fixtures_import_whole(name, tmp_path):
  path = tmp_path / name
  shutil.copy(FIXTURES / name, path)
  _, variables = fd.from_keras(path)
  _assert_all_weights_used(path, variables)
