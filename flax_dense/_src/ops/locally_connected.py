"""Locally connected 1-D: a convolution whose weights differ at every step.

Keras 2's ``LocallyConnected1D`` (``implementation=1``) as a per-position
dense layer over windows: the ``kernel_size`` input steps a window covers
are flattened into one vector of ``kernel_size * D`` features, and output
step ``o`` multiplies its window by its own matrix ``kernel[o]``, the
per-position contraction of ``PerPositionDense``. The windows are built
with ``kernel_size`` strided slices (no gather, so the gradient is a pad,
not a scatter).
"""

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, PrecisionLike

from flax_dense._src import validate
from flax_dense._src.ops.batching import vmap_leading
from flax_dense._src.ops.dense import (
  per_position_dense,
  per_position_dense_layer,
)


def windows(
  inputs: jax.Array, kernel_size: int, strides: int, data_format: str
) -> jax.Array:
  """Every window of ``kernel_size`` steps, flattened as Keras 2 does.

  Keras's ``local_conv`` flattens the window slice of each layout in memory
  order, so the feature of step ``j`` and channel ``d`` of a window is
  ``j * D + d`` for ``channels_last`` and ``d * kernel_size + j`` for
  ``channels_first``; the kernel's middle axis follows the same order.

  Args:
    inputs: ``(..., L, D)`` for ``'channels_last'``, ``(..., D, L)`` for
      ``'channels_first'``, with ``L >= kernel_size``.
    kernel_size: steps per window.
    strides: steps between the starts of two windows.
    data_format: ``'channels_last'`` or ``'channels_first'``.

  Returns:
    ``(..., L_out, kernel_size * D)`` with
    ``L_out = (L - kernel_size) // strides + 1``.
  """
  step_axis = -2 if data_format == 'channels_last' else -1
  length = valid_output_length(inputs.shape[step_axis], kernel_size, strides)
  if kernel_size == 1 and strides == 1 and data_format == 'channels_last':
    return inputs
  span = (length - 1) * strides + 1
  slices = [
    jax.lax.slice_in_dim(inputs, j, j + span, strides, axis=step_axis)
    for j in range(kernel_size)
  ]
  if data_format == 'channels_last':
    stacked = jnp.stack(slices, axis=-2)  # (..., L_out, k, D)
  else:
    stacked = jnp.stack(slices, axis=-1)  # (..., D, L_out, k)
    stacked = jnp.swapaxes(stacked, -3, -2)  # (..., L_out, D, k)
  return jnp.reshape(
    stacked, (*stacked.shape[:-2], stacked.shape[-2] * stacked.shape[-1])
  )


def _position_bias(bias: jax.Array | None, data_format: str):
  """The ``(L_out, filters)`` bias added at each output step.

  For ``channels_first`` Keras 2's ``bias_add`` *reshapes* (does not
  transpose) the stored ``(L_out, filters)`` bias to ``(filters, L_out)``,
  so output ``[f, o]`` gets ``bias.reshape(filters, L_out)[f, o]``; the
  same numbers are added here, so ported weights give Keras's outputs.
  """
  if bias is None or data_format == 'channels_last':
    return bias
  length, filters = bias.shape
  return jnp.reshape(bias, (filters, length)).T


def _to_layout(outputs: jax.Array, data_format: str) -> jax.Array:
  """``(..., L_out, filters)`` in the layout of ``data_format``."""
  if data_format == 'channels_last':
    return outputs
  return jnp.swapaxes(outputs, -1, -2)


def locally_connected_1d(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  strides: int = 1,
  data_format: str = 'channels_last',
  precision: PrecisionLike = None,
) -> jax.Array:
  """Keras 2's ``LocallyConnected1D`` for one example.

  ``y[o] = window(o) @ kernel[o] + bias[o]``, where ``window(o)`` flattens
  input steps ``o * strides`` to ``o * strides + kernel_size - 1`` (see
  :func:`windows` for the order of its features) and ``kernel_size`` is
  ``kernel.shape[1] // D``.

  Args:
    inputs: ``(L, D)``, or ``(D, L)`` for ``'channels_first'``.
    kernel: ``(L_out, kernel_size * D, filters)`` with
      ``L_out = (L - kernel_size) // strides + 1``.
    bias: ``(L_out, filters)`` or ``None``.
    strides: steps between the starts of two windows.
    data_format: ``'channels_last'`` or ``'channels_first'``.
    precision: passed to the contraction.

  Returns:
    ``(L_out, filters)``, or ``(filters, L_out)`` for ``'channels_first'``.

  Raises:
    TypeError: if ``strides`` is not an integer or ``data_format`` not a
      string.
    ValueError: if ``strides`` is not positive or ``data_format`` unknown.
  """
  strides = validate.check_positive_int(
    strides, 'locally_connected_1d', 'strides'
  )
  validate.check_data_format(data_format, 'locally_connected_1d')
  chex.assert_rank(
    [inputs, kernel],
    [2, 3],
    custom_message='locally_connected_1d: inputs must be (L, D) and kernel'
    ' (L_out, kernel_size * D, filters).',
  )
  in_features, input_length = (
    inputs.shape[::-1] if data_format == 'channels_last' else inputs.shape
  )
  validate.check_nonempty_axes(
    'locally_connected_1d',
    inputs.shape,
    {'steps': input_length, 'features': in_features},
  )
  length, window_features, filters = kernel.shape
  kernel_size = window_features // in_features
  chex.assert_equal(
    (
      kernel_size * in_features,
      valid_output_length(input_length, kernel_size, strides),
    ),
    (window_features, length),
    custom_message='locally_connected_1d: kernel must be (L_out, kernel_size'
    ' * D, filters) with L_out = (L - kernel_size) // strides + 1.',
  )
  if bias is not None:
    chex.assert_shape(
      bias,
      (length, filters),
      custom_message='locally_connected_1d: bias must be (L_out, filters).',
    )
  outputs = per_position_dense(
    windows(inputs, kernel_size, strides, data_format),
    kernel,
    _position_bias(bias, data_format),
    precision,
  )
  return _to_layout(outputs, data_format)


def locally_connected_1d_layer(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None,
  kernel_size: int,
  strides: int,
  data_format: str,
  activation: Callable[[jax.Array], jax.Array],
  dtype: Dtype | None = None,
  precision: PrecisionLike = None,
) -> jax.Array:
  """The ``LocallyConnected1D`` layer of both front ends, over a batch.

  Every leading axis is a batch axis. With ``kernel_size == strides == 1``
  and ``channels_last`` the windows are the inputs and the layer is
  ``PerPositionDense``, so it takes that layer's batched paths; otherwise
  it is ``jax.vmap`` of :func:`locally_connected_1d`, which measured faster
  than sending the windows of the whole batch through those paths (see
  ``benchmarks/locally_connected.py``).

  Args:
    inputs: ``(..., L, D)``, or ``(..., D, L)`` for ``'channels_first'``,
      already checked against ``kernel``.
    kernel: ``(L_out, kernel_size * D, filters)``.
    bias: ``(L_out, filters)`` or ``None``.
    kernel_size: steps per window.
    strides: steps between the starts of two windows.
    data_format: ``'channels_last'`` or ``'channels_first'``.
    activation: applied to the outputs in their layout (so ``softmax``
      normalises the last axis, as in Keras).
    dtype: the computation dtype, or ``None`` to infer it.
    precision: passed to the contraction.

  Returns:
    ``(..., L_out, filters)``, or ``(..., filters, L_out)`` for
    ``'channels_first'``.
  """
  inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=dtype)
  if kernel_size == 1 and strides == 1 and data_format == 'channels_last':
    return per_position_dense_layer(
      inputs, kernel, bias, activation, dtype, precision
    )

  def one_example(example, kernel, bias):
    return locally_connected_1d(
      example, kernel, bias, strides, data_format, precision
    )

  return activation(vmap_leading(one_example, inputs, 2, kernel, bias))


def valid_output_length(
  input_length: int, kernel_size: int, strides: int
) -> int:
  """Keras's output length with ``'valid'`` padding (0 or less: no window)."""
  return (input_length - kernel_size) // strides + 1


#: Keras 2 ``LocallyConnected1D``'s weight layouts by ``implementation``.
LOCALLY_CONNECTED_1D_IMPLEMENTATIONS = (1, 2, 3)


def single_positive_int(value: Any, layer: str, name: str) -> int:
  """A positive int given as Keras accepts it: ``3``, ``(3,)`` or ``[3]``.

  Raises:
    TypeError: unless ``value`` is an integer or a tuple or list of them.
    ValueError: for a tuple or list of another length than one, or an
      integer that is not positive.
  """
  expected = 'a positive integer or a tuple of one'
  if isinstance(value, tuple | list):
    if len(value) != 1:
      raise ValueError(
        f'{layer}: {name} must be {expected} (1D), got {value!r} with'
        f' {len(value)} entries.'
      )
    value = value[0]
  if not validate.is_int(value):
    raise TypeError(
      f'{layer}: {name} must be {expected}, got {validate.describe_given(value)}.'
    )
  return validate.check_positive_int(value, layer, name)


def locally_connected_1d_options(
  filters: Any,
  kernel_size: Any,
  strides: Any,
  padding: Any,
  data_format: Any,
  use_bias: Any,
  layer: str = 'LocallyConnected1D',
) -> tuple[int, int]:
  """Checks ``LocallyConnected1D``'s options; ``(kernel_size, strides)``.

  Raises:
    TypeError: for a size that is not an integer (or a tuple of one), a
      ``padding`` or ``data_format`` that is not a string, or a
      ``use_bias`` that is not a bool.
    ValueError: for a size that is not positive, a ``padding`` other than
      ``'valid'``, or an unknown ``data_format``.
  """
  validate.check_positive_int(filters, layer, 'filters')
  kernel_size = single_positive_int(kernel_size, layer, 'kernel_size')
  strides = single_positive_int(strides, layer, 'strides')
  if not isinstance(padding, str):
    raise TypeError(
      f"{layer}: padding must be the string 'valid', got {validate.describe_given(padding)}."
    )
  if padding.lower() != 'valid':
    raise ValueError(
      f"{layer}: padding must be 'valid' (no padding), the only padding of"
      " Keras 2's LocallyConnected1D with its default implementation=1,"
      f' whose weight layout this layer uses; got {padding!r}.'
    )
  validate.check_data_format(data_format, layer)
  validate.check_bool(use_bias, layer, 'use_bias')
  return kernel_size, strides


def _steps_layout(data_format: str) -> str:
  if data_format == 'channels_last':
    return '(..., steps, features)'
  return '(..., features, steps)'


def locally_connected_1d_kernel_shape(
  inputs_shape: tuple[int, ...],
  filters: int,
  kernel_size: int,
  strides: int,
  data_format: str,
  built_shape: tuple[int, ...] | None,
  layer: str = 'LocallyConnected1D',
) -> tuple[int, int, int]:
  """The ``(L_out, kernel_size * D, filters)`` kernel that inputs need.

  Args:
    inputs_shape: ``(..., L, D)``, or ``(..., D, L)`` for
      ``'channels_first'``.
    filters: output features per step.
    kernel_size: steps per window, checked.
    strides: steps between windows, checked.
    data_format: ``'channels_last'`` or ``'channels_first'``, checked.
    built_shape: the shape the kernel was built with, or ``None``.
    layer: the name in the messages.

  Returns:
    ``(L_out, kernel_size * D, filters)``, ``L_out`` Keras's output length.
  """
  layout = _steps_layout(data_format)
  if len(inputs_shape) < 2:
    raise ValueError(
      f'{layer}: inputs must have shape {layout} with rank >= 2, got shape'
      f' {tuple(inputs_shape)}.'
    )
  input_length, in_features = inputs_shape[-2:]
  if data_format == 'channels_first':
    input_length, in_features = in_features, input_length
  validate.check_nonempty_axes(layer, inputs_shape, {'features': in_features})
  length = valid_output_length(input_length, kernel_size, strides)
  if length < 1:
    raise ValueError(
      f'{layer}: {input_length} input steps are fewer than'
      f' kernel_size={kernel_size}, so no window fits'
      f' (output length (steps - kernel_size) // strides + 1 = {length});'
      f' inputs must be {layout} with at least kernel_size steps.'
    )
  kernel_shape = (length, kernel_size * in_features, filters)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'{layer}: inputs of shape {tuple(inputs_shape)} have {input_length}'
      f' steps of {in_features} features and need a kernel of shape'
      f' {kernel_shape} (output_length, kernel_size * features, filters)'
      f' with kernel_size={kernel_size}, strides={strides}, but the kernel'
      f' was built with shape {tuple(built_shape)}; inputs must be {layout}'
      ' with the steps and features the layer was built for.'
    )
  return kernel_shape
