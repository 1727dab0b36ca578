"""Per-position dense layer: one weight matrix for every position."""

from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike
from jax import lax

from flax_dense._src import dense_kernels
from flax_dense._src.activations import Activation, resolve_activation
from flax_dense._src.batching import vmap_leading
from flax_dense._src.checks import check_positive_int, stored_shape
from flax_dense._src.regularizers import (
  Regularizer,
  check_regularizer,
  sow_activity_loss,
)

# Glorot-uniform with the fans of one position (fan_in = D, fan_out = K):
# axis 0 (positions) is a batch axis of independent matrices, so every
# position starts like a standalone Dense layer.
default_kernel_init = nn.initializers.glorot_uniform(batch_axis=(0,))


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
  """
  positions, in_features, features = kernel.shape
  chex.assert_shape(
    inputs,
    (positions, in_features),
    custom_message='per_position_dense: inputs must be (P, D).',
  )
  outputs = jnp.einsum('pd,pdk->pk', inputs, kernel, precision=precision)
  if bias is not None:
    chex.assert_shape(
      bias,
      (positions, features),
      custom_message='per_position_dense: bias must be (P, K).',
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
  :func:`~flax_dense._src.dense_kernels.prefers_chunks` go through chunks
  of positions; everywhere else ``jax.vmap`` of the per-example function.
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
    flat = jnp.reshape(inputs, (-1, *inputs.shape[-2:]))
    outputs = dense_kernels.per_position_dense_chunked(
      flat, kernel, bias, precision
    )
    return jnp.reshape(outputs, (*inputs.shape[:-1], outputs.shape[-1]))

  return lax.platform_dependent(
    inputs, kernel, bias, cpu=chunked, default=reference
  )


class PerPositionDense(nn.Module):
  """A dense layer with its own kernel and bias for every position.

  Maps ``(..., P, D)`` to ``(..., P, features)`` with
  ``y[..., p, :] = activation(x[..., p, :] @ kernel[p] + bias[p])``: the
  layer of Keras ``EinsumDense('abc,bcd->abd', bias_axes='bd')``,
  ``LocallyConnected1D(features, 1)`` and the classic custom ``Dense2D``,
  with the same parameter layout, so their weights port directly. All
  leading axes are batch axes.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.PerPositionDense(features=10, activation='softmax')
    >>> x = jnp.ones((8, 1024, 256))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (1024, 10), 'kernel': (1024, 256, 10)}}
    >>> layer.apply(variables, x).shape
    (8, 1024, 10)

  For sharding, the weights' logical axis names are the class constants
  ``kernel_axes`` and ``bias_axes``, positions first: see
  :mod:`flax_dense.sharding`.

  Speed: the implementation is chosen by backend and shape, with the same
  results to float32 rounding and the same parameters. On CPU, float32
  batches of 1 MiB or more go through chunks of positions
  (``dense_kernels``), because XLA:CPU would otherwise transpose the whole
  input element by element. On a 2-core CPU that measured 2.9-4x faster
  than Keras 3 ``EinsumDense`` from 64 MiB of input (e.g.
  ``(64, 1024, 256)``), forward and training step, and 1.5-2.4x at 8-16 MiB.
  Everywhere else (GPU, TPU, smaller or bfloat16 batches, several CPU
  devices) the layer is ``jax.vmap`` of :func:`per_position_dense`. On GPU,
  XLA compiles that to one Triton GEMM fusion that reads the input in
  place. On an H100 it ran within 1.1-1.5x of the memory roofline from
  64 MiB, as fast as the Pallas kernels that were tried. Figures:
  ``BUILD_NOTES.md``, ``benchmarks/per_position_dense.py``.

  Attributes:
    features: number of output features per position (K).
    use_bias: whether to add a bias per position.
    dtype: the dtype of the computation (default: inferred from inputs and
      params).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contraction, see ``jax.lax.Precision``.
    kernel_init: initializer of the ``(P, D, features)`` kernel; the default
      is Glorot-uniform with the fans of one position.
    bias_init: initializer of the ``(P, features)`` bias.
    activation: ``None``, a callable, or a Keras activation name
      (``'softmax'``, ``'tanh'``, ``'relu'``, ...) applied to the outputs;
      ``softmax`` normalises over the features of each position.
    activity_regularizer: ``None`` or a penalty of the outputs, e.g.
      ``fd.l1_l2(l2=0.01)``; as in Keras 3 it is divided by the batch size
      (the leading axis) and sown into the ``losses`` collection, summed by
      ``fd.collect_losses`` after ``apply(..., mutable=['losses'])``.
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = nn.initializers.zeros_init()
  activation: str | Activation | None = None
  activity_regularizer: Regularizer | None = None

  #: Logical axis names of ``kernel`` (P, D, K) and ``bias`` (P, K).
  kernel_axes: ClassVar[tuple[str, ...]] = ('positions', 'embed', 'classes')
  bias_axes: ClassVar[tuple[str, ...]] = ('positions', 'classes')

  @nn.compact
  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the per-position dense layer.

    Args:
      inputs: ``(..., P, D)``.

    Returns:
      ``(..., P, features)``.

    Raises:
      ValueError: if ``inputs`` has rank below 2, or P or D differ from the
        shape the parameters were built for.
    """
    activation = resolve_activation(self.activation, 'PerPositionDense')
    check_regularizer(self.activity_regularizer, 'PerPositionDense')
    check_positive_int(self.features, 'PerPositionDense', 'features')
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2:
      raise ValueError(
        'PerPositionDense: inputs must have shape (..., positions, features)'
        f' with rank >= 2, got shape {inputs.shape}.'
      )
    positions, in_features = inputs.shape[-2:]
    kernel_shape = (positions, in_features, self.features)
    built_shape = stored_shape(self, 'params', 'kernel')
    if built_shape is not None and built_shape != kernel_shape:
      raise ValueError(
        f'PerPositionDense: inputs of shape {inputs.shape} have {positions}'
        f' positions of {in_features} features and need a kernel of shape'
        f' {kernel_shape} (positions, in_features, features), but the kernel'
        f' was built with shape {built_shape}; inputs must be'
        ' (..., positions, features).'
      )
    kernel = self.param(
      'kernel', self.kernel_init, kernel_shape, self.param_dtype
    )
    bias = None
    if self.use_bias:
      bias = self.param(
        'bias', self.bias_init, (positions, self.features), self.param_dtype
      )
    inputs, kernel, bias = nn.dtypes.promote_dtype(
      inputs, kernel, bias, dtype=self.dtype
    )
    outputs = _per_position_dense_leading(inputs, kernel, bias, self.precision)
    outputs = activation(outputs)
    sow_activity_loss(self, self.activity_regularizer, outputs)
    return outputs
