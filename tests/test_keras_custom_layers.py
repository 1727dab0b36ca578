"""fd.register_keras_layer: Keras layers of one's own, and the docs table.

The example examples/keras_custom_layers.py registers converters for the
tutorials' constant-product layer (to ConstProduct) and 2-in/2-out layer
(to MultiIODense); its outputs are compared with Keras 3 itself, for a
live model, a ``.keras`` file and a legacy ``.h5`` file.
"""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

import flax_dense as fd
from flax_dense._src import registry as layer_registry
from flax_dense._src.keras.imports import COVERED

keras = pytest.importorskip('keras')

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_example():
  path = ROOT / 'examples' / 'keras_custom_layers.py'
  spec = importlib.util.spec_from_file_location('keras_custom_layers', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def registry():
  """Leaves the registry of converters as the test found it."""
  saved = dict(layer_registry.REGISTERED)
  yield
  layer_registry.REGISTERED.clear()
  layer_registry.REGISTERED.update(saved)


@pytest.fixture(scope='module')
def example():
  return load_example()


def test_example_imports_both_custom_layers(example, registry, tmp_path):
  results = example.main(['--keras-file', str(tmp_path / 'model.keras')])
  for source in ('linen', 'nnx', 'keras_file'):
    assert len(results[source]) == 3, source
    assert max(results[source]) < 1e-5, (source, results[source])
  assert results['variables'] == {
    'constants': {'product': {'kernel': (3,)}},
    'params': {
      'hidden': {'bias': (3,), 'kernel': (6, 3)},
      'multi_io': {'kernel': (3, 3)},
    },
  }
  with fd_rank_promotion():
    model = example.build_model(6, 3, 0)
  np.testing.assert_allclose(
    results['constant_weights'],
    model.get_layer('product').non_trainable_weights[0],
  )


def test_legacy_h5_file_uses_the_same_converters(example, registry, tmp_path):
  example.register()
  with fd_rank_promotion():
    model = example.build_model(5, 2, 3)
  path = tmp_path / 'model.h5'
  model.save(path)
  inputs = [
    np.random.default_rng(0).normal(size=(3, 5)).astype('float32'),
    np.random.default_rng(1).normal(size=(3, 2)).astype('float32'),
  ]
  with fd_rank_promotion():
    want = [np.asarray(y) for y in model(inputs)]
  module, variables = fd.from_keras(path)
  for got, expected in zip(module.apply(variables, *inputs), want, strict=True):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def fd_rank_promotion():
  import jax

  return jax.numpy_rank_promotion('allow')


def test_uncovered_custom_layer_says_how_to_register(example, registry):
  del registry
  with fd_rank_promotion():
    model = example.build_model(4, 2, 0)
  with pytest.raises(ValueError) as error:
    fd.from_keras(model)
  message = str(error.value)
  assert "ConstProductLayer layer 'product'" in message
  assert "fd.register_keras_layer('ConstProductLayer', converter)" in message


def test_converter_may_be_registered_by_class_name(example, registry):
  fd.register_keras_layer('ConstProductLayer', example.const_product)
  fd.register_keras_layer('flax_dense_example>MultiIOLayer', example.multi_io)
  with fd_rank_promotion():
    model = example.build_model(4, 2, 0)
  module, variables = fd.from_keras(model)
  assert set(variables[fd.CONSTANTS]) == {'product'}


@pytest.mark.parametrize(
  'key,converter,error,match',
  [
    (3, lambda *a: None, TypeError, 'must be a Keras layer class'),
    ('MyLayer', 'not callable', TypeError, 'converter must be a function'),
    ('', lambda *a: None, ValueError, 'class name is empty'),
    ('Dense', lambda *a: None, ValueError, 'Dense is a Keras layer flax_dense'),
  ],
)
def test_register_errors(key, converter, error, match, registry):
  with pytest.raises(error, match=match):
    fd.register_keras_layer(key, converter)


def test_converter_returning_something_else_is_a_clear_error(example, registry):
  fd.register_keras_layer('ConstProductLayer', lambda *args: 'oops')
  fd.register_keras_layer('MultiIOLayer', example.multi_io)
  with fd_rank_promotion():
    model = example.build_model(4, 2, 0)
  with pytest.raises(TypeError, match="ConstProductLayer layer 'product'"):
    fd.from_keras(model)


def test_converter_that_drops_the_weights_is_refused(example, registry):
  fd.register_keras_layer('ConstProductLayer', lambda *args: fd.Masking())
  fd.register_keras_layer('MultiIOLayer', example.multi_io)
  with fd_rank_promotion():
    model = example.build_model(4, 2, 0)
  with pytest.raises(ValueError, match=r"\['product'\].*would be dropped"):
    fd.from_keras(model)


# --- The docs table is the registry. -----------------------------------------

DOCS = ROOT / 'docs' / 'keras_import.md'


def coverage_table():
  """The table of docs/keras_import.md, made from the converter registry.

  Paste it between the ``layers`` markers of the docs when a converter is
  added: test_docs_table_is_what_the_registry_generates prints it when the
  docs differ.
  """
  rows = ['| Keras layer | becomes |', '| --- | --- |']
  for name in sorted(COVERED):
    becomes = COVERED[name].becomes.replace('``', '`')
    rows.append(f'| `{name}` | {becomes} |')
  return '\n'.join(rows)


def between(marker):
  text = DOCS.read_text()
  return text.split(f'<!-- {marker}:start -->')[1].split(
    f'<!-- {marker}:end -->'
  )[0]


def test_docs_table_is_what_the_registry_generates():
  assert between('layers').strip() == coverage_table(), (
    'docs/keras_import.md and the converter registry differ; the table'
    f' should be:\n{coverage_table()}'
  )


def test_every_converter_says_what_it_becomes():
  for name, converter in COVERED.items():
    assert converter.becomes, name


def test_docs_list_every_activation_once():
  from flax_dense._src.ops.activations import KERAS_ACTIVATIONS

  assert re.findall(r'`(\w+)`', between('activations')) == sorted(
    KERAS_ACTIVATIONS
  )
