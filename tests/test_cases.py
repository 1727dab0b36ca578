"""The case table of tests/cases.py: complete, and true to both front ends.

Every public layer of ``flax_dense`` and ``flax_dense.nnx`` has a case (a
layer added without one fails here), and each case's NNX constructor makes
the module that ``fd.nnx.from_linen`` makes of its linen constructor's:
same class, same variables of the same shapes and dtypes, same outputs'
shapes, so the tests drawing from the table test one layer on both ends.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest
from cases import CASES, ids, main_cases
from flax import nnx

import flax_dense as fd


def public_layers(namespace, base):
  return {
    name
    for name in namespace.__all__
    if isinstance(getattr(namespace, name), type)
    and issubclass(getattr(namespace, name), base)
  }


@pytest.mark.parametrize(
  'namespace,base', [(fd, nn.Module), (fd.nnx, nnx.Module)], ids=['fd', 'nnx']
)
def test_every_public_layer_has_a_case(namespace, base):
  layers = public_layers(namespace, base)
  assert {'PerPositionDense', 'Dropout', 'KerasSequential'} <= layers
  missing = layers - {case.name for case in CASES}
  assert not missing, f'tests/cases.py has no case of {sorted(missing)}'


def test_cases_are_named_by_their_layers():
  assert len(set(ids(CASES))) == len(CASES)
  for case in main_cases():
    assert not case.variant, case.id
  for case in CASES:
    linen = case.linen()
    model = case.nnx(nnx.Rngs(0))
    assert type(linen).__name__ == case.name, case.id
    if case.name in fd.__all__:
      assert type(linen) is getattr(fd, case.name)
      assert type(model) is getattr(fd.nnx, case.name)


def shapes(tree):
  return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


@pytest.mark.parametrize('case', CASES, ids=ids(CASES))
def test_nnx_constructor_makes_the_twin_of_the_linen_layer(case):
  module = case.linen()
  inputs = case.inputs()
  key = jax.random.key(2)
  variables = module.init(jax.random.key(0), *inputs, **case.linen_kwargs(key))
  twin = fd.nnx.from_linen(module, variables)
  model = case.nnx(nnx.Rngs(0))
  assert type(model) is type(twin)
  weights = (nnx.Param, fd.nnx.Constant)
  assert shapes(nnx.to_pure_dict(nnx.state(model, weights))) == shapes(
    nnx.to_pure_dict(nnx.state(twin, weights))
  )
  assert getattr(model, 'deterministic', None) == getattr(
    twin, 'deterministic', None
  )
  want = module.apply(variables, *inputs, **case.linen_kwargs(key))
  got = model(*inputs, **case.nnx_kwargs(key))
  assert shapes(got) == shapes(want)
  # The weights of the linen layer, loaded, give its outputs.
  nnx.update(model, nnx.state(twin, weights))
  jax.tree.map(
    np.testing.assert_array_equal,
    model(*inputs, **case.nnx_kwargs(key)),
    want,
  )
