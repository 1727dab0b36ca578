"""Eager calls: a layer applied again with the same shapes compiles nothing."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import flax_dense as fd

_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
  lambda event, duration, **kwargs: (
    _COMPILES.append(event)
    if event == '/jax/core/compile/backend_compile_duration'
    else None
  )
)


@contextlib.contextmanager
def count_compiles():
  """Yields a list whose length, after the block, is the compiles in it."""
  start = len(_COMPILES)
  counted = []
  yield counted
  counted.extend(_COMPILES[start:])


KEY = jax.random.key(0)
# Large enough for PerPositionDense's chunked CPU path (>= 1 MiB of input).
BIG = jnp.ones((64, 64, 64))
SEQ = jnp.ones((2, 5, 3))
VEC = jnp.ones((2, 3))
MAPS_2D = jnp.ones((2, 3, 3, 2))
MAPS_3D = jnp.ones((2, 2, 2, 2, 3))
DROP = {'deterministic': False, 'rng': jax.random.key(1)}


def _linen_sequential():
  return fd.KerasSequential(
    [fd.Masking(), fd.PerPositionDense(4), fd.GlobalAveragePooling1D()],
    mask_flow=['compute', 'propagate', 'consume'],
  )


def _nodes():
  # y = dense(a) + dense(b): one layer called twice, and a merge.
  from flax_dense._src.models.graph import Node

  return [
    Node((0,), steps=(0,)),
    Node((1,), steps=(0,)),
    Node((2, 3), merge='Add'),
  ]


def _linen_functional():
  return fd.KerasFunctional(
    layers=(nn.Dense(4),),
    names=('dense',),
    mask_flow=('propagate',),
    nodes=tuple(_nodes()),
    inputs=2,
    outputs=(4,),
  )


# name: (layer, inputs, keyword arguments of apply). Every public linen
# layer has a row (test_every_public_layer_has_a_row).
LINEN = {
  'PerPositionDense (chunked path)': (fd.PerPositionDense(10), (BIG,), {}),
  'PerPositionDense': (
    fd.PerPositionDense(4, activation='softmax'),
    (SEQ,),
    {},
  ),
  'AttentionDecoder': (fd.AttentionDecoder(4, 3), (SEQ,), {}),
  'ConstProduct': (fd.ConstProduct(weights=[1.0, 2.0, 3.0]), (SEQ,), {}),
  'MultiIODense': (fd.MultiIODense(3), (SEQ, SEQ), {}),
  'LocallyConnected1D': (fd.LocallyConnected1D(2, 2), (SEQ,), {}),
  'Masking': (fd.Masking(), (SEQ,), {}),
  'GlobalAveragePooling1D': (fd.GlobalAveragePooling1D(), (SEQ,), {}),
  'GlobalMaxPooling1D': (fd.GlobalMaxPooling1D(), (SEQ,), {}),
  'Reshape': (fd.Reshape((-1,)), (SEQ,), {}),
  'Permute': (fd.Permute((2, 1)), (SEQ,), {}),
  'Flatten': (fd.Flatten(), (SEQ,), {}),
  'RepeatVector': (fd.RepeatVector(2), (VEC,), {}),
  'Activation': (fd.Activation('softmax'), (SEQ,), {}),
  'Lambda': (fd.Lambda(lambda x: x * 2.0), (SEQ,), {}),
  'ActivityRegularization': (fd.ActivityRegularization(l2=0.1), (SEQ,), {}),
  'Dropout': (fd.Dropout(0.5), (SEQ,), DROP),
  'SpatialDropout1D': (fd.SpatialDropout1D(0.5), (SEQ,), DROP),
  'SpatialDropout2D': (fd.SpatialDropout2D(0.5), (MAPS_2D,), DROP),
  'SpatialDropout3D': (fd.SpatialDropout3D(0.5), (MAPS_3D,), DROP),
  'KerasSequential': (_linen_sequential(), (SEQ,), {}),
  'KerasFunctional': (_linen_functional(), (VEC, VEC), {}),
}


@pytest.mark.parametrize('name', LINEN)
def test_linen_apply_compiles_at_most_once(name):
  layer, inputs, kwargs = LINEN[name]
  variables = layer.init(KEY, *inputs, **kwargs)
  layer.apply(variables, *inputs, **kwargs)  # the first call may compile
  with count_compiles() as compiles:
    for _ in range(3):
      jax.block_until_ready(layer.apply(variables, *inputs, **kwargs))
  assert not compiles, f'{name} compiled {len(compiles)} times on eager calls'


def _rngs():
  return nnx.Rngs(0)


def _nnx_sequential():
  return fd.nnx.KerasSequential(
    [
      fd.nnx.Masking(),
      fd.nnx.PerPositionDense(5, 3, 4, rngs=_rngs()),
      fd.nnx.GlobalAveragePooling1D(),
    ],
    mask_flow=['compute', 'propagate', 'consume'],
  )


# name: (a function making the layer, inputs). Every public NNX layer has a
# row.
NNX = {
  'PerPositionDense (chunked path)': (
    lambda: fd.nnx.PerPositionDense(64, 64, 10, rngs=_rngs()),
    (BIG,),
  ),
  'PerPositionDense': (
    lambda: fd.nnx.PerPositionDense(5, 3, 4, rngs=_rngs()),
    (SEQ,),
  ),
  'AttentionDecoder': (
    lambda: fd.nnx.AttentionDecoder(4, 3, 3, rngs=_rngs()),
    (SEQ,),
  ),
  'ConstProduct': (
    lambda: fd.nnx.ConstProduct(3, weights=[1.0, 2.0, 3.0]),
    (SEQ,),
  ),
  'MultiIODense': (
    lambda: fd.nnx.MultiIODense(3, 3, rngs=_rngs()),
    (SEQ, SEQ),
  ),
  'LocallyConnected1D': (
    lambda: fd.nnx.LocallyConnected1D(5, 3, 2, 2, rngs=_rngs()),
    (SEQ,),
  ),
  'Masking': (lambda: fd.nnx.Masking(), (SEQ,)),
  'GlobalAveragePooling1D': (lambda: fd.nnx.GlobalAveragePooling1D(), (SEQ,)),
  'GlobalMaxPooling1D': (lambda: fd.nnx.GlobalMaxPooling1D(), (SEQ,)),
  'Reshape': (lambda: fd.nnx.Reshape((-1,)), (SEQ,)),
  'Permute': (lambda: fd.nnx.Permute((2, 1)), (SEQ,)),
  'Flatten': (lambda: fd.nnx.Flatten(), (SEQ,)),
  'RepeatVector': (lambda: fd.nnx.RepeatVector(2), (VEC,)),
  'Activation': (lambda: fd.nnx.Activation('softmax'), (SEQ,)),
  'Lambda': (lambda: fd.nnx.Lambda(lambda x: x * 2.0), (SEQ,)),
  'ActivityRegularization': (
    lambda: fd.nnx.ActivityRegularization(l2=0.1),
    (SEQ,),
  ),
  'Dropout': (lambda: fd.nnx.Dropout(0.5, rngs=_rngs()), (SEQ,)),
  'SpatialDropout1D': (
    lambda: fd.nnx.SpatialDropout1D(0.5, rngs=_rngs()),
    (SEQ,),
  ),
  'SpatialDropout2D': (
    lambda: fd.nnx.SpatialDropout2D(0.5, rngs=_rngs()),
    (MAPS_2D,),
  ),
  'SpatialDropout3D': (
    lambda: fd.nnx.SpatialDropout3D(0.5, rngs=_rngs()),
    (MAPS_3D,),
  ),
  'KerasSequential': (_nnx_sequential, (SEQ,)),
  'KerasFunctional': (
    lambda: fd.nnx.KerasFunctional(
      [nnx.Linear(3, 4, rngs=_rngs())],
      names=['dense'],
      mask_flow=['propagate'],
      nodes=_nodes(),
      inputs=2,
      outputs=[4],
    ),
    (VEC, VEC),
  ),
}


@pytest.mark.parametrize('name', NNX)
def test_nnx_call_compiles_at_most_once(name):
  make, inputs = NNX[name]
  layer = make()
  layer(*inputs)
  with count_compiles() as compiles:
    for _ in range(3):
      jax.block_until_ready(layer(*inputs))
  assert not compiles, f'{name} compiled {len(compiles)} times on eager calls'


def _public_layers(namespace):
  return {
    name
    for name in namespace.__all__
    if isinstance(getattr(namespace, name), type)
    and issubclass(getattr(namespace, name), (nn.Module, nnx.Module))
  }


@pytest.mark.parametrize('namespace,table', [(fd, LINEN), (fd.nnx, NNX)])
def test_every_public_layer_has_a_row(namespace, table):
  assert _public_layers(namespace) - set(table) == set()


def test_the_counter_sees_a_compile():
  with count_compiles() as compiles:
    jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones((7, 3, 11)))
  assert compiles


@pytest.mark.parametrize(
  'layer',
  [
    fd.Dropout(0.5, noise_shape=[None, 1, None]),
    fd.Reshape([3, -1]),
    fd.Permute([2, 1]),
  ],
  ids=lambda layer: type(layer).__name__,
)
def test_list_fields_become_tuples_so_the_module_is_a_static_argument(layer):
  assert hash(layer) == hash(layer.clone())
  x = jnp.ones((2, 4, 3))
  apply = jax.jit(
    lambda module, x: (
      module.apply({}, x, deterministic=True)
      if isinstance(module, fd.Dropout)
      else module.apply({}, x)
    ),
    static_argnums=0,
  )
  reference = (
    layer.apply({}, x, deterministic=True)
    if isinstance(layer, fd.Dropout)
    else layer.apply({}, x)
  )
  assert (apply(layer, x) == reference).all()
