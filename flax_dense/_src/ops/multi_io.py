"""A layer with two inputs and two outputs, the Keras tutorial's ``MyLayer``."""

import functools

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike

from flax_dense._src import checks
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

  Raises:
    ValueError: if the shapes do not fit together.
  """
  caller = 'multi_io_dense'
  checks.check_array_shape(caller, 'kernel', kernel, (None, None), '(D, K)')
  checks.check_array_shape(caller, 'a', a, kernel.shape[:1], '(D,)')
  checks.check_array_shape(caller, 'b', b, kernel.shape[1:], '(K,)')
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
