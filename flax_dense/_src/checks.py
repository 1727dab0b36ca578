"""Every argument and shape check of the layers, with its message.

The linen and NNX front ends and the pure functions raise their errors from
here, so a mistake reads the same whichever API made it. A message names
the layer (or function), the argument, what was expected and what was
given. These checks run on static values (Python numbers, shapes) before
any math; invariants of the pure core use ``chex`` asserts instead.
"""

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: The two layouts of Keras's ``data_format`` argument.
DATA_FORMATS = ('channels_last', 'channels_first')


def check_positive_int(value: Any, layer: str, name: str) -> None:
  """Raises our own error unless ``value`` is a positive ``int`` (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(
      f'{layer}: {name} must be a positive integer, got {value!r}.'
    )


def check_bool(value: Any, layer: str, name: str) -> None:
  """Raises our own error unless ``value`` is ``True`` or ``False``."""
  if not isinstance(value, bool):
    raise ValueError(f'{layer}: {name} must be True or False, got {value!r}.')


def check_rate(rate: Any, layer: str) -> None:
  """Raises our own error unless ``rate`` is a real number in [0, 1]."""
  if (
    isinstance(rate, bool)
    or not isinstance(rate, numbers.Real)
    or not 0 <= rate <= 1
  ):
    raise ValueError(
      f'{layer}: rate must be a float in [0, 1] (the fraction of inputs to'
      f' drop), got {rate!r}.'
    )


def check_factor(value: Any, name: str, layer: str) -> float:
  """``value`` as a float, if it is a non-negative finite real number."""
  if (
    isinstance(value, bool)
    or not isinstance(value, numbers.Real)
    or not math.isfinite(value)
    or value < 0
  ):
    raise ValueError(
      f'{layer}: {name} must be a non-negative finite float, got {value!r}.'
    )
  return float(value)


def check_data_format(data_format: Any, layer: str) -> None:
  """Raises our own error for a ``data_format`` Keras would not accept."""
  if data_format not in DATA_FORMATS:
    raise ValueError(
      f'{layer}: data_format must be one of {DATA_FORMATS}, got'
      f' {data_format!r}.'
    )


def check_callable(value: Any, layer: str, name: str, expected: str) -> None:
  """Raises our own error unless ``value`` is callable."""
  if not callable(value):
    raise ValueError(
      f'{layer}: {name} must be {expected}, got {value!r} of type'
      f' {type(value).__name__}.'
    )


def check_regularizer(regularizer: Any, layer: str) -> None:
  """Raises our own error for an ``activity_regularizer`` we cannot call."""
  if regularizer is not None and not callable(regularizer):
    raise ValueError(
      f'{layer}: activity_regularizer must be None or a function from the'
      f' outputs to a scalar (e.g. fd.l1_l2(l2=0.01)), got {regularizer!r}.'
    )


def check_rank(inputs: jax.Array, rank: int, layout: str, layer: str) -> None:
  """Raises our own error when ``inputs`` is not of rank ``rank``."""
  if inputs.ndim != rank:
    raise ValueError(
      f'{layer}: inputs must be {layout} (rank {rank}), got shape'
      f' {inputs.shape}.'
    )


def check_min_rank(
  inputs: jax.Array, rank: int, layout: str, layer: str, name: str = 'inputs'
) -> None:
  """Raises our own error when ``inputs`` has rank below ``rank``."""
  if inputs.ndim < rank:
    raise ValueError(
      f'{layer}: {name} must have shape {layout} with rank >= {rank}, got'
      f' shape {inputs.shape}.'
    )


def check_weight_shape(
  layer: str, name: str, value: jax.Array, shape: Sequence[int]
) -> None:
  """Raises our own error when an initializer gave the wrong shape."""
  if tuple(value.shape) != tuple(shape):
    raise ValueError(
      f'{layer}: the initializer of {name} must return shape {tuple(shape)},'
      f' got shape {tuple(value.shape)}.'
    )


# ---------------------------------------------------------------------------
# The input checks of each layer, shared by its linen and NNX classes. Each
# takes the shape a weight was built with (``None`` before it is built) and
# returns the shape the inputs need.


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


def const_product_size(
  inputs_shape: tuple[int, ...], built_shape: tuple[int, ...] | None
) -> int:
  """The N of ``ConstProduct`` inputs ``(..., N)``, checked against ``w``."""
  if len(inputs_shape) < 1:
    raise ValueError(
      'ConstProduct: inputs must have shape (..., N) with rank >= 1, got a'
      ' scalar.'
    )
  size = inputs_shape[-1]
  if built_shape is not None and tuple(built_shape) != (size,):
    raise ValueError(
      f'ConstProduct: inputs of shape {inputs_shape} have {size} features'
      f' but the weights were built with shape {tuple(built_shape)}.'
    )
  return size


def const_product_weights(
  weights: Any, trainable: bool, size: int | None
) -> np.ndarray | None:
  """``ConstProduct``'s given weights as an ``(N,)`` array, or ``None``.

  Args:
    weights: the given values, ``(N,)`` or ``(1, N)``, or ``None``.
    trainable: whether ``w`` is trained; frozen weights must be given.
    size: the N they must have, or ``None`` to take theirs.
  """
  if weights is None:
    if not trainable:
      raise ValueError(
        'ConstProduct: frozen weights (trainable=False) need initial'
        ' values; pass weights=<array of shape (N,) or (1, N)> or set'
        ' trainable=True.'
      )
    return None
  weights = np.asarray(weights)
  if weights.ndim == 2 and weights.shape[0] == 1:
    weights = weights[0]
  if weights.ndim != 1 or (size is not None and weights.shape != (size,)):
    size_text = 'N' if size is None else size
    raise ValueError(
      f'ConstProduct: weights must have shape ({size_text},) or'
      f' (1, {size_text}) to match inputs with {size_text} features, got'
      f' shape {weights.shape}.'
    )
  return weights


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
  kernel_shape = (a_shape[-1], features)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'MultiIODense: a of shape {a_shape} has {a_shape[-1]} features and'
      f' needs a kernel of shape {kernel_shape} (in_features, features),'
      f' but the kernel was built with shape {tuple(built_shape)}.'
    )
  return kernel_shape


def check_attention_fields(
  units: Any, output_dim: Any, return_probabilities: Any
) -> None:
  """Checks the sizes and the flag of ``AttentionDecoder``."""
  check_positive_int(units, 'AttentionDecoder', 'units')
  check_positive_int(output_dim, 'AttentionDecoder', 'output_dim')
  check_bool(return_probabilities, 'AttentionDecoder', 'return_probabilities')


def attention_decoder_mask(
  inputs: jax.Array, mask: jax.typing.ArrayLike | None
) -> jax.Array | None:
  """``AttentionDecoder``'s mask as booleans, checked against the inputs."""
  if inputs.ndim < 2 or inputs.shape[-2] == 0:
    raise ValueError(
      'AttentionDecoder: inputs must have shape (..., timesteps, features)'
      f' with rank >= 2 and at least one timestep, got shape {inputs.shape}.'
    )
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.shape != inputs.shape[:-1]:
    raise ValueError(
      f'AttentionDecoder: mask must have shape {inputs.shape[:-1]}'
      f' (..., timesteps) to match inputs of shape {inputs.shape}, got'
      f' shape {mask.shape}.'
    )
  return mask.astype(bool)


def check_attention_built(
  inputs_shape: tuple[int, ...],
  units: int,
  output_dim: int,
  name: str,
  shape: tuple[int, ...],
  built_shape: tuple[int, ...] | None,
) -> None:
  """Raises our own error when a param of the decoder has another shape."""
  if built_shape is not None and tuple(built_shape) != tuple(shape):
    raise ValueError(
      f'AttentionDecoder: inputs of shape {inputs_shape} with'
      f' units={units} and output_dim={output_dim} need {name}'
      f' of shape {shape}, but it was built with shape {tuple(built_shape)};'
      ' inputs must be (..., timesteps, features) with the features the'
      ' layer was built for.'
    )


# ---------------------------------------------------------------------------
# LocallyConnected1D, shared by its linen and NNX classes, the pure function
# and the Keras weight converter.

#: Keras 2 ``LocallyConnected1D``'s weight layouts by ``implementation``.
LOCALLY_CONNECTED_1D_IMPLEMENTATIONS = (1, 2, 3)


def valid_output_length(
  input_length: int, kernel_size: int, strides: int
) -> int:
  """Keras's output length with ``'valid'`` padding (0 or less: no window)."""
  return (input_length - kernel_size) // strides + 1


def single_positive_int(value: Any, layer: str, name: str) -> int:
  """A positive int given as Keras accepts it: ``3``, ``(3,)`` or ``[3]``."""
  single = value[0] if isinstance(value, tuple | list) and value else value
  if (
    isinstance(value, tuple | list) and len(value) != 1
  ) or not _is_positive_int(single):
    raise ValueError(
      f'{layer}: {name} must be a positive integer or a tuple of one, got'
      f' {value!r}.'
    )
  return int(single)


def _is_positive_int(value: Any) -> bool:
  return (
    isinstance(value, numbers.Integral)
    and not isinstance(value, bool)
    and value >= 1
  )


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
    ValueError: for a size that is not a positive integer (or a tuple of
      one), a ``padding`` other than ``'valid'``, or an unknown
      ``data_format``.
  """
  check_positive_int(filters, layer, 'filters')
  kernel_size = single_positive_int(kernel_size, layer, 'kernel_size')
  strides = single_positive_int(strides, layer, 'strides')
  if not isinstance(padding, str) or padding.lower() != 'valid':
    raise ValueError(
      f"{layer}: padding must be 'valid' (no padding), the only padding of"
      " Keras 2's LocallyConnected1D with its default implementation=1,"
      f' whose weight layout this layer uses; got {padding!r}.'
    )
  check_data_format(data_format, layer)
  check_bool(use_bias, layer, 'use_bias')
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
