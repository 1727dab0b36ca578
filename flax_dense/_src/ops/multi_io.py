"""A layer with two inputs and two outputs, the Keras tutorial's ``MyLayer``."""

import functools

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike

from flax_dense._src import validate
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
  validate.check_array_shape(kernel, caller, 'kernel', (None, None), '(D, K)')
  validate.check_array_shape(a, caller, 'a', kernel.shape[:1], '(D,)')
  validate.check_array_shape(b, caller, 'b', kernel.shape[1:], '(K,)')
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


def multi_io_kernel_shape(
  a_shape: tuple[int, ...],
  b_shape: tuple[int, ...],
  features: int,
  built_shape: tuple[int, ...] | None,
) -> tuple[int, int]:
  """The ``(D, K)`` kernel ``MultiIODense`` needs for ``a`` and ``b``."""
  if len(a_shape) < 1 or len(b_shape) < 1:
    raise ValueError(
      'MultiIODense: a and b must have shapes (..., D) and (..., features)'
      f' with rank >= 1, got shapes {a_shape} and {b_shape}.'
    )
  if b_shape[-1] != features:
    raise ValueError(
      f'MultiIODense: b must have shape (..., {features}) to be added'
      f' to a @ kernel with features={features}, got shape {b_shape}.'
    )
  if a_shape[:-1] != b_shape[:-1]:
    raise ValueError(
      'MultiIODense: a and b must have the same leading (batch) axes, got'
      f' shapes {a_shape} and {b_shape}.'
    )
  validate.check_nonempty_axes(
    'MultiIODense', a_shape, {'features of a': a_shape[-1]}
  )
  kernel_shape = (a_shape[-1], features)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'MultiIODense: a of shape {a_shape} has {a_shape[-1]} features and'
      f' needs a kernel of shape {kernel_shape} (in_features, features),'
      f' but the kernel was built with shape {tuple(built_shape)}.'
    )
  return kernel_shape
