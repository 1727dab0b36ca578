"""Keras global pooling layers for linen, skipping masked steps."""

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src.ops.pooling import (
  global_pooling_1d,
  masked_max,
  masked_mean,
)


class _GlobalPooling1D(nn.Module):
  """Reduces the steps of ``(B, T, C)`` inputs, skipping masked steps."""

  data_format: str = 'channels_last'
  keepdims: bool = False

  reduce: ClassVar[Callable[..., jax.Array]]

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
  ) -> jax.Array:
    """Pools over the steps.

    Args:
      inputs: ``(B, T, C)`` for ``'channels_last'`` or ``(B, C, T)`` for
        ``'channels_first'``.
      mask: ``(B, T)``, True = keep, or ``None`` to keep every step.

    Returns:
      ``(B, C)``; with ``keepdims``, ``(B, 1, C)`` or ``(B, C, 1)``.

    Raises:
      TypeError: if ``data_format`` is not a string or ``keepdims`` not a
        bool.
      ValueError: for an unknown ``data_format``, inputs not of rank 3, or
        a mask not of shape ``(B, T)``.
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
