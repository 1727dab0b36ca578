"""The benchmarks' Pallas kernels, run in the Pallas interpreter on CPU.

They are the GPU peer that ``benchmarks/per_position_dense.py`` measures
against XLA; these tests keep them correct where no GPU is present: against
float64 NumPy, with sizes that are not multiples of the block shapes (the
wrappers pad them with zeros to whole blocks) and several block shapes.
"""

import functools
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'benchmarks'))
import pallas_per_position as pallas  # noqa: E402

HIGHEST = jax.lax.Precision.HIGHEST
SHAPES = [(8, 3, 20, 10), (40, 2, 37, 3), (17, 2, 130, 17)]


def arrays(batch, positions, in_features, features, seed=0):
  rng = np.random.default_rng(seed)
  return (
    rng.standard_normal((batch, positions, in_features)).astype(np.float32),
    rng.standard_normal((positions, in_features, features)).astype(np.float32),
    rng.standard_normal((positions, features)).astype(np.float32),
    rng.standard_normal((batch, positions, features)).astype(np.float32),
  )


def relative_error(got, want):
  got = np.asarray(got, np.float64)
  return np.max(np.abs(got - want)) / np.max(np.abs(want))


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('blocks', [(16, 16), (64, 128)])
def test_kernels_match_numpy(shape, blocks):
  x, w, b, g = arrays(*shape)
  x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
  rows, inner = blocks
  options = dict(
    precision=HIGHEST, block_rows=rows, block_in=inner, interpret=True
  )
  want = np.einsum('npd,pdk->npk', x64, w64)
  assert relative_error(pallas.forward(x, w, b, **options), want + b) < 1e-6
  assert relative_error(pallas.forward(x, w, None, **options), want) < 1e-6
  want = np.einsum('npd,npk->pdk', x64, g64)
  assert relative_error(pallas.kernel_gradient(x, g, **options), want) < 1e-6
  want = np.einsum('npk,pdk->npd', g64, w64)
  assert relative_error(pallas.inputs_gradient(g, w, **options), want) < 1e-6


def test_custom_vjp_gradients_match_numpy(monkeypatch):
  for name in ('forward', 'kernel_gradient', 'inputs_gradient'):
    fn = functools.partial(getattr(pallas, name), interpret=True)
    monkeypatch.setattr(pallas, name, fn)
  x, w, b, g = arrays(20, 3, 30, 5, seed=1)
  _, vjp = jax.vjp(pallas.per_position_dense, x, w, b)
  grad_x, grad_w, grad_b = vjp(g)
  x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
  assert relative_error(grad_x, np.einsum('npk,pdk->npd', g64, w64)) < 1e-5
  assert relative_error(grad_w, np.einsum('npd,npk->pdk', x64, g64)) < 1e-5
  assert relative_error(grad_b, g64.sum(0)) < 1e-6
