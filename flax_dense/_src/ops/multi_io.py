"""A layer with two inputs and two outputs, the Keras tutorial's ``MyLayer``."""

import functools

import chex
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike

from flax_dense._src.ops.batching import vmap_batch_axes


def multi_io_dense(
  a: jax.Array,
  b: jax.Array,
  kernel: jax.Array,
  precision: PrecisionLike = None,
) -> tuple[jax.Array, jax.Array]:
  """Projects ``a`` and adds ``b``; also averages ``b``. For one example.

  Args:
    a: ``(D,)``.
    b: ``(K,)``.
    kernel: ``(D, K)``.
    precision: passed to the contraction.

  Returns:
    ``(a @ kernel + b, mean(b))`` of shapes ``(K,)`` and ``()``.
  """
  chex.assert_shape(
    [a, b],
    [kernel.shape[:1], kernel.shape[1:]],
    custom_message='multi_io_dense: a must be (D,) and b (K,) for a (D, K)'
    ' kernel.',
  )
  return jnp.dot(a, kernel, precision=precision) + b, jnp.mean(b)


def multi_io_dense_layer(
  a: jax.Array,
  b: jax.Array,
  kernel: jax.Array,
  dtype: Dtype | None = None,
  precision: PrecisionLike = None,
) -> tuple[jax.Array, jax.Array]:
  """The ``MultiIODense`` layer of both front ends, over a batch.

  Args:
    a: ``(..., D)``, already checked against ``kernel``.
    b: ``(..., K)``, with the leading axes of ``a``.
    kernel: ``(D, K)``.
    dtype: the computation dtype, or ``None`` to infer it.
    precision: passed to the contraction.

  Returns:
    ``(..., K)`` and ``(...)``.
  """
  a, b, kernel = promote_dtype(a, b, kernel, dtype=dtype)
  return vmap_batch_axes(
    functools.partial(multi_io_dense, precision=precision),
    a.ndim - 1,
    (a, b),
    kernel,
  )
