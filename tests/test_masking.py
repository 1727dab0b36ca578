"""Masking and compute_mask against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import flax_dense as fd
from flax_dense.functional import masking


def numpy_mask(x, mask_value):
  keep = np.empty(x.shape[:-1], bool)
  for index in np.ndindex(*x.shape[:-1]):
    keep[index] = not all(v == mask_value for v in x[index])
  return keep


@settings(max_examples=25, deadline=None)
@given(
  x=hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=4, max_side=4),
    elements=st.sampled_from([0.0, 1.0, -1.0, 2.5]),
  ),
  mask_value=st.sampled_from([0.0, -1.0]),
)
def test_matches_numpy(x, mask_value):
  keep = numpy_mask(x, mask_value)
  np.testing.assert_array_equal(fd.compute_mask(x, mask_value), keep)
  expected = np.where(keep[..., None], x, 0.0)
  np.testing.assert_array_equal(fd.Masking(mask_value).apply({}, x), expected)


def test_one_differing_feature_keeps_the_timestep():
  x = jnp.array([[[0.0, 0.0], [0.0, 1e-7], [-0.0, 0.0]]])
  np.testing.assert_array_equal(fd.compute_mask(x), [[False, True, False]])


def test_masked_timesteps_are_zero_even_for_infinite_mask_value():
  x = jnp.array([[jnp.inf, jnp.inf], [1.0, jnp.inf]])
  np.testing.assert_array_equal(
    masking(x, jnp.inf), [[0.0, 0.0], [1.0, jnp.inf]]
  )


def test_jit_and_vmap_and_grad():
  x = jnp.array([[[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]])
  jitted = jax.jit(fd.Masking().apply)({}, x)
  mapped = jax.vmap(masking)(x)
  np.testing.assert_array_equal(jitted, mapped)
  grads = jax.grad(lambda x: fd.Masking().apply({}, x).sum())(x)
  np.testing.assert_array_equal(
    grads, np.asarray(fd.compute_mask(x))[..., None] * np.ones_like(x)
  )


def test_scalar_input_is_an_error():
  with pytest.raises(ValueError, match='Masking: inputs must have shape'):
    fd.Masking().apply({}, jnp.float32(1.0))
  with pytest.raises(ValueError, match='compute_mask: inputs must have shape'):
    fd.compute_mask(1.0)
