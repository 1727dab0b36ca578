"""Masked reductions and the global pooling layers built on them."""

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src.core import check_data_format, check_rank


def _normalize(
  inputs: Any,
  mask: Any,
  axis: int | Sequence[int],
  caller: str,
) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
  """Inputs, the mask broadcastable to them and the reduced axes, checked."""
  inputs, mask = jnp.asarray(inputs), jnp.asarray(mask)
  if mask.shape != inputs.shape[: mask.ndim]:
    raise ValueError(
      f'{caller}: mask must have the shape of the leading axes of inputs,'
      f' got mask of shape {mask.shape} for inputs of shape {inputs.shape}.'
    )
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  normalized = []
  for a in axes:
    if not -inputs.ndim <= a < inputs.ndim or a % inputs.ndim >= mask.ndim:
      raise ValueError(
        f'{caller}: axis {a} must be an axis of the mask (shape'
        f' {mask.shape}), which covers the leading axes of inputs (shape'
        f' {inputs.shape}).'
      )
    normalized.append(a % inputs.ndim)
  keep = jnp.reshape(
    mask.astype(bool), mask.shape + (1,) * (inputs.ndim - mask.ndim)
  )
  return inputs, keep, tuple(normalized)


def masked_mean(
  inputs: Any,
  mask: Any,
  axis: int | Sequence[int],
  keepdims: bool = False,
) -> jax.Array:
  """Mean over the kept entries along ``axis``; masked ones count for nothing.

  The reduction of Keras ``GlobalAveragePooling1D`` called with a mask:
  ``sum(where(mask, x, 0)) / sum(mask)``. Masked entries may hold anything,
  even NaN: they reach neither the value nor the gradient. Where every entry
  along ``axis`` is masked the mean is 0 (Keras gives NaN from 0 / 0).

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0], [3.0], [100.0]]])   # (B, T, F)
    >>> fd.masked_mean(x, jnp.array([[True, True, False]]), axis=1)
    Array([[2.]], dtype=float32)

  Args:
    inputs: ``(*M, *F)``.
    mask: ``M``, the leading axes of ``inputs``; True (or nonzero) = keep.
    axis: axis or axes to reduce, all among the mask's.
    keepdims: whether to keep the reduced axes with size 1.

  Returns:
    ``inputs`` reduced over ``axis``.

  Raises:
    ValueError: if the mask's shape is not that of the leading axes of
      ``inputs``, or an axis is not one of the mask's.
  """
  inputs, keep, axes = _normalize(inputs, mask, axis, 'masked_mean')
  total = jnp.sum(jnp.where(keep, inputs, 0), axis=axes, keepdims=keepdims)
  count = jnp.sum(keep, axis=axes, keepdims=keepdims, dtype=total.dtype)
  return total / jnp.maximum(count, 1)


def masked_max(
  inputs: Any,
  mask: Any,
  axis: int | Sequence[int],
  keepdims: bool = False,
) -> jax.Array:
  """Maximum over the kept entries along ``axis``.

  Equal to Keras ``GlobalMaxPooling1D`` applied to the unpadded sequence
  (Keras's own layer ignores the mask). Masked entries reach neither the
  value nor the gradient; where every entry along ``axis`` is masked the
  result is 0.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0], [3.0], [100.0]]])   # (B, T, F)
    >>> fd.masked_max(x, jnp.array([[True, True, False]]), axis=1)
    Array([[3.]], dtype=float32)

  Args:
    inputs: ``(*M, *F)``.
    mask: ``M``, the leading axes of ``inputs``; True (or nonzero) = keep.
    axis: axis or axes to reduce, all among the mask's.
    keepdims: whether to keep the reduced axes with size 1.

  Returns:
    ``inputs`` reduced over ``axis``.

  Raises:
    ValueError: if the mask's shape is not that of the leading axes of
      ``inputs``, or an axis is not one of the mask's.
  """
  inputs, keep, axes = _normalize(inputs, mask, axis, 'masked_max')
  if jnp.issubdtype(inputs.dtype, jnp.floating):
    lowest = jnp.finfo(inputs.dtype).min
  else:
    lowest = jnp.iinfo(inputs.dtype).min
  largest = jnp.max(
    jnp.where(keep, inputs, lowest), axis=axes, keepdims=keepdims
  )
  return jnp.where(jnp.any(keep, axis=axes, keepdims=keepdims), largest, 0)


class _GlobalPooling1D(nn.Module):
  """Reduces the steps of ``(B, T, C)`` inputs, skipping masked steps."""

  data_format: str = 'channels_last'
  keepdims: bool = False

  reduce: ClassVar[Callable[..., jax.Array]]

  def __call__(self, inputs: Any, mask: Any = None) -> jax.Array:
    """Pools over the steps.

    Args:
      inputs: ``(B, T, C)`` for ``'channels_last'`` or ``(B, C, T)`` for
        ``'channels_first'``.
      mask: ``(B, T)``, True = keep, or ``None`` to keep every step.

    Returns:
      ``(B, C)``; with ``keepdims``, ``(B, 1, C)`` or ``(B, C, 1)``.

    Raises:
      ValueError: for an unknown ``data_format``, inputs not of rank 3, or
        a mask not of shape ``(B, T)``.
    """
    layer = type(self).__name__
    check_data_format(self.data_format, layer)
    inputs = jnp.asarray(inputs)
    channels_first = self.data_format == 'channels_first'
    layout = 'channels, steps' if channels_first else 'steps, channels'
    check_rank(inputs, 3, f'(batch, {layout})', layer)
    if channels_first:
      inputs = jnp.moveaxis(inputs, 1, 2)
    steps_shape = inputs.shape[:2]
    if mask is None:
      mask = jnp.ones(steps_shape, bool)
    mask = jnp.asarray(mask)
    if mask.shape != steps_shape:
      raise ValueError(
        f'{layer}: mask must be (batch, steps) = {steps_shape} for inputs of'
        f' shape {inputs.shape} ({self.data_format}), got {mask.shape}.'
      )
    outputs = type(self).reduce(inputs, mask, 1, self.keepdims)
    if channels_first and self.keepdims:
      outputs = jnp.moveaxis(outputs, 1, 2)
    return outputs


class GlobalAveragePooling1D(_GlobalPooling1D):
  """Mean over the steps, as Keras ``GlobalAveragePooling1D`` does.

  With a mask the mean runs over the kept steps only, as in Keras (see
  :func:`masked_mean`); a fully masked sequence gives 0 instead of NaN.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]])
    >>> mask = fd.compute_mask(x)
    >>> fd.GlobalAveragePooling1D().apply({}, x, mask)
    Array([[2., 3.]], dtype=float32)

  Attributes:
    data_format: ``'channels_last'`` for ``(B, T, C)`` inputs or
      ``'channels_first'`` for ``(B, C, T)``.
    keepdims: whether to keep the steps axis with size 1.
  """

  reduce = staticmethod(masked_mean)


class GlobalMaxPooling1D(_GlobalPooling1D):
  """Maximum over the steps, as Keras ``GlobalMaxPooling1D`` does.

  With a mask the maximum runs over the kept steps only (see
  :func:`masked_max`), which Keras's layer does not offer: it ignores the
  mask. Without a mask it is Keras's layer exactly.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [3.0, -4.0], [9.0, 9.0]]])
    >>> fd.GlobalMaxPooling1D().apply({}, x, jnp.array([[True, True, False]]))
    Array([[3., 2.]], dtype=float32)

  Attributes:
    data_format: ``'channels_last'`` for ``(B, T, C)`` inputs or
      ``'channels_first'`` for ``(B, C, T)``.
    keepdims: whether to keep the steps axis with size 1.
  """

  reduce = staticmethod(masked_max)
