"""Every layer exports with ``jax.export`` for a symbolic batch (and steps).

Each case is exported with a symbolic batch size (and, where the math
allows, a symbolic number of steps), serialised and deserialised, then
called at two concrete sizes; the outputs, and the sown losses, must equal
those of applying the module directly.
"""

import functools
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import export

import flax_dense as fd
from flax_dense._src.ops import dense_kernels

#: Serialisation needs the optional ``flatbuffers`` package.
HAS_FLATBUFFERS = importlib.util.find_spec('flatbuffers') is not None

#: name: (linen module, per-example input shapes with 't' for the steps
#: axis that may be symbolic, or an int for an axis that must stay fixed).
CASES = {
  'PerPositionDense': (
    fd.PerPositionDense(3, activation='relu'),
    [(5, 4)],
  ),
  'PerPositionDense/activity_regularizer': (
    fd.PerPositionDense(3, activity_regularizer=fd.l1_l2(0.1, 0.2)),
    [(5, 4)],
  ),
  'LocallyConnected1D': (fd.LocallyConnected1D(3, 2, strides=2), [(7, 4)]),
  'ConstProduct': (fd.ConstProduct([0.5, 1.0, 2.0]), [(3,)]),
  'ConstProduct/trainable': (
    fd.ConstProduct([0.5, 1.0, 2.0], trainable=True),
    [(3,)],
  ),
  'MultiIODense': (fd.MultiIODense(4), [(3,), (4,)]),
  'AttentionDecoder': (fd.AttentionDecoder(4, 5), [('t', 3)]),
  'AttentionDecoder/probabilities': (
    fd.AttentionDecoder(4, 5, return_probabilities=True),
    [('t', 3)],
  ),
  'Masking': (fd.Masking(0.5), [('t', 3)]),
  'Dropout': (fd.Dropout(0.5, deterministic=False), [('t', 3)]),
  'Dropout/noise_shape': (
    fd.Dropout(0.5, noise_shape=(None, 1, None), deterministic=False),
    [('t', 3)],
  ),
  'SpatialDropout1D': (
    fd.SpatialDropout1D(0.5, deterministic=False),
    [('t', 3)],
  ),
  'SpatialDropout2D': (
    fd.SpatialDropout2D(0.5, deterministic=False),
    [('t', 2, 3)],
  ),
  'SpatialDropout3D': (
    fd.SpatialDropout3D(0.5, deterministic=False),
    [('t', 2, 2, 3)],
  ),
  'Activation': (fd.Activation('softmax'), [('t', 3)]),
  'Flatten': (fd.Flatten(), [('t', 3)]),
  'Flatten/channels_first': (fd.Flatten('channels_first'), [(3, 't')]),
  'Reshape': (fd.Reshape((3, -1)), [(12,)]),
  'Permute': (fd.Permute((2, 1)), [('t', 3)]),
  'RepeatVector': (fd.RepeatVector(3), [(5,)]),
  'GlobalAveragePooling1D': (fd.GlobalAveragePooling1D(), [('t', 3)]),
  'GlobalMaxPooling1D': (
    fd.GlobalMaxPooling1D(keepdims=True),
    [('t', 3)],
  ),
  'ActivityRegularization': (
    fd.ActivityRegularization(0.1, 0.2),
    [('t', 3)],
  ),
  'KerasSequential': (
    fd.KerasSequential(
      (
        fd.Masking(0.0),
        nn.Dense(4),
        fd.Dropout(0.3),
        fd.ActivityRegularization(l2=0.1),
        fd.GlobalAveragePooling1D(),
      ),
      names=('masking', 'dense', 'dropout', 'penalty', 'pooling'),
      mask_flow=('compute', 'propagate', 'propagate', 'propagate', 'consume'),
    ),
    [('t', 3)],
  ),
  'KerasSequential/PerPositionDense': (
    fd.KerasSequential(
      (fd.PerPositionDense(4, activation='tanh'), fd.Flatten(), nn.Dense(2))
    ),
    [(5, 3)],
  ),
}

#: Concrete (batch, steps) sizes the exported function is called at.
SIZES = ((2, 4), (3, 6))


def _shape(shape, batch, steps):
  return (batch, *(steps if size == 't' else size for size in shape))


def _inputs(shapes, batch, steps, seed=0):
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  # Some exact zeros, so that masks have something to mask.
  return [
    jnp.round(jax.random.normal(k, _shape(s, batch, steps)))
    for k, s in zip(keys, shapes, strict=True)
  ]


def _round_trip(exported: export.Exported) -> export.Exported:
  """``exported`` serialised and read back (when flatbuffers is there)."""
  if not HAS_FLATBUFFERS:
    return exported
  return export.deserialize(exported.serialize())


def _symbolic(shapes):
  batch, steps = export.symbolic_shape('b, t')
  return [
    jax.ShapeDtypeStruct(_shape(s, batch, steps), jnp.float32) for s in shapes
  ]


def _assert_trees_close(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


#: The key of the linen dropout stream, an argument of the exported function.
RNG = jax.random.PRNGKey(7)


def _is_random(module: nn.Module) -> bool:
  """Whether the case draws dropout noise (NNX draws its own keys then)."""
  layers = getattr(module, 'layers', (module,))
  return any(
    isinstance(
      layer,
      fd.Dropout
      | fd.SpatialDropout1D
      | fd.SpatialDropout2D
      | fd.SpatialDropout3D,
    )
    for layer in layers
  )


@functools.cache
def _linen(name):
  """The case's module, its variables, its jitted apply and its outputs.

  Cached: the linen and NNX tests of a case share them (compiling is most
  of the time of these tests).
  """
  module, shapes = CASES[name]
  variables = module.init(
    {'params': jax.random.key(0), 'dropout': jax.random.key(1)},
    *_inputs(shapes, *SIZES[0]),
  )

  @jax.jit
  def apply(variables, rng, *inputs):
    return module.apply(
      variables, *inputs, rngs={'dropout': rng}, mutable=['losses']
    )

  expected = [
    apply(variables, RNG, *_inputs(shapes, batch, steps, seed=batch))
    for batch, steps in SIZES
  ]
  return variables, apply, expected


@pytest.mark.parametrize('name', CASES)
def test_linen_export_round_trip(name):
  _, shapes = CASES[name]
  variables, apply, expected = _linen(name)
  exported = export.export(apply)(variables, RNG, *_symbolic(shapes))
  exported = _round_trip(exported)
  assert 'b' in str(exported.in_avals)
  for (batch, steps), outputs in zip(SIZES, expected, strict=True):
    inputs = _inputs(shapes, batch, steps, seed=batch)
    _assert_trees_close(exported.call(variables, RNG, *inputs), outputs)


@pytest.mark.parametrize('name', CASES)
def test_nnx_export_round_trip(name):
  module, shapes = CASES[name]
  variables, _, linen_outputs = _linen(name)
  model = fd.nnx.from_linen(module, variables, rngs=nnx.Rngs(dropout=3))
  graphdef, state = nnx.split(model)
  # The exported function takes the state's leaves: jax.export serialises
  # arrays and lists, not NNX's own pytree types.
  leaves, treedef = jax.tree.flatten(state)

  @jax.jit
  def apply(leaves, *inputs):
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(*inputs)

  exported = export.export(apply)(leaves, *_symbolic(shapes))
  exported = _round_trip(exported)
  for (batch, steps), outputs in zip(SIZES, linen_outputs, strict=True):
    inputs = _inputs(shapes, batch, steps, seed=batch)
    # Without noise the NNX twin's outputs are the linen module's; with
    # noise it draws its own keys, so it is compared with itself.
    expected = apply(leaves, *inputs) if _is_random(module) else outputs[0]
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
  exported = export.export(jax.jit(module.apply))(
    variables, *_symbolic([(3, 4)])
  )
  blob = exported.serialize()
  assert isinstance(blob, bytearray | bytes) and len(blob) > 0
  restored = export.deserialize(blob)
  np.testing.assert_allclose(
    restored.call(variables, x), module.apply(variables, x), rtol=1e-6
  )
