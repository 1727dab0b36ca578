"""Every public layer has its NNX twin, functional core, converter and import.

The layers are found, not listed: every ``flax.linen.Module`` subclass in
``flax_dense.__all__`` but the containers. A layer added without one of
these, or without an explicit, documented exclusion, fails here:

- its NNX twin, of the same name in :mod:`flax_dense.nnx`;
- its functional core, a pure function of :mod:`flax_dense.functional`
  that both front ends really call (:data:`FUNCTIONAL_CORES`, or an entry
  of :data:`NO_FUNCTIONAL_CORE`);
- its ``fd.nnx.from_linen`` conversion (``fd.nnx.LINEN_TO_NNX``) and a
  case in tests/cases.py (which the parity tests draw from);
- a Keras converter of ``fd.from_keras`` that makes it, or an entry of
  ``not_imported`` reason in its spec (flax_dense/_src/registry).
"""

import sys

import flax.linen as nn
import jax
import pytest
from cases import CASES
from flax import nnx

import flax_dense as fd
from flax_dense import functional
from flax_dense._src import registry
from flax_dense._src.keras.imports import COVERED

#: Public linen modules that hold layers rather than being one, and why.
CONTAINERS = {
  'KerasFunctional': 'runs a graph of layers; converted layer by layer',
  'KerasSequential': 'applies layers in order; converted layer by layer',
}

#: The pure function of flax_dense.functional each layer runs.
FUNCTIONAL_CORES = {
  'Activation': 'resolve_activation',
  'AttentionDecoder': 'attention_decoder',
  'Bidirectional': 'recurrent',
  'ConstProduct': 'const_product',
  'Dropout': 'dropout',
  'Embedding': 'embedding',
  'Flatten': 'flatten',
  'GRU': 'recurrent',
  'GlobalAveragePooling1D': 'masked_mean',
  'GlobalMaxPooling1D': 'masked_max',
  'LSTM': 'recurrent',
  'LocallyConnected1D': 'locally_connected_1d',
  'Masking': 'masking',
  'MultiIODense': 'multi_io_dense',
  'PerPositionDense': 'per_position_dense',
  'Permute': 'permute',
  'RepeatVector': 'repeat_vector',
  'Reshape': 'reshape',
  'SimpleRNN': 'recurrent',
  'SpatialDropout1D': 'dropout',
  'SpatialDropout2D': 'dropout',
  'SpatialDropout3D': 'dropout',
}

#: The layers without a function of their own in flax_dense.functional, and
#: why.
NO_FUNCTIONAL_CORE = {
  'ActivityRegularization': (
    'the identity; its penalty is fd.l1_l2 of the whole batch, divided by'
    ' the batch size, not a function of one example'
  ),
  'Lambda': "it runs the user's function; it has no math of its own",
  'TimeDistributed': (
    "its math is the wrapped layer's; it folds the steps into the batch"
  ),
}


def public_layers():
  return sorted(
    name
    for name in fd.__all__
    if isinstance(getattr(fd, name), type)
    and issubclass(getattr(fd, name), nn.Module)
    and name not in CONTAINERS
  )


LAYERS = public_layers()


def test_the_layers_are_found():
  # Guards the search itself: these are layers by any account.
  assert {'PerPositionDense', 'Dropout', 'Masking', 'AttentionDecoder'} <= set(
    LAYERS
  )
  assert set(CONTAINERS) <= set(fd.__all__)


@pytest.mark.parametrize('name', LAYERS)
def test_layer_has_an_nnx_twin_of_the_same_name(name):
  assert name in fd.nnx.__all__, f'fd.nnx has no {name}'
  twin = getattr(fd.nnx, name)
  assert isinstance(twin, type) and issubclass(twin, nnx.Module)


@pytest.mark.parametrize('name', sorted(CONTAINERS))
def test_container_has_an_nnx_twin_of_the_same_name(name):
  assert issubclass(getattr(fd.nnx, name), nnx.Module)
  assert getattr(fd, name) not in fd.nnx.LINEN_TO_NNX  # converted apart


@pytest.mark.parametrize('name', LAYERS)
def test_layer_has_a_from_linen_conversion_and_a_parity_case(name):
  layer = getattr(fd, name)
  assert layer in fd.nnx.LINEN_TO_NNX, f'fd.nnx.LINEN_TO_NNX has no {name}'
  assert fd.nnx.LINEN_TO_NNX[layer] is getattr(fd.nnx, name)
  assert any(type(case.linen()) is layer for case in CASES), (
    f'tests/cases.py has no case of {name}'
  )


def test_functional_lists_name_only_public_layers_and_functions():
  assert set(FUNCTIONAL_CORES).isdisjoint(NO_FUNCTIONAL_CORE)
  assert set(FUNCTIONAL_CORES) | set(NO_FUNCTIONAL_CORE) <= set(LAYERS)
  assert set(FUNCTIONAL_CORES.values()) <= set(functional.__all__)


def calls_during(run):
  """The code objects of the Python functions ``run()`` calls, jit off.

  Jit is off so that functions traced before (cached programs) run again.
  """
  called = set()

  def profile(frame, event, arg):
    del arg
    if event == 'call':
      called.add(frame.f_code)

  with jax.disable_jit():
    sys.setprofile(profile)
    try:
      run()
    finally:
      sys.setprofile(None)
  return called


@pytest.mark.parametrize('name', LAYERS)
def test_layer_has_a_functional_core_both_front_ends_call(name):
  if name in NO_FUNCTIONAL_CORE:
    assert NO_FUNCTIONAL_CORE[name]
    return
  assert name in FUNCTIONAL_CORES, (
    f'{name}: name its function of flax_dense.functional in'
    ' FUNCTIONAL_CORES, or say why it has none in NO_FUNCTIONAL_CORE'
  )
  core = getattr(functional, FUNCTIONAL_CORES[name]).__code__
  case = next(case for case in CASES if case.name == name)
  module, inputs, key = case.linen(), case.inputs(), jax.random.key(1)
  variables = module.init(jax.random.key(0), *inputs, **case.linen_kwargs(key))
  twin = fd.nnx.from_linen(module, variables)
  linen = calls_during(
    lambda: module.apply(variables, *inputs, **case.linen_kwargs(key))
  )
  assert core in linen, f'fd.{name} does not call {core.co_name}'
  twin_calls = calls_during(lambda: twin(*inputs, **case.nnx_kwargs(key)))
  assert core in twin_calls, f'fd.nnx.{name} does not call {core.co_name}'


def made_by_keras_imports():
  # By class name, no Keras needed: live models and .h5 files share them.
  return {
    module
    for entry in registry.SPECS
    for keras_import in entry.keras_import.values()
    for module in (entry.linen, *keras_import.makes)
  } | {
    module for keras_import in COVERED.values() for module in keras_import.makes
  }


NOT_IMPORTED = {
  entry.linen: entry.not_imported
  for entry in registry.SPECS
  if entry.not_imported
}


def test_keras_exclusions_name_only_public_layers_not_imported():
  made = made_by_keras_imports()
  for layer, reason in NOT_IMPORTED.items():
    assert layer.__name__ in LAYERS and reason
    assert layer not in made, f'{layer.__name__} is imported after all'


@pytest.mark.parametrize('name', LAYERS)
def test_layer_is_imported_from_keras_or_excluded(name):
  layer = getattr(fd, name)
  made = made_by_keras_imports()
  assert layer in made or layer in NOT_IMPORTED, (
    f'no Keras import of fd.from_keras makes {name}: give its spec in'
    ' flax_dense/_src/registry a keras_import, or say why not in its'
    ' not_imported'
  )
