"""Keras global pooling layers for NNX, skipping masked steps."""

from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.ops.pooling import (
  global_pooling_1d,
  masked_max,
  masked_mean,
)


class _GlobalPooling1D(nnx.Module):
  """Reduces the steps of ``(B, T, C)`` inputs, skipping masked steps."""

  reduce: ClassVar[Callable[..., jax.Array]]

  def __init__(
    self, data_format: str = 'channels_last', keepdims: bool = False
  ):
    validate.check_data_format(data_format, type(self).__name__)
    validate.check_bool(keepdims, type(self).__name__, 'keepdims')
    self.data_format = data_format
    self.keepdims = keepdims

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
  ) -> jax.Array:
    """Pools over the steps.

    Args:
      inputs: ``(B, T, C)``, or ``(B, C, T)`` for ``'channels_first'``.
      mask: ``(B, T)``, True = keep, or ``None`` to keep every step.

    Returns:
      ``(B, C)``; with ``keepdims``, ``(B, 1, C)`` or ``(B, C, 1)``.
    """
    return global_pooling_1d(
      type(self).reduce,
      jnp.asarray(inputs),
      mask,
      self.data_format,
      self.keepdims,
      type(self).__name__,
    )


class GlobalAveragePooling1D(_GlobalPooling1D):
  """Mean over the kept steps, as Keras ``GlobalAveragePooling1D`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]])
    >>> fd.nnx.GlobalAveragePooling1D()(x, fd.compute_mask(x))
    Array([[2., 3.]], dtype=float32)

  Args:
    data_format: ``'channels_last'`` for ``(B, T, C)`` inputs or
      ``'channels_first'`` for ``(B, C, T)``.
    keepdims: whether to keep the steps axis with size 1.
  """

  reduce = staticmethod(masked_mean)


class GlobalMaxPooling1D(_GlobalPooling1D):
  """Maximum over the kept steps, as Keras ``GlobalMaxPooling1D`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [3.0, -4.0], [9.0, 9.0]]])
    >>> fd.nnx.GlobalMaxPooling1D()(x, jnp.array([[True, True, False]]))
    Array([[3., 2.]], dtype=float32)

  Args:
    data_format: ``'channels_last'`` for ``(B, T, C)`` inputs or
      ``'channels_first'`` for ``(B, C, T)``.
    keepdims: whether to keep the steps axis with size 1.
  """

  reduce = staticmethod(masked_max)
