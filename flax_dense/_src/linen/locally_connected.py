"""Locally connected 1-D layer: unshared weights at every output step."""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import stored_shape
from flax_dense._src.ops import locally_connected as locally_connected_ops
from flax_dense._src.ops.activations import (
  ActivationFunction,
  resolve_activation,
)
from flax_dense._src.ops.locally_connected import locally_connected_1d_layer


class LocallyConnected1D(nn.Module):
  """Keras 2's ``LocallyConnected1D``: a 1-D convolution without sharing.

  Like a ``'valid'`` 1-D convolution, except that every output step ``o``
  has its own weights: ``y[..., o, :] = activation(window(o) @ kernel[o] +
  bias[o])``, where ``window(o)`` flattens input steps ``o * strides`` to
  ``o * strides + kernel_size - 1``. Semantics and weight layout are those
  of tf.keras 2.x ``LocallyConnected1D`` with its default
  ``implementation=1``: kernel ``(output_length, kernel_size * D,
  filters)``, bias ``(output_length, filters)``, with
  ``output_length = (steps - kernel_size) // strides + 1``, so its weights
  port directly (those of ``implementation=2`` and ``3`` convert to this
  layout without loss). All leading axes are batch axes.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.LocallyConnected1D(filters=8, kernel_size=3, strides=2)
    >>> x = jnp.ones((4, 10, 5))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (4, 8), 'kernel': (4, 15, 8)}}
    >>> layer.apply(variables, x).shape
    (4, 4, 8)

  With ``kernel_size=1`` and ``strides=1`` it is
  :class:`~flax_dense.PerPositionDense` with the same weights.

  Attributes:
    filters: number of output features per step.
    kernel_size: steps per window, an int or a tuple of one int.
    strides: steps between the starts of two windows, an int or a tuple of
      one int.
    padding: ``'valid'`` (no padding), the only padding of Keras 2's
      ``implementation=1``.
    data_format: ``'channels_last'`` for inputs ``(..., steps, features)``
      and outputs ``(..., output_length, filters)``, or ``'channels_first'``
      for ``(..., features, steps)`` and ``(..., filters, output_length)``.
      As in Keras 2 the window's features are then ordered channel-major and
      the stored bias is read as ``bias.reshape(filters, output_length)``.
    use_bias: whether to add a bias per step and filter.
    dtype: the dtype of the computation (default: inferred from inputs and
      params).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contraction, see
      ``jax.lax.Precision``.
    kernel_init: initializer of the ``(output_length, kernel_size * D,
      filters)`` kernel; the default is Keras's ``glorot_uniform``, whose
      fans count the output steps: ``fan_in = output_length * kernel_size *
      D``, ``fan_out = output_length * filters``.
    bias_init: initializer of the ``(output_length, filters)`` bias.
    activation: ``None``, a callable, or a Keras activation name applied to
      the outputs in their layout (``softmax`` normalises the last axis).
  """

  filters: int
  kernel_size: int | tuple[int]
  strides: int | tuple[int] = 1
  padding: str = 'valid'
  data_format: str = 'channels_last'
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = initializers.glorot_uniform_any_rank
  bias_init: Initializer = initializers.zeros
  activation: str | ActivationFunction | None = None

  #: Logical axis names of ``kernel`` (L_out, k * D, filters) and ``bias``.
  kernel_axes: ClassVar[tuple[str, ...]] = ('positions', 'embed', 'classes')
  bias_axes: ClassVar[tuple[str, ...]] = ('positions', 'classes')

  @nn.compact
  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the locally connected layer.

    Args:
      inputs: ``(..., steps, features)``, or ``(..., features, steps)`` for
        ``'channels_first'``.

    Returns:
      ``(..., output_length, filters)``, or ``(..., filters,
      output_length)`` for ``'channels_first'``.

    Raises:
      TypeError: for an option of the wrong type (see
        ``locally_connected_ops.locally_connected_1d_options``) or an initializer that is
        not callable.
      ValueError: for an invalid option, inputs of rank below 2 or with
        fewer steps than ``kernel_size``, or steps or features other than
        the parameters were built for.
    """
    activation = resolve_activation(self.activation, 'LocallyConnected1D')
    kernel_size, strides = locally_connected_ops.locally_connected_1d_options(
      self.filters,
      self.kernel_size,
      self.strides,
      self.padding,
      self.data_format,
      self.use_bias,
    )
    kernel_init = validate.checked_initializer(
      self.kernel_init, 'LocallyConnected1D', 'kernel'
    )
    bias_init = validate.checked_initializer(
      self.bias_init, 'LocallyConnected1D', 'bias'
    )
    inputs = jnp.asarray(inputs)
    kernel_shape = locally_connected_ops.locally_connected_1d_kernel_shape(
      inputs.shape,
      self.filters,
      kernel_size,
      strides,
      self.data_format,
      stored_shape(self, 'params', 'kernel'),
    )
    kernel = self.param('kernel', kernel_init, kernel_shape, self.param_dtype)
    bias = None
    if self.use_bias:
      bias = self.param(
        'bias',
        bias_init,
        (kernel_shape[0], self.filters),
        self.param_dtype,
      )
    return locally_connected_1d_layer(
      inputs,
      kernel,
      bias,
      kernel_size,
      strides,
      self.data_format,
      activation,
      self.dtype,
      self.precision,
    )
