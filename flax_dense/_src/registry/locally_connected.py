"""The spec of ``LocallyConnected1D``, with Keras 2's three weight layouts."""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from flax_dense._src import validate
from flax_dense._src.linen.dense import PerPositionDense
from flax_dense._src.linen.locally_connected import LocallyConnected1D
from flax_dense._src.nnx import locally_connected as nnx_locally_connected
from flax_dense._src.ops import locally_connected as locally_connected_ops
from flax_dense._src.registry import spec
from flax_dense._src.registry.dense import DENSE_FIELDS, keras_params
from flax_dense._src.registry.spec import (
  KerasImport,
  KerasLayer,
  LayerSpec,
  Step,
)


def _locally_connected_sizes(module: Any, weights: spec.Weights) -> dict:
  kernel_size, strides = locally_connected_ops.locally_connected_1d_options(
    module.filters,
    module.kernel_size,
    module.strides,
    module.padding,
    module.data_format,
    module.use_bias,
  )
  output_length, window, _ = spec.shape_of(
    module,
    weights,
    'kernel',
    '(output_length, kernel_size * in_features, filters)',
  )
  if window % kernel_size:
    raise ValueError(
      f'from_linen: LocallyConnected1D with kernel_size={kernel_size} needs'
      f' a kernel of shape (output_length, {kernel_size} * in_features,'
      f' filters), got shape {weights["kernel"].shape}.'
    )
  # The shortest input with output_length windows: every input the weights
  # fit gives the same outputs, and the NNX layer checks no more.
  return {
    'input_length': (output_length - 1) * strides + kernel_size,
    'in_features': window // kernel_size,
  }


def _input(
  config: dict[str, Any], weights: list[np.ndarray], kernel_size, strides
) -> tuple[int, int]:
  """The ``(input_length, in_features)`` a LocallyConnected1D was built for.

  From ``batch_input_shape`` when the config has it, else from the stored
  shapes (any value where they tell nothing, so only what they do tell is
  checked).
  """
  filters = config.get('filters')
  channels_first = config.get('data_format') == 'channels_first'
  shape = config.get('batch_input_shape') or ()
  if len(shape) == 3 and None not in shape[1:]:
    return tuple(shape[:0:-1]) if channels_first else tuple(shape[1:])
  kernel = weights[0]
  length = None
  if kernel.ndim == 3:
    length, in_features = kernel.shape[0], kernel.shape[1] // kernel_size
  elif kernel.ndim == 4:
    in_features, input_length = kernel.shape[:2]
    if not channels_first:
      input_length, in_features = in_features, input_length
    return input_length, max(1, in_features)
  else:
    if len(weights) == 2 and weights[1].ndim == 2:
      length = weights[1].shape[0]
    in_features = kernel.size // ((length or 1) * kernel_size * filters)
    if length is None:
      length, in_features = max(1, in_features), 1
  return (max(1, length) - 1) * strides + kernel_size, max(1, in_features)


def _keras3_indices(
  length: int,
  kernel_size: int,
  strides: int,
  input_length: int,
  in_features: int,
  filters: int,
  channels_first: bool,
) -> np.ndarray:
  """Where each of implementation 3's values sits in implementation 1's grid.

  Keras stores the values of the sparse ``(output_length * filters,
  input_length * input_dim)`` matrix in the order of its sorted ``(output
  index, input index)`` pairs; the returned permutation lists, for each
  value in that order, its flat index in the ``(output_length,
  kernel_size, input_dim, filters)`` grid.
  """
  o, j, d, f = np.meshgrid(
    np.arange(length),
    np.arange(kernel_size),
    np.arange(in_features),
    np.arange(filters),
    indexing='ij',
  )
  step = o * strides + j
  if channels_first:
    out_index, in_index = f * length + o, d * input_length + step
  else:
    out_index, in_index = o * filters + f, step * in_features + d
  return np.lexsort((in_index.ravel(), out_index.ravel()))


def locally_connected1d_weights(
  weights: Sequence[Any],
  implementation: int,
  input_length: int,
  in_features: int,
  kernel_size: int,
  strides: int,
  filters: int,
  data_format: str = 'channels_last',
) -> list[np.ndarray]:
  """A Keras 2 ``LocallyConnected1D``'s weights in implementation 1's layout.

  Keras 2 stores the kernel by ``implementation``, with ``L`` input steps
  of ``D`` features, ``k = kernel_size`` and ``L_out = (L - k) // strides
  + 1``:

  * 1: ``(L_out, k * D, filters)``, the window's features ``j * D + d``
    (``channels_last``) or ``d * k + j`` (``channels_first``);
  * 2: the dense masked kernel ``(L, D, L_out, filters)``, or ``(D, L,
    filters, L_out)`` for ``channels_first``; entries outside a window are
    ignored (Keras multiplies them by 0);
  * 3: the vector of the ``L_out * k * D * filters`` connected entries of
    the sparse ``(L_out * filters, L * D)`` matrix, in the order of their
    sorted (output, input) flat indices.

  The bias is ``(L_out, filters)`` in all three. The result is what
  :class:`flax_dense.LocallyConnected1D` with the same ``data_format``
  takes as ``kernel`` and ``bias``.

  Example usage::

    >>> import numpy as np
    >>> from flax_dense._src.registry.locally_connected import (
    ...   locally_connected1d_weights)
    >>> kernel = np.zeros((9, 4, 4, 3), np.float32)  # (L, D, L_out, F)
    >>> [w.shape for w in locally_connected1d_weights(
    ...   [kernel, np.zeros((4, 3))], 2, 9, 4, 3, 2, 3)]
    [(4, 12, 3), (4, 3)]

  Args:
    weights: the layer's ``[kernel, bias]``, or ``[kernel]`` without bias.
    implementation: Keras's ``implementation``, 1, 2 or 3.
    input_length: input steps L.
    in_features: input features D.
    kernel_size: steps per window (an int or a tuple of one).
    strides: steps between windows (an int or a tuple of one).
    filters: output features.
    data_format: ``'channels_last'`` or ``'channels_first'``.

  Returns:
    ``[kernel (L_out, k * D, filters)]`` followed by the bias when given,
    new float arrays of the weights' dtype.

  Raises:
    ValueError: for an invalid argument, or weights whose shapes differ
      from those of ``implementation`` (also the case for a layer with
      ``padding='same'``, which only ``'valid'`` layers can be converted
      from).
  """
  caller = 'locally_connected1d_weights'
  if (
    implementation
    not in locally_connected_ops.LOCALLY_CONNECTED_1D_IMPLEMENTATIONS
  ):
    raise ValueError(
      f'{caller}: implementation must be one of'
      f' {locally_connected_ops.LOCALLY_CONNECTED_1D_IMPLEMENTATIONS}, got'
      f' {implementation!r}.'
    )
  validate.check_positive_int(input_length, caller, 'input_length')
  validate.check_positive_int(in_features, caller, 'in_features')
  kernel_size, strides = locally_connected_ops.locally_connected_1d_options(
    filters, kernel_size, strides, 'valid', data_format, True, caller
  )
  channels_first = data_format == 'channels_first'
  example = (in_features, input_length) if channels_first else None
  kernel_shape = locally_connected_ops.locally_connected_1d_kernel_shape(
    example or (input_length, in_features),
    filters,
    kernel_size,
    strides,
    data_format,
    None,
    caller,
  )
  length = kernel_shape[0]
  if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
    raise ValueError(
      f'{caller}: weights must be the list [kernel, bias] or [kernel] of'
      f" the layer's get_weights(), got {type(weights).__name__}."
    )
  if len(weights) not in (1, 2):
    raise ValueError(
      f'{caller}: weights must be [kernel, bias] or [kernel], got'
      f' {len(weights)} arrays.'
    )
  kernel, *bias = (np.array(w) for w in weights)
  stored_shape = {
    1: kernel_shape,
    2: (in_features, input_length, filters, length)
    if channels_first
    else (input_length, in_features, length, filters),
    3: (math.prod(kernel_shape),),
  }[implementation]
  if kernel.shape != stored_shape:
    raise ValueError(
      f'{caller}: the implementation={implementation} kernel of a layer'
      f' with input_length={input_length}, in_features={in_features},'
      f' kernel_size={kernel_size}, strides={strides}, filters={filters},'
      f" data_format={data_format!r} and padding='valid' must have shape"
      f' {stored_shape}, got {kernel.shape}.'
    )
  if bias and bias[0].shape != (length, filters):
    raise ValueError(
      f'{caller}: the bias must have shape {(length, filters)}'
      f' (output_length, filters), got {bias[0].shape}.'
    )
  window = np.arange(length)[:, None] * strides + np.arange(kernel_size)
  output = np.arange(length)[:, None]
  if implementation == 1:
    converted = kernel
  elif implementation == 2 and channels_first:
    # (D, L, F, L_out) -> (L_out, k, D, F) -> (L_out, D, k, F)
    converted = kernel[:, window, :, output].transpose(0, 2, 1, 3)
  elif implementation == 2:
    converted = kernel[window, :, output, :]  # (L_out, k, D, F)
  else:
    grid = np.empty_like(kernel)
    grid[
      _keras3_indices(
        length,
        kernel_size,
        strides,
        input_length,
        in_features,
        filters,
        channels_first,
      )
    ] = kernel
    converted = grid.reshape(length, kernel_size, in_features, filters)
    if channels_first:
      converted = converted.transpose(0, 2, 1, 3)
  return [np.reshape(converted, kernel_shape), *bias]


def _single(layer: KerasLayer, field: str, default: Any = None) -> int:
  value = layer.config.get(field, default)
  if isinstance(value, list | tuple) and len(value) == 1:
    value = value[0]
  if not isinstance(value, int) or isinstance(value, bool):
    raise layer.error(f'has {field}={value!r}; expected an int.')
  return value


def _locally_connected_1d(layer: KerasLayer) -> list[Step]:
  """tf.keras's ``LocallyConnected1D``, any ``implementation``.

  ``kernel_size=1, strides=1`` (channels-last) is a :class:`PerPositionDense`,
  anything else a :class:`LocallyConnected1D`, both in implementation 1's
  layout (``locally_connected1d_weights``).
  """
  config = layer.config
  if config.get('padding', 'valid') != 'valid':
    raise layer.error(
      f'has padding={config.get("padding")!r}; Keras 2 builds'
      " LocallyConnected1D with padding='valid' only.",
    )
  kernel_size = _single(layer, 'kernel_size')
  strides = _single(layer, 'strides', 1)
  data_format = config.get('data_format') or 'channels_last'
  implementation = config.get('implementation', 1)
  try:
    shape = layer.input_shape
    if shape is not None and len(shape) == 2:
      config = {**config, 'batch_input_shape': [None, *shape]}
    input_length, in_features = _input(
      config, layer.weights, kernel_size, strides
    )
    weights = locally_connected1d_weights(
      layer.weights,
      implementation,
      input_length,
      in_features,
      kernel_size,
      strides,
      config['filters'],
      data_format,
    )
  except (ValueError, IndexError) as error:
    raise layer.error(
      f'(implementation={implementation}) has weights of shapes'
      f' {[tuple(w.shape) for w in layer.weights]} that do not fit its'
      f' config: {error}',
    ) from None
  params = keras_params(
    dataclasses.replace(layer, weights=weights),
    'locally_connected1d',
    kernel_size=kernel_size,
  )
  activation = spec.activation_name(layer, config.get('activation'))
  options: dict[str, Any] = dict(
    use_bias='bias' in params, activation=activation, **spec.dtypes(config)
  )
  if kernel_size == 1 and strides == 1 and data_format == 'channels_last':
    module = PerPositionDense(config['filters'], **options)
  else:
    module = LocallyConnected1D(
      config['filters'],
      kernel_size,
      strides=strides,
      data_format=data_format,
      **options,
    )
  return [Step(layer.name, module, 'drop', {'params': params})]


SPECS = (
  LayerSpec(
    LocallyConnected1D,
    nnx_locally_connected.LocallyConnected1D,
    (
      'filters',
      'kernel_size',
      'strides',
      'padding',
      'data_format',
      'activation',
      *DENSE_FIELDS,
    ),
    weights=spec.kernel_and_bias,
    nnx_arguments=_locally_connected_sizes,
    keras_import={
      'LocallyConnected1D': KerasImport(
        _locally_connected_1d,
        '``PerPositionDense`` (``kernel_size=1, strides=1``), else'
        ' ``LocallyConnected1D`` (tf.keras 2 ``.h5`` files)',
        makes=(PerPositionDense,),
      )
    },
    not_exported='a Keras 2 layer, which Keras 3 no longer has',
  ),
)
