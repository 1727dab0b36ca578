"""Masked reductions and the global pooling layers built on them."""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from flax_dense._src import validate
from flax_dense._src.ops.reductions import narrow, widen


def _normalize(
  inputs: Any,
  mask: Any,
  axis: int | Sequence[int],
  caller: str,
) -> tuple[jax.Array, jax.Array, tuple[int, ...]]:
  """Inputs, the mask broadcastable to them and the reduced axes, checked."""
  axes = validate.check_axes(axis, caller)
  axes = (axes,) if isinstance(axes, int) else axes
  inputs, mask = jnp.asarray(inputs), jnp.asarray(mask)
  if mask.ndim < 1 or mask.shape != inputs.shape[: mask.ndim]:
    raise ValueError(
      f'{caller}: mask must have the shape of the leading axes of inputs,'
      f' got mask of shape {mask.shape} for inputs of shape {inputs.shape}.'
    )
  normalized = []
  for a in axes:
    if not -inputs.ndim <= a < inputs.ndim or a % inputs.ndim >= mask.ndim:
      raise ValueError(
        f'{caller}: axis {a} must be an axis of the mask (shape'
        f' {mask.shape}), which covers the leading axes of inputs (shape'
        f' {inputs.shape}).'
      )
    normalized.append(a % inputs.ndim)
  if len(set(normalized)) != len(normalized):
    raise ValueError(f'{caller}: axis {axis} names an axis twice.')
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
    ``inputs`` reduced over ``axis``, in the dtype of floating ``inputs``
    (float32 for integers).

  Raises:
    TypeError: if ``axis`` is not an integer or a tuple of them, or
      ``keepdims`` not a bool.
    ValueError: if the mask's shape is not that of the leading axes of
      ``inputs`` (a scalar mask included), or an axis is not one of the
      mask's.
  """
  keepdims = validate.check_bool(keepdims, 'masked_mean', 'keepdims')
  inputs, keep, axes = _normalize(inputs, mask, axis, 'masked_mean')
  # float16 and bfloat16 are summed (and counted) in float32: a long axis
  # would overflow float16 or stall bfloat16.
  total = jnp.sum(
    jnp.where(keep, widen(inputs), 0), axis=axes, keepdims=keepdims
  )
  count = jnp.sum(keep, axis=axes, keepdims=keepdims, dtype=total.dtype)
  return narrow(total / jnp.maximum(count, 1), inputs.dtype)


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
    TypeError: if ``axis`` is not an integer or a tuple of them, or
      ``keepdims`` not a bool.
    ValueError: if the mask's shape is not that of the leading axes of
      ``inputs`` (a scalar mask included), or an axis is not one of the
      mask's.
  """
  keepdims = validate.check_bool(keepdims, 'masked_max', 'keepdims')
  inputs, keep, axes = _normalize(inputs, mask, axis, 'masked_max')
  if jnp.issubdtype(inputs.dtype, jnp.floating):
    lowest = jnp.finfo(inputs.dtype).min
  else:
    lowest = jnp.iinfo(inputs.dtype).min
  largest = jnp.max(
    jnp.where(keep, inputs, lowest), axis=axes, keepdims=keepdims
  )
  return jnp.where(jnp.any(keep, axis=axes, keepdims=keepdims), largest, 0)


def global_pooling_1d(
  reduce: Callable[..., jax.Array],
  inputs: jax.Array,
  mask: jax.typing.ArrayLike | None,
  data_format: str,
  keepdims: bool,
  layer: str,
) -> jax.Array:
  """The global 1D pooling layers of both front ends, checked.

  Args:
    reduce: :func:`masked_mean` or :func:`masked_max`.
    inputs: ``(B, T, C)`` for ``'channels_last'`` or ``(B, C, T)``.
    mask: ``(B, T)``, True = keep, or ``None``.
    data_format: ``'channels_last'`` or ``'channels_first'``.
    keepdims: whether to keep the steps axis with size 1.
    layer: name of the calling layer, used in error messages.

  Returns:
    ``(B, C)``; with ``keepdims``, ``(B, 1, C)`` or ``(B, C, 1)``.
  """
  validate.check_data_format(data_format, layer)
  keepdims = validate.check_bool(keepdims, layer, 'keepdims')
  inputs = jnp.asarray(inputs)
  channels_first = data_format == 'channels_first'
  layout = 'channels, steps' if channels_first else 'steps, channels'
  validate.check_rank(inputs, layer, 3, f'(batch, {layout})')
  if channels_first:
    inputs = jnp.moveaxis(inputs, 1, 2)
  steps_shape = inputs.shape[:2]
  if mask is None:
    mask = jnp.ones(steps_shape, bool)
  mask = jnp.asarray(mask)
  if mask.shape != steps_shape:
    raise ValueError(
      f'{layer}: mask must be (batch, steps) = {steps_shape} for inputs of'
      f' shape {inputs.shape} ({data_format}), got {mask.shape}.'
    )
  outputs = reduce(inputs, mask, 1, keepdims)
  if channels_first and keepdims:
    outputs = jnp.moveaxis(outputs, 1, 2)
  return outputs
