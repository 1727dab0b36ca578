"""Keras-style masking of padded timesteps."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_rank(inputs: jax.Array, layer: str) -> None:
  if inputs.ndim < 1:
    raise ValueError(
      f'{layer}: inputs must have shape (..., timesteps, features) with rank'
      ' >= 1, got a scalar.'
    )


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
  _check_rank(inputs, 'compute_mask')
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


class Masking(nn.Module):
  """Zeroes padded timesteps, exactly as Keras ``Masking`` does.

  A timestep whose features all equal ``mask_value`` is set to zero. The
  boolean mask itself is a value in JAX, not hidden state: compute it with
  :func:`compute_mask` and hand it to the layers and losses that consume it.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [-1.0, -1.0], [3.0, -1.0]]])
    >>> fd.Masking(mask_value=-1.0).apply({}, x)
    Array([[[ 1.,  2.],
            [ 0.,  0.],
            [ 3., -1.]]], dtype=float32)
    >>> fd.compute_mask(x, mask_value=-1.0)
    Array([[ True, False,  True]], dtype=bool)

  Attributes:
    mask_value: the padding value.
  """

  mask_value: float = 0.0

  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the mask.

    Args:
      inputs: ``(..., T, F)``.

    Returns:
      ``(..., T, F)`` with masked timesteps zeroed.
    """
    inputs = jnp.asarray(inputs)
    _check_rank(inputs, 'Masking')
    return masking(inputs, self.mask_value)
