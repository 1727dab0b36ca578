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
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from flax_dense._src import validate

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
# The model config, checked for the shape Keras writes.


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
    and all(validate.is_int(index) and index >= 0 for index in value[1:3])
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


# ---------------------------------------------------------------------------
# Public readers.


def read_keras_h5(
  path: str | os.PathLike,
) -> tuple[dict[str, Any], Weights, str]:
  """Reads a Keras 2 / tf.keras whole-model ``.h5`` file with h5py.

  Example usage::

    >>> from flax_dense._src.keras.h5 import read_keras_h5
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
      shape (see :func:`check_model_config`), or weights of a layer its
      config lacks. (Weights that do not fit their layer's config are found
      when the layers are converted, by ``fd.from_keras``.)
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
  return model_config, weights, version


def read_keras_weights_h5(path: str | os.PathLike) -> tuple[Weights, str]:
  """Reads a Keras weights-only ``.h5`` file with h5py.

  Both formats: Keras 2 / tf.keras ``model.save_weights('w.h5')``, and
  Keras 3 ``model.save_weights('w.weights.h5')``.

  Example usage::

    >>> from flax_dense._src.keras.h5 import read_keras_weights_h5
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
