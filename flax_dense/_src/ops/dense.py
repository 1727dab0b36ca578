"""Per-position dense: one weight matrix for every position."""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike
from jax import lax

from flax_dense._src import validate
from flax_dense._src.ops import dense_kernels
from flax_dense._src.ops.batching import vmap_leading


def per_position_dense(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  precision: PrecisionLike = None,
) -> jax.Array:
  """Multiplies every position by its own matrix, for one example.

  ``y[p] = inputs[p] @ kernel[p] + bias[p]``.

  Args:
    inputs: ``(P, D)``.
    kernel: ``(P, D, K)``.
    bias: ``(P, K)`` or ``None``.
    precision: passed to the contraction.

  Returns:
    ``(P, K)``.

  Raises:
    ValueError: if the shapes do not fit together.
  """
  caller = 'per_position_dense'
  validate.check_array_shape(kernel, caller, 'kernel', (None,) * 3, '(P, D, K)')
  positions, in_features, features = kernel.shape
  validate.check_array_shape(
    inputs, caller, 'inputs', (positions, in_features), '(P, D)'
  )
  outputs = jnp.einsum('pd,pdk->pk', inputs, kernel, precision=precision)
  if bias is not None:
    validate.check_array_shape(
      bias, caller, 'bias', (positions, features), '(P, K)'
    )
    outputs = outputs + bias
  return outputs


def _per_position_dense_leading(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None,
  precision: PrecisionLike,
) -> jax.Array:
  """:func:`per_position_dense` over every leading axis of ``(..., P, D)``.

  The path is chosen by backend and shape, with equal results to float
  rounding: on CPU, batches that
  :func:`~flax_dense._src.ops.dense_kernels.prefers_chunks` go through
  chunks of positions; everywhere else ``jax.vmap`` of the per-example
  function.
  """

  def reference(inputs, kernel, bias):
    return vmap_leading(
      lambda x, k, b: per_position_dense(x, k, b, precision),
      inputs,
      2,
      kernel,
      bias,
    )

  if not dense_kernels.prefers_chunks(inputs.shape, inputs.dtype):
    return reference(inputs, kernel, bias)

  def chunked(inputs, kernel, bias):
    flat = jnp.reshape(
      inputs, (math.prod(inputs.shape[:-2]), *inputs.shape[-2:])
    )
    outputs = dense_kernels.per_position_dense_chunked(
      flat, kernel, bias, precision
    )
    return jnp.reshape(outputs, (*inputs.shape[:-1], outputs.shape[-1]))

  return lax.platform_dependent(
    inputs, kernel, bias, cpu=chunked, default=reference
  )


# Jitted so that eager calls compile once per shape: the loops inside (chunks,
# the decoder scan) would otherwise be compiled again at every call.
@functools.partial(
  jax.jit, static_argnames=('activation', 'dtype', 'precision')
)
def per_position_dense_layer(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None,
  activation: Callable[[jax.Array], jax.Array],
  dtype: Dtype | None = None,
  precision: PrecisionLike = None,
) -> jax.Array:
  """The ``PerPositionDense`` layer of both front ends, over a batch.

  Args:
    inputs: ``(..., P, D)``, already checked against ``kernel``.
    kernel: ``(P, D, K)``.
    bias: ``(P, K)`` or ``None``.
    activation: applied to the outputs.
    dtype: the computation dtype, or ``None`` to infer it.
    precision: passed to the contraction.

  Returns:
    ``(..., P, K)``.
  """
  inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=dtype)
  return activation(
    _per_position_dense_leading(inputs, kernel, bias, precision)
  )


def per_position_dense_kernel_shape(
  inputs_shape: tuple[int, ...],
  features: int,
  built_shape: tuple[int, ...] | None,
) -> tuple[int, int, int]:
  """The ``(P, D, K)`` kernel that inputs ``(..., P, D)`` need."""
  if len(inputs_shape) < 2:
    raise ValueError(
      'PerPositionDense: inputs must have shape (..., positions, features)'
      f' with rank >= 2, got shape {inputs_shape}.'
    )
  positions, in_features = inputs_shape[-2:]
  validate.check_nonempty_axes(
    'PerPositionDense',
    inputs_shape,
    {'positions': positions, 'features': in_features},
  )
  kernel_shape = (positions, in_features, features)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'PerPositionDense: inputs of shape {inputs_shape} have {positions}'
      f' positions of {in_features} features and need a kernel of shape'
      f' {kernel_shape} (positions, in_features, features), but the kernel'
      f' was built with shape {tuple(built_shape)}: the layer is built for'
      f' {built_shape[1]} input features at {built_shape[0]} positions, got'
      f' {in_features} at {positions}; inputs must be'
      ' (..., positions, features).'
    )
  return kernel_shape
