"""The layer registry: every spec walked both ways, and the registry's own
checks.

Every spec of ``flax_dense._src.registry`` is run on its layer's cases
(tests/cases.py) linen -> NNX -> linen, and, where the spec exports to
Keras, flax_dense -> Keras -> flax_dense -> Keras, with equal outputs at
every stage. A spec missing a part, or a layer or Keras class registered
twice, is refused when the registry is built.
"""

import ast
import dataclasses
import pathlib

import jax
import numpy as np
import pytest
from cases import CASES

import flax_dense as fd
from flax_dense._src import registry
from flax_dense._src.registry.spec import KerasImport

keras = pytest.importorskip('keras')

LIBRARY = pathlib.Path(fd.__file__).parent


def spec_cases(predicate=lambda spec: True):
  """Each case whose layer has a spec, with the spec."""
  pairs = []
  for case in CASES:
    spec = registry.linen_spec(type(case.linen()))
    if spec is not None and predicate(spec):
      pairs.append(pytest.param(case, spec, id=case.id))
  return pairs


def test_every_spec_has_a_case():
  made = {type(case.linen()) for case in CASES}
  missing = [spec.linen.__name__ for spec in registry.SPECS]
  missing = [
    name for name in missing if not any(t.__name__ == name for t in made)
  ]
  assert not missing, f'specs without a case in tests/cases.py: {missing}'


@pytest.mark.parametrize('case,spec', spec_cases())
def test_linen_to_nnx_to_linen(case, spec):
  del spec
  module = case.linen()
  inputs = case.inputs()
  # Inference: a dropout layer's noise is not what is converted.
  kwargs = {'deterministic': True} if case.train else {}
  variables = module.init(jax.random.key(0), *inputs, **kwargs)
  expected = module.apply(variables, *inputs, **kwargs)
  twin = fd.nnx.from_linen(module, variables)
  twin.eval()
  back, back_variables = fd.nnx.to_linen(twin)
  # An NNX layer in eval mode comes back with deterministic=True.
  back_kwargs = kwargs if getattr(back, 'deterministic', None) is None else {}
  for got in (
    twin(*inputs),
    back.apply(back_variables, *inputs, **back_kwargs),
  ):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
      got,
      expected,
    )


def _exportable(case, spec):
  """Whether the case's layer exports: a spec with keras_export, called on
  its inputs alone (a Keras model of one layer takes no mask), in float32
  on ``(batch, ...)`` inputs of the rank Keras's layer takes."""
  return (
    spec.keras_export is not None
    and not case.mask
    and not case.train
    and case.variant not in ('bfloat16', 'nested-batch')
  )


@pytest.mark.parametrize(
  'case,spec',
  [p for p in spec_cases(lambda s: s.keras_export is not None)],
)
def test_flax_dense_to_keras_and_back(case, spec):
  if not _exportable(case, spec):
    pytest.skip('masked, training, bfloat16 or nested: the Keras tests')
  module = case.linen()
  inputs = case.inputs()
  variables = module.init(jax.random.key(0), *inputs)
  expected = np.asarray(module.apply(variables, *inputs))
  shape = tuple(np.shape(inputs[0])[1:])
  try:
    with jax.numpy_rank_promotion('allow'):
      exported = fd.to_keras_model(module, variables, input_shape=shape)
  except ValueError as error:
    # A setting Keras's layer cannot express, said so by name.
    assert 'to_keras_model' in str(error)
    return
  with jax.numpy_rank_promotion('allow'):
    predicted = exported.predict(np.asarray(inputs[0]), verbose=0)
    imported, imported_variables = fd.from_keras(exported)
    again = fd.to_keras_model(imported, imported_variables, input_shape=shape)
    predicted_again = again.predict(np.asarray(inputs[0]), verbose=0)
  reimported = imported.apply(imported_variables, *inputs)
  for got in (predicted, reimported, predicted_again):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('spec', registry.SPECS, ids=lambda s: s.linen.__name__)
def test_a_spec_says_why_it_lacks_a_direction(spec):
  assert spec.keras_import or spec.not_imported
  assert spec.keras_export is not None or spec.not_exported


# --- The registry's own checks ----------------------------------------------


def _spec(**changes):
  return dataclasses.replace(registry.SPECS[0], **changes)


def test_a_layer_registered_twice_is_refused():
  with pytest.raises(ValueError, match='registered twice'):
    registry.check_specs([registry.SPECS[0], registry.SPECS[0]])


def test_a_keras_class_registered_twice_is_refused():
  first = next(spec for spec in registry.SPECS if spec.keras_import)
  name, keras_import = next(iter(first.keras_import.items()))
  other = next(spec for spec in registry.SPECS if spec is not first)
  twin = dataclasses.replace(other, keras_import={name: keras_import})
  with pytest.raises(
    ValueError, match=f'Keras class {name} is registered twice'
  ):
    registry.check_specs([first, twin])


@pytest.mark.parametrize(
  'changes,error,message',
  [
    ({'nnx': None}, TypeError, 'needs its nnx class'),
    ({'linen': 'Dense'}, TypeError, 'needs its linen class'),
    ({'mask_flow': 'sometimes'}, ValueError, 'needs a mask flow'),
    (
      {'keras_import': {}, 'not_imported': ''},
      ValueError,
      'imports from no Keras class',
    ),
    (
      {'keras_export': None, 'not_exported': ''},
      ValueError,
      'has no keras_export',
    ),
  ],
)
def test_a_spec_missing_a_part_is_refused(changes, error, message):
  with pytest.raises(error, match=message):
    registry.check_specs([_spec(**changes)])


def test_an_entry_that_is_not_a_spec_is_refused():
  with pytest.raises(TypeError, match='expected LayerSpec entries'):
    registry.check_specs([object()])


def test_register_keras_layer_goes_into_the_registry():
  def convert(class_name, config, weights):
    del class_name, config, weights
    return fd.Flatten()

  try:
    fd.register_keras_layer('MyFlattenForTheRegistry', convert)
    assert isinstance(
      registry.keras_import('MyFlattenForTheRegistry'), KerasImport
    )
  finally:
    registry.REGISTERED.pop('MyFlattenForTheRegistry', None)


# --- The recipe: one place per layer ----------------------------------------


def code_mentions(name: str) -> list[str]:
  """The library files whose code (not docstrings or comments) names
  ``name``: as an identifier, an import, a class, or a word of a string."""
  files = []
  for path in sorted(LIBRARY.rglob('*.py')):
    tree = ast.parse(path.read_text())
    docstrings = {
      id(node.body[0].value)
      for node in ast.walk(tree)
      if isinstance(
        node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
      )
      and node.body
      and isinstance(node.body[0], ast.Expr)
      and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
      if (
        (isinstance(node, ast.Name) and node.id == name)
        or (isinstance(node, ast.Attribute) and node.attr == name)
        or (isinstance(node, ast.alias) and node.name.split('.')[-1] == name)
        or (isinstance(node, ast.ClassDef) and node.name == name)
        or (
          isinstance(node, ast.Constant)
          and isinstance(node.value, str)
          and id(node) not in docstrings
          and name in node.value.replace('`', ' ').split()
        )
      ):
        files.append(str(path.relative_to(LIBRARY)))
        break
  return files


@pytest.mark.parametrize('spec', registry.SPECS, ids=lambda s: s.linen.__name__)
def test_a_layer_is_known_in_at_most_seven_library_files(spec):
  """docs/design.md's recipe: its op, its linen and NNX classes, its spec
  and the public exports; nothing else needs to know its name."""
  if spec.linen.__module__.startswith('flax.'):
    pytest.skip('a Flax layer')
  files = code_mentions(spec.linen.__name__)
  assert len(files) <= 7, files
