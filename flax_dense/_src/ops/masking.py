"""Keras-style masking of padded timesteps."""

import math
from typing import Any

import jax
import jax.numpy as jnp

from flax_dense._src import validate


def _keep(inputs: jax.Array, mask_value: float) -> jax.Array:
  """``(..., T)``: True where a timestep has a feature other than the pad."""
  if math.isnan(mask_value):
    # NaN != NaN, so NaN padding is found by isnan, not by comparison.
    return jnp.any(~jnp.isnan(inputs), axis=-1)
  return jnp.any(inputs != mask_value, axis=-1)


def _checked(inputs: Any, mask_value: Any, caller: str) -> tuple:
  mask_value = check_mask_value(mask_value, caller)
  inputs = jnp.asarray(inputs)
  validate.check_min_rank(inputs, caller, 1, '(..., timesteps, features)')
  return inputs, mask_value


#: What a layer does with the Keras mask of its input: ``'compute'`` makes
#: one from its inputs (``layer.compute_mask(inputs)``), ``'propagate'``
#: passes it on unread, ``'consume'`` reads it (``mask=``) and ends it,
#: ``'use'`` reads it and passes it on, ``'drop'`` ends it unread.
MASK_FLOWS = ('compute', 'propagate', 'consume', 'use', 'drop')


def compute_mask(inputs: Any, mask_value: float = 0.0) -> jax.Array:
  """The boolean mask of Keras ``Masking``: True where a timestep is kept.

  A timestep is masked (False) when **all** of its features equal
  ``mask_value``; one differing feature keeps it. With
  ``mask_value=float('nan')`` the timesteps whose features are all NaN are
  masked (Keras cannot express this: NaN equals nothing).

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> nan = float('nan')
    >>> x = jnp.array([[[1.0, 2.0], [nan, nan], [3.0, nan]]])
    >>> fd.compute_mask(x, mask_value=nan)
    Array([[ True, False,  True]], dtype=bool)

  Args:
    inputs: ``(..., T, F)``; the last axis holds the features.
    mask_value: the padding value, a real number (NaN and infinities
      allowed).

  Returns:
    ``(..., T)`` boolean mask, True = keep.

  Raises:
    TypeError: if ``mask_value`` is not a real number (``None``, a string,
      a complex number, a bool).
    ValueError: if ``inputs`` is a scalar.
  """
  inputs, mask_value = _checked(inputs, mask_value, 'compute_mask')
  return _keep(inputs, mask_value)


def masking(inputs: jax.Array, mask_value: float = 0.0) -> jax.Array:
  """Zeroes the timesteps whose features all equal ``mask_value``.

  Pure core of :class:`Masking`. It works one timestep at a time, so it
  accepts one example ``(T, F)`` as well as any number of leading axes.

  Args:
    inputs: ``(..., T, F)``.
    mask_value: the padding value, a real number; NaN masks the timesteps
      that are all NaN (see :func:`compute_mask`).

  Returns:
    ``inputs`` with masked timesteps set to zero, same shape and dtype.

  Raises:
    TypeError: if ``mask_value`` is not a real number.
    ValueError: if ``inputs`` is a scalar.
  """
  inputs, mask_value = _checked(inputs, mask_value, 'masking')
  keep = _keep(inputs, mask_value)[..., None]
  return jnp.where(keep, inputs, jnp.zeros((), inputs.dtype))


def masking_layer(inputs: jax.Array, mask_value: float) -> jax.Array:
  """The ``Masking`` layer of both front ends, checked."""
  inputs, mask_value = _checked(inputs, mask_value, 'Masking')
  return masking(inputs, mask_value)


def check_mask_value(value: Any, layer: str) -> float:
  """``Masking``'s ``mask_value`` as a float: any real number, NaN included.

  Raises:
    TypeError: unless ``value`` is a real number (``None``, a string, a
      complex number and a bool are not).
  """
  return validate.check_real(
    value,
    layer,
    'mask_value',
    'a real number (the padding value; NaN masks all-NaN timesteps)',
    allow_nan=True,
    allow_inf=True,
  )
