"""``LocallyConnected1D`` for NNX: unshared weights at every output step."""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.nnx.common import check_rngs, make_param
from flax_dense._src.ops import locally_connected as locally_connected_ops
from flax_dense._src.ops.activations import (
  ActivationFunction,
  resolve_activation,
)
from flax_dense._src.ops.locally_connected import locally_connected_1d_layer


class LocallyConnected1D(nnx.Module):
  """Keras 2's ``LocallyConnected1D``: a 1-D convolution without sharing.

  The NNX twin of :class:`flax_dense.LocallyConnected1D`, by the same pure
  function: ``y[..., o, :] = activation(window(o) @ kernel[o] + bias[o])``
  with Keras 2's ``implementation=1`` weight layout, kernel
  ``(output_length, kernel_size * in_features, filters)`` and bias
  ``(output_length, filters)``, where ``output_length = (input_length -
  kernel_size) // strides + 1``.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.nnx.LocallyConnected1D(10, 5, 8, 3, strides=2,
    ...                                   rngs=nnx.Rngs(0))
    >>> jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer)))
    {'bias': (4, 8), 'kernel': (4, 15, 8)}
    >>> layer(jnp.ones((4, 10, 5))).shape
    (4, 4, 8)

  Args:
    input_length: number of input steps (L).
    in_features: number of input features per step (D).
    filters: number of output features per step.
    kernel_size: steps per window, an int or a tuple of one int.
    strides: steps between the starts of two windows.
    padding: ``'valid'`` (no padding), the only padding of Keras 2's
      ``implementation=1``.
    data_format: ``'channels_last'`` for inputs ``(..., input_length,
      in_features)``, or ``'channels_first'`` for ``(..., in_features,
      input_length)`` and outputs ``(..., filters, output_length)``.
    activation: ``None``, a callable, or a Keras activation name applied to
      the outputs in their layout.
    use_bias: whether to add a bias per step and filter.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype of the weights.
    precision: numerical precision of the contraction.
    kernel_init: initializer of the kernel; default Keras's
      ``glorot_uniform``, whose fans count the output steps.
    bias_init: initializer of the ``(output_length, filters)`` bias.
    rngs: the rng streams; ``params`` draws the weights.
    kernel_metadata: metadata of the kernel variable, e.g. sharding names.
    bias_metadata: metadata of the bias variable.
  """

  #: Logical axis names of ``kernel`` (L_out, k * D, filters) and ``bias``.
  kernel_axes = ('positions', 'embed', 'classes')
  bias_axes = ('positions', 'classes')

  def __init__(
    self,
    input_length: int,
    in_features: int,
    filters: int,
    kernel_size: int | tuple[int],
    *,
    strides: int | tuple[int] = 1,
    padding: str = 'valid',
    data_format: str = 'channels_last',
    activation: str | ActivationFunction | None = None,
    use_bias: bool = True,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = initializers.glorot_uniform_any_rank,
    bias_init: Initializer = initializers.zeros,
    rngs: nnx.Rngs,
    kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
    bias_metadata: Mapping[str, Any] = MappingProxyType({}),
  ):
    layer = 'LocallyConnected1D'
    validate.check_positive_int(input_length, layer, 'input_length')
    validate.check_positive_int(in_features, layer, 'in_features')
    kernel_size, strides = locally_connected_ops.locally_connected_1d_options(
      filters, kernel_size, strides, padding, data_format, use_bias
    )
    resolve_activation(activation, layer)
    rngs = check_rngs(rngs, layer)
    example_shape = (input_length, in_features)
    if data_format == 'channels_first':
      example_shape = example_shape[::-1]
    kernel_shape = locally_connected_ops.locally_connected_1d_kernel_shape(
      example_shape, filters, kernel_size, strides, data_format, None
    )
    self.kernel = make_param(
      layer,
      'kernel',
      kernel_init,
      rngs,
      kernel_shape,
      param_dtype,
      kernel_metadata,
    )
    self.bias: nnx.Param | None = nnx.data(None)
    if use_bias:
      self.bias = make_param(
        layer,
        'bias',
        bias_init,
        rngs,
        (kernel_shape[0], filters),
        param_dtype,
        bias_metadata,
      )
    self.input_length = input_length
    self.in_features = in_features
    self.filters = filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.padding = padding
    self.data_format = data_format
    self.activation = activation
    self.use_bias = use_bias
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the locally connected layer.

    Args:
      inputs: ``(..., input_length, in_features)``, or ``(..., in_features,
        input_length)`` for ``'channels_first'``.

    Returns:
      ``(..., output_length, filters)``, or ``(..., filters,
      output_length)`` for ``'channels_first'``.

    Raises:
      ValueError: if ``inputs`` has rank below 2, or other steps or
        features than the layer was built for.
    """
    inputs = jnp.asarray(inputs)
    kernel = self.kernel[...]
    locally_connected_ops.locally_connected_1d_kernel_shape(
      inputs.shape,
      self.filters,
      self.kernel_size,
      self.strides,
      self.data_format,
      kernel.shape,
    )
    bias = None if self.bias is None else self.bias[...]
    return locally_connected_1d_layer(
      inputs,
      kernel,
      bias,
      self.kernel_size,
      self.strides,
      self.data_format,
      resolve_activation(self.activation, 'LocallyConnected1D'),
      self.dtype,
      self.precision,
    )
