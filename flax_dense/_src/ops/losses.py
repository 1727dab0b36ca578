"""Masked losses and metrics for sequence labelling, reduced as Keras does."""

from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
import optax

from flax_dense._src import validate
from flax_dense._src.ops.pooling import masked_mean
from flax_dense._src.ops.reductions import narrow, widen

# Keras's backend.epsilon(): probabilities are clipped to [eps, 1 - eps].
_EPSILON = 1e-7


def _checked(
  labels: Any, predictions: Any, mask: Any, caller: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The arguments as arrays, the mask as booleans, after checking them."""
  labels = validate.as_array(labels, caller, 'labels')
  predictions = validate.as_array(predictions, caller, 'predictions')
  mask = validate.as_array(mask, caller, 'mask')
  if predictions.ndim < 1 or labels.shape != predictions.shape[:-1]:
    raise ValueError(
      f'{caller}: predictions must be (..., T, classes) and labels (..., T)'
      f' integers, got predictions of shape {predictions.shape} and labels'
      f' of shape {labels.shape}.'
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
      f'{caller}: labels must be integer class indices, got dtype'
      f' {labels.dtype}.'
    )
  if mask.shape != labels.shape:
    raise ValueError(
      f'{caller}: mask must have the shape of labels {labels.shape}, got'
      f' {mask.shape}.'
    )
  mask = mask.astype(bool)
  _check_label_range(labels, mask, predictions.shape[-1], caller)
  return labels, predictions, mask


def _check_label_range(
  labels: jax.Array, mask: jax.Array, classes: int, caller: str
) -> None:
  """Raises our own error for a kept label outside ``[0, classes)``.

  Only concrete labels and masks are checked: under ``jax.jit`` they are
  traced and an out-of-range kept label is not detected (it would read a
  clipped class; masked steps may hold anything either way).
  """
  if isinstance(labels, jax.core.Tracer) or isinstance(mask, jax.core.Tracer):
    return
  values, kept = np.asarray(labels), np.asarray(mask)
  bad = kept & ((values < 0) | (values >= classes))
  if bad.any():
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
      f'{caller}: labels at kept steps must be class indices in'
      f' [0, {classes}) for predictions with {classes} classes, got'
      f' {int(values[where])} at index {where} ({int(bad.sum())} kept'
      ' labels out of range); mask out padding steps instead.'
    )


def _mean_over_kept(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Keras's reduction of a masked loss: sum over kept steps / their count."""
  return masked_mean(values, mask, axis=tuple(range(mask.ndim)))


def masked_sparse_categorical_crossentropy(
  labels: Any,
  predictions: Any,
  mask: Any,
  from_logits: bool = False,
) -> jax.Array:
  """Cross-entropy averaged over the kept steps, as Keras reduces it.

  Keras 3 reduces a loss whose predictions carry a mask (e.g. behind a
  ``Masking`` layer) to ``sum(mask * loss) / sum(mask)``; this is that
  reduction of ``sparse_categorical_crossentropy``. Masked steps contribute
  nothing to the loss or its gradient, whatever their labels and
  predictions hold (padding, out-of-range labels, NaN), and a fully masked
  batch gives 0.

  With ``from_logits=False`` the predictions are probabilities, e.g. the
  outputs of ``PerPositionDense(..., activation='softmax')``; as Keras does,
  they are renormalised and clipped to ``[1e-7, 1 - 1e-7]`` before the log,
  so a confidently wrong step costs at most ``-log(1e-7) = 16.1`` and its
  gradient vanishes. With ``from_logits=True`` (layer ``activation=None``)
  the loss is ``optax.softmax_cross_entropy_with_integer_labels``, exact
  for any logits: prefer it for training.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> labels = jnp.array([[0, 1, -1]])                # -1: padding
    >>> probabilities = jnp.array([[[0.5, 0.5], [0.2, 0.8], [0.0, 0.0]]])
    >>> mask = labels >= 0
    >>> fd.masked_sparse_categorical_crossentropy(labels, probabilities, mask)
    Array(0.45814535, dtype=float32)

  Args:
    labels: ``(..., T)`` integer classes in ``[0, K)`` at kept steps.
    predictions: ``(..., T, K)`` probabilities, or logits with
      ``from_logits``.
    mask: ``(..., T)``, True (or nonzero) = keep.
    from_logits: whether ``predictions`` are logits.

  Returns:
    A scalar in the dtype of floating ``predictions``, computed in at least
    float32.

  Raises:
    TypeError: if ``from_logits`` is not a bool.
    ValueError: if the shapes do not fit together, labels are not
      integers, or a kept label is outside ``[0, K)`` (checked when labels
      and mask are concrete, not under ``jax.jit``).
  """
  caller = 'masked_sparse_categorical_crossentropy'
  from_logits = validate.check_bool(from_logits, caller, 'from_logits')
  labels, predictions, keep = _checked(labels, predictions, mask, caller)
  # As Keras computes losses in float32, float16 and bfloat16 predictions
  # are widened: their mean over many steps would overflow or stall.
  dtype = predictions.dtype
  predictions = widen(predictions)
  # Masked steps get harmless values before any math, so that no NaN or
  # out-of-range label there can leak into the gradient (0 * NaN = NaN).
  labels = jnp.where(keep, labels, 0)
  if from_logits:
    logits = jnp.where(keep[..., None], predictions, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  else:
    probabilities = jnp.where(keep[..., None], predictions, 1)
    probabilities = probabilities / jnp.sum(
      probabilities, axis=-1, keepdims=True
    )
    probabilities = jnp.clip(probabilities, _EPSILON, 1 - _EPSILON)
    log_likelihood = jnp.take_along_axis(
      jnp.log(probabilities), labels[..., None], axis=-1
    )
    losses = -log_likelihood[..., 0]
  return narrow(_mean_over_kept(losses, keep), dtype)


def masked_sparse_categorical_accuracy(
  labels: Any, predictions: Any, mask: Any
) -> jax.Array:
  """Fraction of kept steps whose arg-max prediction is the label.

  Keras's ``sparse_categorical_accuracy`` metric weighted by the mask:
  masked steps count neither as hits nor as misses; a fully masked batch
  gives 0.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> labels = jnp.array([[0, 1, 1]])
    >>> logits = jnp.array([[[2.0, 1.0], [3.0, 0.0], [0.0, 1.0]]])
    >>> mask = jnp.array([[True, True, False]])
    >>> fd.masked_sparse_categorical_accuracy(labels, logits, mask)
    Array(0.5, dtype=float32)

  Args:
    labels: ``(..., T)`` integer classes.
    predictions: ``(..., T, K)`` probabilities or logits.
    mask: ``(..., T)``, True (or nonzero) = keep.

  Returns:
    A float32 scalar in [0, 1].

  Raises:
    ValueError: if the shapes do not fit together, labels are not
      integers, or a kept label is outside ``[0, K)`` (checked when labels
      and mask are concrete, not under ``jax.jit``).
  """
  labels, predictions, mask = _checked(
    labels, predictions, mask, 'masked_sparse_categorical_accuracy'
  )
  hits = jnp.argmax(predictions, axis=-1) == labels
  return _mean_over_kept(hits.astype(jnp.float32), mask)
