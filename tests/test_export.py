"""Every layer exports with ``jax.export`` for a symbolic batch (and steps).

Each case is exported with a symbolic batch size (and, where the math
allows, a symbolic number of steps), serialised and deserialised, then
called at two concrete sizes; the outputs, and the sown losses, must equal
those of applying the module directly.
"""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CASES
from flax import nnx
from jax import export

import flax_dense as fd
from flax_dense._src.ops import dense_kernels

#: Serialisation needs the optional ``flatbuffers`` package.
HAS_FLATBUFFERS = importlib.util.find_spec('flatbuffers') is not None

#: The cases exported: every case of tests/cases.py whose layer exports for
#: a symbolic batch (and symbolic steps where its shapes have 't').
EXPORTED = {case.id: case for case in CASES if case.symbolic_batch}


#: Concrete (batch, steps) sizes the exported function is called at.
SIZES = ((2, 4), (3, 6))


def _round_trip(exported: export.Exported) -> export.Exported:
  """``exported`` serialised and read back (when flatbuffers is there)."""
  if not HAS_FLATBUFFERS:
    return exported
  return export.deserialize(exported.serialize())


def _symbolic(case):
  batch, steps = export.symbolic_shape('b, t')
  return [
    jax.ShapeDtypeStruct(shape, dtype)
    for shape, dtype in case.input_specs(batch, steps)
  ]


def _assert_trees_close(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


#: The key of the linen dropout stream, an argument of the exported function.
RNG = jax.random.PRNGKey(7)


def _training(case):
  """The linen call arguments of the case: training mode if it drops."""
  return {'deterministic': False} if case.train else {}


@functools.cache
def _linen(name):
  """The case's module, its variables, its jitted apply and its outputs.

  Cached: the linen and NNX tests of a case share them (compiling is most
  of the time of these tests).
  """
  case = EXPORTED[name]
  module = case.linen()
  variables = module.init(
    {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
    *case.inputs(*SIZES[0]),
    **_training(case),
  )

  @jax.jit
  def apply(variables, rng, *inputs):
    return module.apply(
      variables,
      *inputs,
      rngs={'dropout': rng},
      mutable=['losses'],
      **_training(case),
    )

  expected = [
    apply(variables, RNG, *case.inputs(batch, steps, seed=batch))
    for batch, steps in SIZES
  ]
  return module, variables, apply, expected


@pytest.mark.parametrize('name', EXPORTED)
def test_linen_export_round_trip(name):
  case = EXPORTED[name]
  _, variables, apply, expected = _linen(name)
  exported = export.export(apply)(variables, RNG, *_symbolic(case))
  exported = _round_trip(exported)
  assert 'b' in str(exported.in_avals)
  for (batch, steps), outputs in zip(SIZES, expected, strict=True):
    inputs = case.inputs(batch, steps, seed=batch)
    _assert_trees_close(exported.call(variables, RNG, *inputs), outputs)


@pytest.mark.parametrize('name', EXPORTED)
def test_nnx_export_round_trip(name):
  case = EXPORTED[name]
  module, variables, _, linen_outputs = _linen(name)
  model = fd.nnx.from_linen(module, variables, rngs=nnx.Rngs(dropout=3))
  graphdef, state = nnx.split(model)
  # The exported function takes the state's leaves: jax.export serialises
  # arrays and lists, not NNX's own pytree types.
  leaves, treedef = jax.tree.flatten(state)

  @jax.jit
  def apply(leaves, *inputs):
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(*inputs)

  exported = export.export(apply)(leaves, *_symbolic(case))
  exported = _round_trip(exported)
  for (batch, steps), outputs in zip(SIZES, linen_outputs, strict=True):
    inputs = case.inputs(batch, steps, seed=batch)
    # Without noise the NNX twin's outputs are the linen module's; with
    # noise it draws its own keys, so it is compared with itself.
    expected = apply(leaves, *inputs) if case.train else outputs[0]
    _assert_trees_close(exported.call(leaves, *inputs), expected)


def test_symbolic_batch_takes_the_reference_path():
  """With a symbolic batch the CPU path never compares a symbolic size."""
  batch = export.symbolic_shape('b')[0]
  # 2 MiB per example: chunks would be preferred at any concrete batch.
  assert dense_kernels.prefers_chunks((1, 512, 1024), jnp.float32)
  assert not dense_kernels.prefers_chunks((batch, 512, 1024), jnp.float32)


def test_serialization_needs_flatbuffers_only():
  pytest.importorskip('flatbuffers')
  module = fd.PerPositionDense(2)
  x = jnp.ones((2, 3, 4))
  variables = module.init(jax.random.key(0), x)
  batch = export.symbolic_shape('b')[0]
  exported = export.export(jax.jit(module.apply))(
    variables, jax.ShapeDtypeStruct((batch, 3, 4), jnp.float32)
  )
  blob = exported.serialize()
  assert isinstance(blob, bytearray | bytes) and len(blob) > 0
  restored = export.deserialize(blob)
  np.testing.assert_allclose(
    restored.call(variables, x), module.apply(variables, x), rtol=1e-6
  )
