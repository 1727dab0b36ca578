"""Keras HDF5 files read with h5py alone, and Keras 2 weight layouts.

Keras 2 / tf.keras ``model.save('model.h5')`` writes one HDF5 file:

* root attributes ``keras_version``, ``backend`` and ``model_config``
  (the model's ``get_config()`` as JSON, ``{'class_name', 'config'}``);
* a group ``model_weights`` whose attribute ``layer_names`` lists every
  layer in order; the group of each layer lists its ``weight_names``
  (e.g. ``'dense/kernel:0'``), each the path of a dataset inside it.

``model.save_weights('weights.h5')`` writes the ``model_weights`` part
alone at the root. Keras 3's ``model.save_weights('x.weights.h5')`` writes
``layers/<key>/vars/0, 1, ...`` instead, with the layer's name in the
``name`` attribute of its ``vars`` group and the weights of a wrapped
layer in nested groups (``layers/time_distributed/layer/vars/...``).

TensorFlow and Keras are never imported: the arrays come back as NumPy.
"""

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flax_dense._src import checks

Weights = dict[str, list[np.ndarray]]

# ---------------------------------------------------------------------------
# Opening and reading a file, every h5py failure as our own error.


def _h5py() -> Any:
  """The ``h5py`` module, imported when a file is read (it comes with Keras)."""
  try:
    import h5py
  except ImportError:
    raise ImportError(
      'flax_dense: reading Keras .h5 files needs h5py: pip install h5py (or'
      " flax_dense's keras extra)."
    ) from None
  return h5py


def _open(path: Any, caller: str) -> Any:
  """``path`` opened for reading as an ``h5py.File``, or our own error."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{caller}: no such file {path!r}.')
  try:
    return _h5py().File(path, 'r')
  except OSError as error:
    raise ValueError(
      f'{caller}: {path!r} is not a readable HDF5 file (not HDF5, or'
      f' truncated or corrupt): {error}.'
    ) from None


def _text(value: Any) -> str:
  return value.decode('utf8') if isinstance(value, bytes) else str(value)


def _names(group: Any, name: str) -> list[str]:
  """A list attribute, also when Keras split it into ``name0``, ``name1``.

  Keras splits an attribute larger than HDF5's 64 KiB header limit into
  numbered chunks, as ``load_attributes_from_hdf5_group`` reads them.
  """
  if name in group.attrs:
    chunks = [group.attrs[name]]
  else:
    chunks = []
    while f'{name}{len(chunks)}' in group.attrs:
      chunks.append(group.attrs[f'{name}{len(chunks)}'])
  return [_text(value) for chunk in chunks for value in np.ravel(chunk)]


def _guarded(path: str, caller: str, read: Callable[[], Any]) -> Any:
  """``read()``, with h5py's errors on a damaged file turned into ours."""
  try:
    return read()
  except UnicodeDecodeError as error:
    raise ValueError(
      f'{caller}: {path!r} holds text that is not UTF-8 ({error}); the file'
      ' is damaged or not written by Keras.'
    ) from None
  except (OSError, KeyError, RuntimeError) as error:
    raise ValueError(
      f'{caller}: cannot read {path!r}, the HDF5 file is corrupt or not'
      f' written by Keras ({type(error).__name__}: {error}).'
    ) from None


def _keras_version(file: Any, path: str, caller: str) -> str:
  """The ``keras_version`` attribute; Keras 1 files are refused."""
  # Keras itself reads a file without the attribute as written by Keras 1.
  version = _text(file.attrs.get('keras_version', '1'))
  if version.startswith('1'):
    raise ValueError(
      f'{caller}: {path!r} was written by Keras {version} (Keras 1), whose'
      ' layer configs and weight layouts differ from Keras 2; load it in'
      ' Keras 2 and save it again.'
    )
  return version


def _keras2_weights(group: Any, path: str, caller: str) -> Weights:
  """``{layer name: [arrays]}`` of a Keras 2 weights group, in file order."""
  weights = {}
  for layer in _names(group, 'layer_names'):
    if layer not in group:
      raise ValueError(
        f'{caller}: {path!r} lists layer {layer!r} in layer_names but holds'
        ' no weights group for it; the file is damaged.'
      )
    layer_group = group[layer]
    arrays = []
    for weight in _names(layer_group, 'weight_names'):
      if weight not in layer_group:
        raise ValueError(
          f'{caller}: {path!r}: layer {layer!r} lists weight {weight!r}'
          ' but the file holds no such dataset; the file is damaged.'
        )
      arrays.append(_native(layer_group[weight]))
    weights[layer] = arrays
  return weights


def _native(dataset: Any) -> np.ndarray:
  """A stored array in the machine's byte order (HDF5 keeps the writer's)."""
  array = np.asarray(dataset)
  if array.dtype.isnative:
    return array
  return array.astype(array.dtype.newbyteorder('='))


def _is_keras3_weights(file: Any) -> bool:
  return 'layers' in file and 'layer_names' not in file.attrs


def _keras3_vars(group: Any) -> list[np.ndarray]:
  """The ``vars`` of ``group`` then of its nested groups, depth first.

  Keras 3 numbers a layer's variables ``0, 1, ...``; nested groups (a
  wrapped layer) follow in the order of their names.
  """
  arrays = []
  if 'vars' in group:
    variables = group['vars']
    arrays += [_native(variables[str(i)]) for i in range(len(variables))]
  for key in sorted(group):
    if key != 'vars' and isinstance(group[key], _h5py().Group):
      arrays += _keras3_vars(group[key])
  return arrays


def _keras3_weights(file: Any) -> Weights:
  """``{layer name: [arrays]}`` of a Keras 3 ``.weights.h5`` file."""
  weights = {}
  for key in file['layers']:
    group = file['layers'][key]
    name = key
    if 'vars' in group and 'name' in group['vars'].attrs:
      name = _text(group['vars'].attrs['name'])
    weights[name] = _keras3_vars(group)
  return weights


# ---------------------------------------------------------------------------
# Weights against their layer's config.


def _json_type(value: Any) -> str:
  """The JSON name of a parsed value's type, for messages."""
  for kind, name in (
    (bool, 'boolean'),
    (dict, 'object'),
    (list, 'list'),
    (str, 'string'),
    (int | float, 'number'),
  ):
    if isinstance(value, kind):
      return name
  return 'null'


def is_reference(value: Any) -> bool:
  """Whether ``value`` is a Keras 2 tensor reference ``[layer, node, i]``.

  A fourth item, the call's keyword arguments, may follow.
  """
  return (
    isinstance(value, list | tuple)
    and len(value) in (3, 4)
    and isinstance(value[0], str)
    and all(checks.is_int(index) and index >= 0 for index in value[1:3])
  )


def _endpoint_references(value: Any) -> list[Any] | None:
  """``input_layers``/``output_layers`` as a list of references, or None.

  Keras writes one reference for a single tensor, a list of them, or (Keras
  3, for inputs given by name) an object of them.
  """
  if is_reference(value):
    return [value]
  if isinstance(value, dict):
    value = list(value.values())
  if isinstance(value, list) and value and all(map(is_reference, value)):
    return value
  return None


def check_model_config(model_config: Any, path: str, caller: str) -> list[str]:
  """The layer names of a model config, checked for the shape Keras writes.

  Args:
    model_config: the parsed ``model_config`` JSON of an ``.h5`` file.
    path: the file, for messages.
    caller: the public function, for messages.

  Returns:
    The name of each entry of ``config['layers']``, in order.

  Raises:
    ValueError: naming the file, for a value of the wrong JSON type at any
      level Keras writes, no layers or only an ``InputLayer``, a layer
      without a name or a ``class_name``, two layers of one name, or (a
      functional model) ``input_layers``/``output_layers`` that are not
      ``[layer, node, tensor]`` references to its layers.
  """

  def damaged(what: str) -> ValueError:
    return ValueError(
      f'{caller}: {path!r}: the model_config {what}; the file is damaged or'
      ' not written by Keras.'
    )

  if not isinstance(model_config, dict):
    raise damaged(
      f'is a JSON {_json_type(model_config)}, not an object with'
      ' class_name and config'
    )
  class_name = model_config.get('class_name')
  if not isinstance(class_name, str):
    raise damaged(f'has class_name {class_name!r}, not a string')
  config = model_config.get('config')
  if not isinstance(config, dict):
    raise damaged(f'has config {_json_type(config)}, not an object')
  layers = config.get('layers')
  if not isinstance(layers, list) or not layers:
    raise damaged(
      f'has layers {layers!r:.60}, not a non-empty list of layer objects'
    )
  names = []
  for index, entry in enumerate(layers):
    if not isinstance(entry, dict):
      raise damaged(f'has layer {index} a JSON {_json_type(entry)}')
    layer_config = entry.get('config')
    name = entry.get('name')
    if name is None and isinstance(layer_config, dict):
      name = layer_config.get('name')
    if not isinstance(name, str) or not name:
      raise damaged(f'has layer {index} without a name (got {name!r:.60})')
    layer_class = entry.get('class_name')
    if not isinstance(layer_class, str):
      raise ValueError(
        f"{caller}: layer '{name}' of file {path!r} has no class_name in"
        f' the model config (got {layer_class!r:.60}); the file is damaged'
        ' or not written by Keras.'
      )
    if not isinstance(layer_config, dict):
      raise damaged(
        f"has layer '{name}' with config {_json_type(layer_config)}, not an"
        ' object'
      )
    if name in names:
      raise damaged(
        f"has two layers named '{name}' (layers {names.index(name)} and"
        f' {index}); Keras names each layer once'
      )
    names.append(name)
  if all(entry['class_name'] == 'InputLayer' for entry in layers):
    raise damaged('has no layer but its InputLayer')
  if class_name != 'Sequential':
    for key in ('input_layers', 'output_layers'):
      refs = _endpoint_references(config.get(key))
      if refs is None:
        raise damaged(
          f'has {key} {config.get(key)!r:.60}, not a non-empty list of'
          ' [layer, node, tensor] references'
        )
      unknown = [ref[0] for ref in refs if ref[0] not in names]
      if unknown:
        raise damaged(f'has {key} naming no layer of the model: {unknown}')
  return names


def _layer_configs(model_config: dict[str, Any]) -> list[dict[str, Any]]:
  """Every ``{'class_name', 'config'}`` of a Sequential or functional model."""
  config = model_config.get('config', {})
  layers = config.get('layers', []) if isinstance(config, dict) else config
  return [layer for layer in layers if isinstance(layer, dict)]


def _shape_error(
  caller: str, path: str, name: str, class_name: str, expected: str, weights
) -> ValueError:
  return ValueError(
    f'{caller}: {path!r}: the weights of {class_name} layer {name!r}'
    f' have shapes {[tuple(w.shape) for w in weights]}, but its config'
    f' needs {expected}.'
  )


def _check_dense(caller, path, name, config, weights) -> None:
  units = config.get('units')
  count = 2 if config.get('use_bias', True) else 1
  if len(weights) != count or (
    weights[0].ndim != 2
    or weights[0].shape[-1] != units
    or (count == 2 and weights[1].shape != (units,))
  ):
    bias = f' and bias ({units},)' if count == 2 else ''
    raise _shape_error(
      caller,
      path,
      name,
      'Dense',
      f'kernel (in_features, {units}){bias}',
      weights,
    )


def _locally_connected_1d_input(
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


def _check_locally_connected_1d(caller, path, name, config, weights) -> None:
  """The weights of a ``LocallyConnected1D`` config, in its layout."""
  implementation = config.get('implementation', 1)
  layer = f'LocallyConnected1D (implementation={implementation})'
  count = 2 if config.get('use_bias', True) else 1
  bias = ' and bias (output_length, filters)' if count == 2 else ''
  try:
    kernel_size = checks.single_positive_int(
      config.get('kernel_size'), 'config', 'kernel_size'
    )
    strides = checks.single_positive_int(
      config.get('strides', 1), 'config', 'strides'
    )
    if len(weights) != count:
      raise ValueError(f'expected {count} arrays, got {len(weights)}.')
    input_length, in_features = _locally_connected_1d_input(
      config, weights, kernel_size, strides
    )
    locally_connected1d_weights(
      weights,
      implementation,
      input_length,
      in_features,
      kernel_size,
      strides,
      config.get('filters'),
      config.get('data_format') or 'channels_last',
    )
  except (TypeError, ValueError) as error:
    raise ValueError(
      f'{caller}: {path!r}: the weights of {layer} layer {name!r}'
      f' have shapes {[tuple(w.shape) for w in weights]}, which do not fit'
      f' its config (filters={config.get("filters")},'
      f' kernel_size={config.get("kernel_size")},'
      f' strides={config.get("strides")},'
      f' data_format={config.get("data_format")!r}): it needs a kernel in'
      f' the layout of implementation={implementation}{bias}; {error}'
    ) from None


def _check_weights(
  caller: str, path: str, name: str, layer: dict[str, Any], weights
) -> None:
  """Raises our own error when weights disagree with their layer's config."""
  class_name = layer.get('class_name')
  config = layer.get('config', {})
  if class_name == 'TimeDistributed' and isinstance(config.get('layer'), dict):
    inner = config['layer']
    class_name, config = inner.get('class_name'), inner.get('config')
  if not isinstance(config, dict):
    return  # the layer's converter names what is wrong
  check = {
    'Dense': _check_dense,
    'LocallyConnected1D': _check_locally_connected_1d,
  }.get(str(class_name))
  if check is not None:
    check(caller, path, name, config, weights)


# ---------------------------------------------------------------------------
# Public readers.


def read_keras_h5(
  path: str | os.PathLike,
) -> tuple[dict[str, Any], Weights, str]:
  """Reads a Keras 2 / tf.keras whole-model ``.h5`` file with h5py.

  Example usage::

    >>> from flax_dense._src.interop.keras_h5 import read_keras_h5
    >>> config, weights, version = read_keras_h5(
    ...   'tests/fixtures/sequential.h5')
    >>> config['class_name'], version
    ('Sequential', '2.21.0')
    >>> {name: [w.shape for w in ws] for name, ws in weights.items()}
    ... # doctest: +NORMALIZE_WHITESPACE
    {'masking': [], 'dense': [(4, 5), (5,)], 'dropout': [],
     'locally_connected1d': [(2, 15, 4), (2, 4)],
     'time_distributed': [(4, 3), (3,)]}

  Args:
    path: a file written by Keras 2's ``model.save('model.h5')``.

  Returns:
    ``(model_config, weights, keras_version)``: the model's config as
    Keras wrote it (``{'class_name': 'Sequential' or 'Functional' or
    'Model', 'config': {'name', 'layers': [{'class_name', 'config', ...}],
    ...}}``); ``{layer name: [arrays]}`` for every layer of the file in
    the model's order, the arrays in the layer's ``get_weights()`` order
    and layout (``[]`` for a layer without weights; a wrapper such as
    ``TimeDistributed`` lists its inner layer's); and the Keras version
    that wrote the file (e.g. ``'2.21.0'``).

  Raises:
    FileNotFoundError: if there is no file at ``path``.
    ValueError: if it is not a readable HDF5 file (not HDF5, truncated,
      corrupt), a weights-only file, not a Keras model, written by Keras
      1, holds text that is not UTF-8 or a ``model_config`` of the wrong
      shape (see :func:`check_model_config`), weights of a layer its config
      lacks, or if a ``Dense`` or ``LocallyConnected1D`` layer's weights
      have other shapes than its config needs.
  """
  return read_model(path, 'read_keras_h5')


def read_model(
  path: str | os.PathLike, caller: str
) -> tuple[dict[str, Any], Weights, str]:
  """:func:`read_keras_h5`, its messages naming ``caller``."""
  path = os.fspath(path)
  with _open(path, caller) as file:

    def read():
      if 'model_config' not in file.attrs:
        if 'layer_names' in file.attrs or _is_keras3_weights(file):
          raise ValueError(
            f'{caller}: {path!r} is a weights-only file (it has no'
            ' model_config); read it with read_keras_weights_h5, or give'
            " the file written by model.save('model.h5')."
          )
        raise ValueError(
          f'{caller}: {path!r} is an HDF5 file but not a Keras model: it'
          ' has no model_config attribute.'
        )
      version = _keras_version(file, path, caller)
      try:
        model_config = json.loads(_text(file.attrs['model_config']))
      except json.JSONDecodeError as error:
        raise ValueError(
          f'{caller}: {path!r}: model_config is not valid JSON ({error}).'
        ) from None
      if 'model_weights' not in file:
        raise ValueError(
          f'{caller}: {path!r} has a model_config but no model_weights'
          ' group; the file is damaged.'
        )
      weights = _keras2_weights(file['model_weights'], path, caller)
      return model_config, weights, version

    model_config, weights, version = _guarded(path, caller, read)
  names = check_model_config(model_config, path, caller)
  unknown = [name for name, arrays in weights.items() if arrays]
  unknown = [name for name in unknown if name not in names]
  if unknown:
    raise ValueError(
      f'{caller}: {path!r} holds weights for the layers {unknown}, which its'
      ' model_config does not have; the file is damaged.'
    )
  for layer, name in zip(_layer_configs(model_config), names, strict=True):
    if name in weights:
      _check_weights(caller, path, name, layer, weights[name])
  return model_config, weights, version


def read_keras_weights_h5(path: str | os.PathLike) -> tuple[Weights, str]:
  """Reads a Keras weights-only ``.h5`` file with h5py.

  Both formats: Keras 2 / tf.keras ``model.save_weights('w.h5')``, and
  Keras 3 ``model.save_weights('w.weights.h5')``.

  Example usage::

    >>> from flax_dense._src.interop.keras_h5 import read_keras_weights_h5
    >>> weights, version = read_keras_weights_h5(
    ...   'tests/fixtures/keras3.weights.h5')
    >>> version, [w.shape for w in weights['time_distributed']]
    ('3', [(5, 3), (3,)])

  Args:
    path: the weights file.

  Returns:
    ``(weights, keras_version)``: ``{layer name: [arrays]}`` as
    :func:`read_keras_h5` returns them (for Keras 3: the layer's variables,
    then those of the layers it wraps, nested groups in name order), and
    the version that wrote a Keras 2 file, or ``'3'`` for Keras 3's
    format, which records none.

  Raises:
    FileNotFoundError: if there is no file at ``path``.
    ValueError: if it is not a readable HDF5 file, a whole-model file, not
      a Keras weights file, or written by Keras 1.
  """
  return read_weights(path, 'read_keras_weights_h5')


def read_weights(path: str | os.PathLike, caller: str) -> tuple[Weights, str]:
  """:func:`read_keras_weights_h5`, its messages naming ``caller``."""
  path = os.fspath(path)
  with _open(path, caller) as file:

    def read():
      if 'model_config' in file.attrs:
        raise ValueError(
          f'{caller}: {path!r} is a whole-model file (it has a'
          ' model_config); read it with read_keras_h5, which also returns'
          ' the config.'
        )
      if _is_keras3_weights(file):
        return _keras3_weights(file), '3'
      if 'layer_names' not in file.attrs:
        raise ValueError(
          f'{caller}: {path!r} is an HDF5 file but not Keras weights: it'
          ' has neither a layer_names attribute (Keras 2) nor a layers'
          ' group (Keras 3).'
        )
      version = _keras_version(file, path, caller)
      return _keras2_weights(file, path, caller), version

    return _guarded(path, caller, read)


# ---------------------------------------------------------------------------
# LocallyConnected1D's weight layouts.


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
    >>> from flax_dense._src.interop.keras_h5 import (
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
  if implementation not in checks.LOCALLY_CONNECTED_1D_IMPLEMENTATIONS:
    raise ValueError(
      f'{caller}: implementation must be one of'
      f' {checks.LOCALLY_CONNECTED_1D_IMPLEMENTATIONS}, got'
      f' {implementation!r}.'
    )
  checks.check_positive_int(input_length, caller, 'input_length')
  checks.check_positive_int(in_features, caller, 'in_features')
  kernel_size, strides = checks.locally_connected_1d_options(
    filters, kernel_size, strides, 'valid', data_format, True, caller
  )
  channels_first = data_format == 'channels_first'
  example = (in_features, input_length) if channels_first else None
  kernel_shape = checks.locally_connected_1d_kernel_shape(
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
