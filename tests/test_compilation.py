"""Eager calls: a layer applied again with the same shapes compiles nothing."""

import contextlib

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

LINEN = {
  'PerPositionDense (chunked path)': (fd.PerPositionDense(10), (BIG,)),
  'PerPositionDense': (fd.PerPositionDense(4, activation='softmax'), (SEQ,)),
  'AttentionDecoder': (fd.AttentionDecoder(4, 3), (SEQ,)),
  'ConstProduct': (fd.ConstProduct(weights=[1.0, 2.0, 3.0]), (SEQ,)),
  'MultiIODense': (fd.MultiIODense(3), (SEQ, SEQ)),
  'Masking': (fd.Masking(), (SEQ,)),
  'GlobalMaxPooling1D': (fd.GlobalMaxPooling1D(), (SEQ,)),
  'Reshape': (fd.Reshape((-1,)), (SEQ,)),
  'Permute': (fd.Permute((2, 1)), (SEQ,)),
}


@pytest.mark.parametrize('name', LINEN)
def test_linen_apply_compiles_at_most_once(name):
  layer, inputs = LINEN[name]
  variables = layer.init(KEY, *inputs)
  layer.apply(variables, *inputs)  # the first call may compile
  with count_compiles() as compiles:
    for _ in range(3):
      jax.block_until_ready(layer.apply(variables, *inputs))
  assert not compiles, f'{name} compiled {len(compiles)} times on eager calls'


NNX = {
  'PerPositionDense (chunked path)': (
    lambda: fd.nnx.PerPositionDense(64, 64, 10, rngs=nnx.Rngs(0)),
    (BIG,),
  ),
  'AttentionDecoder': (
    lambda: fd.nnx.AttentionDecoder(4, 3, 3, rngs=nnx.Rngs(0)),
    (SEQ,),
  ),
  'MultiIODense': (
    lambda: fd.nnx.MultiIODense(3, 3, rngs=nnx.Rngs(0)),
    (SEQ, SEQ),
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
