"""Keras models as flax_dense reads them: live, ``.keras`` and ``.h5``."""

import dataclasses
import os
from typing import Any

import numpy as np

from flax_dense._src import validate
from flax_dense._src.keras import h5
from flax_dense._src.keras.backend import import_keras
from flax_dense._src.keras.imports import import_of, is_registered
from flax_dense._src.registry.spec import KerasLayer


@dataclasses.dataclass
class KerasModel:
  """What :func:`from_keras` reads from either source."""

  name: str
  class_name: str
  config: dict[str, Any]
  layers: dict[str, KerasLayer]
  trainable: dict[str, bool]
  source: str
  keras3: bool
  #: The ``keras.ops`` calls of the graph, by name: ``'module.Class'``.
  operations: dict[str, str] = dataclasses.field(default_factory=dict)


def _layer_entries(model_config: dict[str, Any]) -> list[dict[str, Any]]:
  config = model_config.get('config', {})
  layers = config.get('layers', []) if isinstance(config, dict) else config
  return [entry for entry in layers if isinstance(entry, dict)]


def entry_name(entry: dict[str, Any]) -> str:
  return entry.get('name') or entry.get('config', {}).get('name')


def _operation_path(entry: dict[str, Any]) -> str:
  """``'module.Class'`` of a ``keras.ops`` entry of a config, for messages."""
  return f'{entry.get("module")}.{entry.get("class_name")}'


def _nested_model_error(source: str, entry: dict[str, Any]) -> ValueError:
  return ValueError(
    f"from_keras: layer '{entry_name(entry)}' of {source} is a"
    f' {entry.get("class_name")} model inside the model; flax_dense imports'
    ' flat models: call the inner model on keras.Input tensors of the outer'
    ' one, or import it apart.'
  )


_MODEL_CLASSES = ('Sequential', 'Functional', 'Model')


def _from_h5(path: str) -> KerasModel:
  model_config, weights, version = h5.read_model(path, 'from_keras')
  source = f'file {path!r}'
  class_name = model_config.get('class_name')
  if class_name not in _MODEL_CLASSES:
    raise ValueError(
      f'from_keras: {path!r} holds a {class_name!r}, not a Keras'
      ' Sequential or functional model.'
    )
  layers, trainable, operations = {}, {}, {}
  # Keras 3 also writes .h5 files, in its own config spelling and rules.
  keras3 = version.startswith('3')
  for entry in _layer_entries(model_config):
    name = entry_name(entry)
    if entry.get('class_name') in _MODEL_CLASSES:
      raise _nested_model_error(source, entry)
    config = entry['config']  # read_model checked the entries' types
    layers[name] = KerasLayer(
      entry['class_name'],
      name,
      config,
      weights.get(name, []),
      source,
      keras3=keras3,
    )
    if str(entry.get('module')).startswith(('keras.src.ops.', 'keras.ops.')):
      operations[name] = _operation_path(entry)
    trainable[name] = validate.check_bool(
      config.get('trainable', True),
      f"from_keras: layer '{name}' of {source}",
      'trainable',
    )
  return KerasModel(
    model_config.get('config', {}).get('name', path),
    class_name,
    model_config.get('config', {}),
    layers,
    trainable,
    source,
    keras3=keras3,
    operations=operations,
  )


def _from_live(keras: Any, model: Any) -> KerasModel:
  if not isinstance(model, keras.Sequential) and not hasattr(model, 'inputs'):
    raise ValueError(
      f"from_keras: model '{model.name}' of class {type(model).__name__} is"
      ' a subclassed model, whose call() is Python code with no graph to'
      ' read; expected a keras.Sequential or a functional keras.Model'
      ' (keras.Model(inputs, outputs)).'
    )
  if not model.built:
    raise ValueError(
      f"from_keras: model '{model.name}' is not built, so it has no weights"
      ' yet; give it a keras.Input(shape) or call it once on data.'
    )
  source = f"model '{model.name}'"
  try:
    config = model.get_config()
  except NotImplementedError as error:
    raise ValueError(
      f'from_keras: {source} cannot give its config, which from_keras reads'
      f' its graph from: {error} (give your layers a get_config()).'
    ) from None
  layers, trainable = {}, {}
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      raise _nested_model_error(
        source, {'name': layer.name, 'class_name': type(layer).__name__}
      )
    if getattr(layer, 'lora_enabled', False) or getattr(
      layer, 'quantization_mode', None
    ):
      raise ValueError(
        f"from_keras: {type(layer).__name__} layer '{layer.name}' of"
        f' {source} uses LoRA or quantization, whose weights are not a plain'
        ' kernel and bias; import the model before enabling them.'
      )
    record = KerasLayer(
      type(layer).__name__,
      layer.name,
      layer.get_config(),
      [np.asarray(w) for w in layer.get_weights()],
      source,
      type(layer),
    )
    flags = {w.trainable for w in layer.weights}
    if len(flags) > 1 and not is_registered(record.class_name):
      import_of(record)  # an uncovered layer gets the advice all such get
      raise record.error(
        'mixes trainable and non-trainable weights, which no covered layer'
        ' does.',
      )
    layers[layer.name] = record
    trainable[layer.name] = flags != {False} and layer.trainable
  class_name = 'Sequential' if isinstance(model, keras.Sequential) else 'Model'
  # Keras 3 records a keras.ops call on the graph's tensors as an operation,
  # listed with the layers in the config but not in model.layers.
  operations = {}
  for entry in config.get('layers', []) if class_name == 'Model' else []:
    name = entry_name(entry)
    if name not in layers:
      layers[name] = KerasLayer(entry['class_name'], name, {}, [], source)
      trainable[name] = False
      operations[name] = _operation_path(entry)
  return KerasModel(
    model.name,
    class_name,
    config,
    layers,
    trainable,
    source,
    keras3=True,
    operations=operations,
  )


def read(model_or_path: Any) -> KerasModel:
  """The model, from a live Keras model or a file."""
  if isinstance(model_or_path, str | os.PathLike):
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'from_keras: no such file {path!r}.')
    if path.endswith(('.h5', '.hdf5')):
      return _from_h5(path)
    if not path.endswith('.keras'):
      raise ValueError(
        f'from_keras: {path!r} is neither a .keras file (Keras 3) nor an .h5'
        ' file (Keras 2 / tf.keras model.save).'
      )
    keras = import_keras('from_keras', jax_backend=False)
    return _from_live(keras, keras.saving.load_model(path, compile=False))
  keras = import_keras('from_keras', jax_backend=False)
  if not isinstance(model_or_path, keras.Model):
    raise ValueError(
      'from_keras: expected a keras.Model or the path of a .keras or .h5'
      f' file, got {type(model_or_path).__name__}.'
    )
  return _from_live(keras, model_or_path)
