"""One Keras layer to flax_dense modules: the registry's, a user's, or a
node of the graph (inputs, merges, wrappers)."""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import numpy as np

from flax_dense._src import registry
from flax_dense._src.linen import wrappers as linen_wrappers
from flax_dense._src.models.graph import MERGES
from flax_dense._src.registry.regularizers import activity_regularization
from flax_dense._src.registry.spec import KerasImport, KerasLayer, Step
from flax_dense._src.variables import CONSTANTS, frozen


def _no_step(layer: KerasLayer) -> list[Step]:
  del layer
  return []


def _per_step(module: Any) -> bool:
  """Whether ``module`` takes every leading axis as a batch axis (its spec
  says so), so that ``(batch, T, ...)`` runs it on every step."""
  found = registry.linen_spec(type(module))
  return found is not None and found.per_step


def _time_distributed(layer: KerasLayer) -> list[Step]:
  """``TimeDistributed(inner)``: the steps ``inner`` becomes, each run on
  every step. A layer that takes every leading axis as a batch axis (a
  Dense acts on the last axis anyway, a recurrent layer on the last two)
  is its own step; any other is wrapped in a ``TimeDistributed``, which
  folds the steps into the batch. The mask passes on unchanged, as Keras's
  wrapper passes it."""
  inner = layer.config.get('layer')
  class_name = inner.get('class_name') if isinstance(inner, dict) else None
  if not isinstance(inner, dict) or not class_name:
    raise layer.error(
      f'wraps {inner!r}; a TimeDistributed config holds the config of the'
      " layer it wraps, {'class_name': ..., 'config': ...}."
    )
  config = inner.get('config', {})
  name = config.get('name') if isinstance(config, dict) else None
  # Messages name the wrapped layer inside its wrapper.
  wrapped = dataclasses.replace(
    layer,
    class_name=class_name,
    name=name if isinstance(name, str) and name else layer.name,
    config=config,
    source=layer.describe(),
    input_shape=None,
  )
  steps = []
  for step in _steps(wrapped):
    # Named after the wrapper, which holds the weights in Keras.
    name = step.name
    if name.startswith(wrapped.name):
      name = name.replace(wrapped.name, layer.name, 1)
    module, variables = step.module, step.variables
    if not _per_step(module):
      module = linen_wrappers.TimeDistributed(module)
      nested: dict[str, Any] = {
        collection: {'layer': tree} for collection, tree in variables.items()
      }
      variables = nested
    steps.append(Step(name, module, 'propagate', variables))
  return steps


#: The Keras classes that are nodes of the graph rather than layers of the
#: registry: inputs, merges and wrappers.
GRAPH_IMPORTS: dict[str, KerasImport] = {
  'InputLayer': KerasImport(_no_step, 'an input of the model'),
  **{
    name: KerasImport(_no_step, 'a merge node of ``KerasFunctional``')
    for name in MERGES
  },
  'TimeDistributed': KerasImport(
    _time_distributed,
    'what the layer it wraps becomes, run on every step: itself for the'
    ' layers that take every leading axis as a batch axis (dense,'
    ' activations, embeddings, the recurrent layers), else inside'
    ' ``TimeDistributed``',
    makes=(nn.Dense,),
  ),
}

#: Every Keras class :func:`flax_dense.from_keras` covers, by class name.
COVERED: dict[str, KerasImport] = {**registry.KERAS_IMPORTS, **GRAPH_IMPORTS}


def _registered(converter: Callable[..., Any]) -> KerasImport:
  """A user's ``converter(class_name, config, weights)`` as an import."""

  def convert(layer: KerasLayer) -> list[Step]:
    result = converter(layer.class_name, dict(layer.config), layer.weights)
    module, variables = result if isinstance(result, tuple) else (result, {})
    if not isinstance(module, nn.Module) or not isinstance(variables, dict):
      raise TypeError(
        f'from_keras: the converter registered for {layer.describe()} must'
        ' return a linen module, or (module, variables) with variables a'
        " dict such as {'params': {'kernel': ...}}; got"
        f' {type(result).__name__}.'
      )
    unknown = set(variables) - {'params', CONSTANTS}
    if unknown:
      raise ValueError(
        f'from_keras: the converter registered for {layer.describe()}'
        f" returned variables in {sorted(unknown)}; expected 'params' or"
        f' {CONSTANTS!r}.'
      )
    return [Step(layer.name, module, 'drop', variables)]

  return KerasImport(convert, 'registered')


def register_keras_layer(
  keras_class_or_class_name: type | str,
  converter: Callable[
    [str, dict[str, Any], list[np.ndarray]],
    nn.Module | tuple[nn.Module, dict[str, Any]],
  ],
) -> None:
  """Teaches :func:`~flax_dense.from_keras` a Keras layer class of your own.

  ``converter(class_name, config, weights)`` receives the layer's Keras
  class name (``str``), its config (``dict``: what ``layer.get_config()``
  returns, or the layer's ``config`` in an ``.h5`` file's
  ``model_config``; includes ``'name'``) and its weights (``list`` of NumPy
  arrays, the order of ``layer.get_weights()``). It returns the linen
  module the layer becomes, or ``(module, variables)`` when the layer has
  weights, with ``variables`` such as ``{'params': {'kernel': ...}}`` (or
  ``{'constants': ...}`` for frozen weights). The module is named as the
  Keras layer, takes the layer's inputs as positional arguments (several
  for a layer called on a list) and returns its outputs (a tuple for
  several); the Keras mask ends at it. Live models and ``.h5`` files call
  the same converter; it goes in the same layer registry as flax_dense's
  own. Registering a name again replaces its converter.

  Example usage::

    >>> import flax_dense as fd, numpy as np
    >>> def convert(class_name, config, weights):
    ...   return fd.ConstProduct(weights=weights[0]), {
    ...       'constants': {'kernel': weights[0]}}
    >>> fd.register_keras_layer('MyConstProduct', convert)
    >>> module, variables = convert('MyConstProduct', {}, [np.ones(3)])
    >>> module.apply(variables, np.full((1, 3), 2.0))
    Array([[8.]], dtype=float32)

  Args:
    keras_class_or_class_name: the Keras layer class, or its class name as
      configs spell it (``'MyLayer'``; ``'package>MyLayer'`` for one
      registered with ``keras.saving.register_keras_serializable`` works
      too).
    converter: the function above.

  Raises:
    TypeError: if ``keras_class_or_class_name`` is neither a class nor a
      string, or ``converter`` is not callable.
    ValueError: for an empty name, or the name of a layer flax_dense
      covers itself.
  """
  if isinstance(keras_class_or_class_name, type):
    class_name = keras_class_or_class_name.__name__
  elif isinstance(keras_class_or_class_name, str):
    class_name = keras_class_or_class_name.rpartition('>')[2]
  else:
    raise TypeError(
      'register_keras_layer: keras_class_or_class_name must be a Keras layer'
      f' class or its class name, got {keras_class_or_class_name!r}.'
    )
  if not callable(converter):
    raise TypeError(
      'register_keras_layer: converter must be a function (class_name,'
      f' config, weights) -> module or (module, variables), got {converter!r}.'
    )
  if not class_name:
    raise ValueError('register_keras_layer: the class name is empty.')
  if class_name in COVERED:
    raise ValueError(
      f'register_keras_layer: {class_name} is a Keras layer flax_dense'
      ' imports itself; give your layer class a name of its own.'
    )
  registry.REGISTERED[class_name] = _registered(converter)


def import_of(layer: KerasLayer) -> KerasImport:
  registered = registry.REGISTERED.get(layer.class_name.rpartition('>')[2])
  # A live layer of a class of our own goes by its registered name; a file
  # names it so already.
  module = '' if layer.keras_type is None else layer.keras_type.__module__
  own = module.startswith('flax_dense')
  key = f'flax_dense>{layer.class_name}' if own else layer.class_name
  found = registered or COVERED.get(key)
  if found is None or (
    module and registered is None and not module.startswith('keras') and not own
  ):
    covered = ', '.join(sorted(COVERED))
    raise ValueError(
      f'from_keras: {layer.describe()} is not covered; flax_dense imports'
      f' {covered} (docs/keras_import.md). For a layer of your own,'
      f" register a converter: fd.register_keras_layer('{layer.class_name}',"
      ' converter); or rebuild that part of the model in Flax.'
    )
  return found


def _steps(layer: KerasLayer) -> list[Step]:
  """The steps of a layer; a config a built-in import cannot read is our
  error naming the layer (a file may hold a value of the wrong type or
  lack a key Keras always writes)."""
  found = import_of(layer)
  if is_registered(layer.class_name):
    return found.convert(layer)
  try:
    return found.convert(layer)
  except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
    message = str(error)
    if message.startswith('from_keras:'):
      raise
    kind = TypeError if isinstance(error, TypeError) else ValueError
    raise kind(
      f'from_keras: {layer.describe()} has a config that flax_dense cannot'
      f' import ({type(error).__name__}: {message})'
    ) from None


def is_registered(class_name: str) -> bool:
  """Whether a user registered a converter for ``class_name``."""
  return class_name.rpartition('>')[2] in registry.REGISTERED


def convert_layer(layer: KerasLayer, trainable: bool) -> list[Step]:
  """The steps of one Keras layer, frozen ones wrapped to use constants.

  A layer's Keras ``activity_regularizer`` becomes an
  ``ActivityRegularization`` step after it.
  """
  steps = _steps(layer)
  if layer.class_name != 'ActivityRegularization':
    regularization = activity_regularization(layer)
    if regularization is not None:
      name = f'{layer.name}_activity_regularizer' if steps else layer.name
      steps.append(Step(name, regularization, 'propagate'))
  if trainable:
    return steps
  return [
    dataclasses.replace(
      step,
      module=frozen(step.module),
      variables={CONSTANTS: step.variables['params']},
    )
    if 'params' in step.variables
    else step
    for step in steps
  ]
