"""Eager calls: a layer applied again with the same shapes compiles nothing."""

import jax
import jax.numpy as jnp
import pytest
from cases import CASES, Case, ids

import flax_dense as fd

# Large enough for PerPositionDense's chunked CPU path (>= 1 MiB of input).
CHUNKED = Case(
  'PerPositionDense',
  lambda: fd.PerPositionDense(10),
  lambda rngs: fd.nnx.PerPositionDense(64, 64, 10, rngs=rngs),
  ((64, 64),),
  variant='chunked-path',
)


@pytest.mark.parametrize('case', [*CASES, CHUNKED], ids=ids([*CASES, CHUNKED]))
def test_eager_calls_compile_at_most_once(case, api, build, count_compiles):
  inputs = case.inputs(batch=64) if case is CHUNKED else case.inputs()
  call, _ = build(case, api, inputs)
  call(*inputs)  # the first call may compile
  with count_compiles() as compiles:
    for _ in range(3):
      jax.block_until_ready(call(*inputs))
  assert not compiles, (
    f'{api} {case.id} compiled {len(compiles)} times on eager calls'
  )


def test_the_counter_sees_a_compile(count_compiles):
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
