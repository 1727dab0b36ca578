"""Keras-style masking of padded timesteps."""

from typing import Any

import jax
import jax.numpy as jnp

from flax_dense._src import checks


def compute_mask(inputs: Any, mask_value: float = 0.0) -> jax.Array:
  """The boolean mask of Keras ``Masking``: True where a timestep is kept.

  A timestep is masked (False) when **all** of its features equal
  ``mask_value``; one differing feature keeps it.

  Args:
    inputs: ``(..., T, F)``; the last axis holds the features.
    mask_value: the padding value.

  Returns:
    ``(..., T)`` boolean mask, True = keep.
  """
  inputs = jnp.asarray(inputs)
  checks.check_min_rank(inputs, 1, '(..., timesteps, features)', 'compute_mask')
  return jnp.any(inputs != mask_value, axis=-1)


def masking(inputs: jax.Array, mask_value: float = 0.0) -> jax.Array:
  """Zeroes the timesteps whose features all equal ``mask_value``.

  Pure core of :class:`Masking`. It works one timestep at a time, so it
  accepts one example ``(T, F)`` as well as any number of leading axes.

  Args:
    inputs: ``(..., T, F)``.
    mask_value: the padding value.

  Returns:
    ``inputs`` with masked timesteps set to zero, same shape and dtype.
  """
  keep = compute_mask(inputs, mask_value)[..., None]
  return jnp.where(keep, inputs, jnp.zeros((), inputs.dtype))


def masking_layer(inputs: jax.Array, mask_value: float) -> jax.Array:
  """The ``Masking`` layer of both front ends, checked."""
  checks.check_min_rank(inputs, 1, '(..., timesteps, features)', 'Masking')
  return masking(inputs, mask_value)
