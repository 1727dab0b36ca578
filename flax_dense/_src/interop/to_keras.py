"""flax_dense modules inside Keras 3, and models handed back to Keras.

Two ways out of JAX's own process:

- :func:`to_keras` hosts a Flax module (a flax_dense layer, an imported
  model, or a user's linen model built from them) as one Keras layer whose
  weights are Keras variables: Keras trains it, saves it and serves it.
- :func:`to_keras_model` rebuilds the native Keras model of a module that
  :func:`~flax_dense.from_keras` makes, one Keras layer per flax_dense layer.

Keras is imported only when one of them is called; the Keras-side classes
live in :mod:`flax_dense._src.interop.keras_layers`. A hosted module is
saved in a ``.keras`` file as JSON: its class (by import path) and the
dataclass fields that differ from their defaults, encoded by
:func:`module_to_config`.
"""

import dataclasses
import enum
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from flax_dense._src.linen import (
  core,
  dense,
  dropout,
  masking,
  pooling,
  product,
  regularizers,
)
from flax_dense._src.ops.activations import KERAS_ACTIVATIONS
from flax_dense._src.ops.regularizers import l1_l2
from flax_dense._src.variables import CONSTANTS, LOSSES

#: Packages whose classes and functions a ``.keras`` file may name without
#: ``safe_mode=False``: importing them runs no code from the file's author.
TRUSTED_PACKAGES = ('flax_dense', 'flax', 'jax', 'optax', 'numpy')

#: Collections a hosted module may hold: trained weights and frozen ones.
HOSTED_COLLECTIONS = ('params', CONSTANTS)


# ---------------------------------------------------------------------------
# Modules as JSON.


def _import_path(value: Any) -> str | None:
  """``'module:qualname'`` of a class or function importable by that path."""
  module = getattr(value, '__module__', None)
  qualname = getattr(value, '__qualname__', None)
  if not module or not qualname or '<' in qualname:
    return None
  try:
    found = _resolve(f'{module}:{qualname}')
  except (ImportError, AttributeError):
    return None
  return f'{module}:{qualname}' if found is value else None


def _resolve(path: str) -> Any:
  module, qualname = path.split(':')
  value = importlib.import_module(module)
  for part in qualname.split('.'):
    value = getattr(value, part)
  return value


def _factory_call(function: Callable) -> dict[str, Any] | None:
  """A closure as the call of the top-level factory that made it, if any.

  ``fd.l1_l2(0.1, 0.2)`` returns a function defined inside ``l1_l2`` that
  keeps its arguments in its closure: it is encoded as that call. A closure
  that keeps anything other than the factory's arguments is not.
  """
  qualname = getattr(function, '__qualname__', '')
  factory_name, _, rest = qualname.partition('.<locals>.')
  if not rest or '<' in rest or getattr(function, '__closure__', None) is None:
    return None
  try:
    factory = _resolve(f'{function.__module__}:{factory_name}')
    captured = inspect.getclosurevars(function).nonlocals
    parameters = inspect.signature(factory).parameters
  except (ImportError, AttributeError, TypeError, ValueError):
    return None
  if not set(captured) <= set(parameters):
    return None
  missing = [
    name
    for name, parameter in parameters.items()
    if name not in captured and parameter.default is inspect.Parameter.empty
  ]
  if missing:
    return None
  return {
    'factory': f'{function.__module__}:{factory_name}',
    'arguments': captured,
  }


class _Unencodable(ValueError):
  """A field value :func:`module_to_config` cannot write as JSON."""


def _encode(value: Any, where: str) -> Any:
  """``value`` as JSON-compatible data that :func:`_decode` reads back."""
  if value is None or isinstance(value, bool | int | float | str):
    return value
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, nn.Module):
    return {'module': module_to_config(value, where)}
  if isinstance(value, tuple | list):
    items = [_encode(item, f'{where}[{i}]') for i, item in enumerate(value)]
    return {'tuple': items} if isinstance(value, tuple) else items
  if isinstance(value, Mapping):
    if not all(isinstance(key, str) for key in value):
      raise _Unencodable(f'{where} is a mapping with keys that are not str')
    return {
      'dict': {k: _encode(v, f'{where}[{k!r}]') for k, v in value.items()}
    }
  if isinstance(value, enum.Enum):
    return {'enum': _import_path(type(value)), 'name': value.name}
  if isinstance(value, np.dtype) or (
    isinstance(value, type) and np.issubdtype(value, np.generic)
  ):
    return {'dtype': jnp.dtype(value).name}
  if callable(value):
    path = _import_path(value)
    if path is not None:
      return {'function': path}
    call = _factory_call(value)
    if call is not None:
      return {
        'factory': call['factory'],
        'arguments': _encode(call['arguments'], where)['dict'],
      }
  raise _Unencodable(
    f'{where} is {value!r}, which is not JSON data, a module, a dtype, or a'
    ' function importable by name'
  )


def _check_trusted(path: str, trusted: bool) -> None:
  package = path.split('.')[0].split(':')[0]
  if not trusted and package not in TRUSTED_PACKAGES:
    raise ValueError(
      f'to_keras: the saved model names {path!r}, outside the trusted'
      f' packages {TRUSTED_PACKAGES}; importing it could run any code. If'
      ' you trust the file, load it with keras.models.load_model(path,'
      ' safe_mode=False).'
    )


def _decode(value: Any, trusted: bool) -> Any:
  """The inverse of :func:`_encode`."""
  if isinstance(value, list):
    return [_decode(item, trusted) for item in value]
  if not isinstance(value, dict):
    return value
  if 'module' in value:
    return module_from_config(value['module'], trusted)
  if 'tuple' in value:
    return tuple(_decode(item, trusted) for item in value['tuple'])
  if 'dict' in value:
    return {k: _decode(v, trusted) for k, v in value['dict'].items()}
  if 'enum' in value:
    _check_trusted(value['enum'], trusted)
    return _resolve(value['enum'])[value['name']]
  if 'dtype' in value:
    return jnp.dtype(value['dtype'])
  if 'function' in value:
    _check_trusted(value['function'], trusted)
    return _resolve(value['function'])
  if 'factory' in value:
    _check_trusted(value['factory'], trusted)
    arguments = {k: _decode(v, trusted) for k, v in value['arguments'].items()}
    return _resolve(value['factory'])(**arguments)
  raise ValueError(f'to_keras: unreadable saved value {value!r}.')


def _frozen_base(module_type: type) -> type | None:
  """The layer class that ``from_keras``'s ``frozen`` wrapped, if it did."""
  base = module_type.__mro__[1]
  if (
    module_type.__module__ == 'flax.linen.transforms'
    and module_type.__name__ == f'Map_variables{base.__name__}'
  ):
    return base
  return None


def _is_default(field: dataclasses.Field, value: Any) -> bool:
  if field.default is not dataclasses.MISSING:
    default = field.default
  elif field.default_factory is not dataclasses.MISSING:
    default = field.default_factory()
  else:
    return False
  if value is default:
    return True
  try:
    return bool(type(value) is type(default) and value == default)
  except Exception:  # noqa: BLE001 - arrays and other odd values differ
    return False


def module_to_config(module: nn.Module, where: str = 'module') -> dict:
  """A linen module as JSON data: its class and non-default fields.

  Args:
    module: a linen module whose class is importable by name (defined at
      the top level of a module) and whose fields are JSON data, modules,
      dtypes, or functions importable by name (or closures of a top-level
      factory such as ``fd.l1_l2``).
    where: how the messages name the module.

  Returns:
    ``{'class': 'package.module:Class', 'fields': {...}}``, plus
    ``'frozen': True`` for a layer that ``from_keras`` froze.

  Raises:
    ValueError: naming the field that cannot be written, and what to do.
  """
  module_type = type(module)
  frozen = _frozen_base(module_type)
  if frozen is not None:
    module_type = frozen
  path = _import_path(module_type)
  if path is None:
    raise ValueError(
      f'to_keras: {where} is a {module_type.__qualname__}, a class that'
      ' cannot be imported by name, so a .keras file could not rebuild it;'
      ' define it at the top level of an importable module.'
    )
  fields = {}
  for field in dataclasses.fields(module):
    if not field.init or field.name == 'parent':
      continue
    value = getattr(module, field.name)
    if _is_default(field, value):
      continue
    try:
      fields[field.name] = _encode(value, f'{where}.{field.name}')
    except _Unencodable as error:
      raise ValueError(
        f'to_keras: {error}, so a .keras file could not rebuild'
        f' {module_type.__name__}; give that field such a value (a named'
        ' function defined at the top level of a module rather than a'
        ' lambda).'
      ) from None
  config = {'class': path, 'fields': fields}
  if frozen is not None:
    config['frozen'] = True
  return config


def module_from_config(config: dict, trusted: bool = True) -> nn.Module:
  """The module :func:`module_to_config` wrote.

  Args:
    config: what :func:`module_to_config` returned.
    trusted: whether classes and functions outside
      :data:`TRUSTED_PACKAGES` may be imported.

  Returns:
    The linen module.
  """
  _check_trusted(config['class'], trusted)
  module_type = _resolve(config['class'])
  if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
    raise ValueError(
      f'to_keras: the saved class {config["class"]!r} is not a linen module.'
    )
  fields = {k: _decode(v, trusted) for k, v in config['fields'].items()}
  module = module_type(**fields)
  if config.get('frozen'):
    from flax_dense._src.interop.keras import frozen

    module = frozen(module)
  return module


# ---------------------------------------------------------------------------
# Variables as Keras weights.


def variable_specs(variables: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One entry per weight: collection, path, shape and dtype, in order.

  Raises:
    TypeError: if ``variables`` is not a mapping of collections.
    ValueError: for a collection other than ``params`` and ``constants``
      (``losses`` is ignored: it is recomputed at every call).
  """
  if not isinstance(variables, Mapping):
    raise TypeError(
      'to_keras: variables must be the mapping of collections module.init'
      f' returns, got {type(variables).__name__}.'
    )
  specs = []
  for collection, tree in variables.items():
    if collection == LOSSES:
      continue
    if collection not in HOSTED_COLLECTIONS:
      raise ValueError(
        f'to_keras: variables hold the collection {collection!r}; a Keras'
        f' layer hosts {HOSTED_COLLECTIONS} (trainable and frozen weights).'
        ' Mutable state such as batch statistics is not supported.'
      )
    flat = traverse_util.flatten_dict(nn.meta.unbox(dict(tree)))
    for path, leaf in flat.items():
      specs.append(
        {
          'collection': collection,
          'path': [str(part) for part in path],
          'shape': [int(size) for size in np.shape(leaf)],
          'dtype': jnp.dtype(jnp.result_type(leaf)).name,
          'value': leaf,
        }
      )
  return specs


def nest_variables(
  specs: Sequence[Mapping[str, Any]], values: Sequence[Any]
) -> dict[str, Any]:
  """The variables tree of ``specs`` with ``values`` as leaves."""
  flat = {
    (spec['collection'], *spec['path']): value
    for spec, value in zip(specs, values, strict=True)
  }
  return traverse_util.unflatten_dict(flat)


def training_argument(module: nn.Module) -> str | None:
  """The keyword of ``module.__call__`` that switches training, if any."""
  parameters = inspect.signature(type(module).__call__).parameters
  for name in ('deterministic', 'training', 'train'):
    if name in parameters:
      return name
  return None


def call_arguments(module: nn.Module, training: bool) -> dict[str, bool]:
  """The keyword arguments that tell ``module`` whether it trains."""
  name = training_argument(module)
  if name is None:
    return {}
  return {name: not training if name == 'deterministic' else training}


def check_variables_fit(
  module: nn.Module,
  specs: Sequence[Mapping[str, Any]],
  input_shapes: Sequence[tuple[int | None, ...]],
  dtype: Any,
) -> None:
  """Raises our own error unless ``specs`` are what ``module`` builds.

  Args:
    module: the hosted module.
    specs: its weights, from :func:`variable_specs`.
    input_shapes: Keras's input shapes (``None`` for an unknown size).
    dtype: the inputs' dtype.
  """
  sizes = [
    tuple(2 if s is None else s for s in shape) for shape in input_shapes
  ]
  samples = [jax.ShapeDtypeStruct(shape, dtype) for shape in sizes]

  def init(*inputs):
    keys = {'params': jax.random.key(0), 'dropout': jax.random.key(0)}
    return module.init(keys, *inputs, **call_arguments(module, False))

  try:
    built = jax.eval_shape(init, *samples)
  except Exception as error:
    raise ValueError(
      f'to_keras: {type(module).__name__} cannot be applied to Keras inputs'
      f' of shape {_shapes(input_shapes)}: {error}'
    ) from error
  expected = {
    (spec['collection'], *spec['path']): (tuple(spec['shape']))
    for spec in variable_specs(built)
  }
  given = {
    (spec['collection'], *spec['path']): tuple(spec['shape']) for spec in specs
  }
  if expected == given:
    return
  differences = [
    f'{"/".join(path)}: given {given.get(path, "nothing")}, built'
    f' {expected.get(path, "nothing")}'
    for path in sorted(set(expected) | set(given))
    if expected.get(path) != given.get(path)
  ]
  raise ValueError(
    f'to_keras: the variables do not fit {type(module).__name__} on Keras'
    f' inputs of shape {_shapes(input_shapes)} ({"; ".join(differences)}).'
    ' Pass the variables module.init returns for inputs of that shape, or'
    ' call the layer on inputs of the shape the variables were made for.'
  )


def _shapes(input_shapes):
  shapes = [tuple(shape) for shape in input_shapes]
  return shapes[0] if len(shapes) == 1 else shapes


# ---------------------------------------------------------------------------
# The public functions.


def import_keras(caller: str) -> Any:
  """Keras 3 on the JAX backend, or our own error saying what to do."""
  try:
    import keras
  except ImportError as error:
    raise ImportError(
      f'{caller} needs Keras 3, an optional dependency: pip install'
      " 'flax_dense[keras]'."
    ) from error
  if int(keras.__version__.split('.')[0]) < 3:
    raise ImportError(
      f'{caller} needs Keras 3, found Keras {keras.__version__}: pip install'
      " 'flax_dense[keras]'."
    )
  backend = keras.backend.backend()
  if backend != 'jax':
    raise RuntimeError(
      f"{caller} needs Keras's JAX backend, but Keras runs on {backend!r}:"
      ' set the environment variable KERAS_BACKEND=jax before Keras is first'
      ' imported (or "backend": "jax" in ~/.keras/keras.json).'
    )
  return keras


def to_keras(
  module: nn.Module | nnx.Module,
  variables: Mapping[str, Any] | None = None,
  *,
  name: str | None = None,
  seed: int | None = None,
  rng_collections: Sequence[str] = ('dropout',),
) -> Any:
  """A Keras 3 layer (JAX backend) that runs a Flax module.

  The layer's weights are Keras variables named by their path in the
  variables (``flax_module/dense/kernel``): ``params`` trainable,
  ``constants`` non-trainable, so ``model.summary()``, ``model.fit`` and
  optimizers treat them as Keras's own. Each call applies the module to the
  variables' current values. Keras's ``training`` argument reaches the
  module as ``deterministic=not training`` (or ``training=``) when its
  ``__call__`` takes one; in training the rng streams ``rng_collections``
  draw from a ``keras.random.SeedGenerator``. Losses the module sows into
  ``losses`` (activity penalties) are added with ``add_loss``, so
  ``model.fit`` minimises what Keras would. TensorFlow is not needed.

  The module is saved in ``.keras`` files by its class and fields (see
  :func:`module_to_config`); this is checked here, so a module that could
  not be saved fails now, before any file exists.
  ``keras.models.load_model`` needs the classes registered: import
  ``flax_dense`` and call :func:`keras_custom_objects` first (or pass it as
  ``custom_objects=``); a file naming classes outside
  :data:`TRUSTED_PACKAGES` (your own modules) loads with
  ``safe_mode=False``.

  Example usage::

    >>> import os; _ = os.environ.setdefault('KERAS_BACKEND', 'jax')
    >>> import keras, jax, jax.numpy as jnp, numpy as np
    >>> import flax_dense as fd
    >>> module = fd.PerPositionDense(3, activation='tanh')
    >>> variables = module.init(jax.random.key(0), jnp.ones((1, 5, 4)))
    >>> layer = fd.to_keras(module, variables, name='per_position')
    >>> model = keras.Sequential([keras.Input((5, 4)), layer])
    >>> [w.path for w in model.trainable_weights]
    ['per_position/bias', 'per_position/kernel']
    >>> x = np.ones((2, 5, 4), np.float32)
    >>> bool(np.allclose(model.predict(x, verbose=0),
    ...                  module.apply(variables, x), atol=1e-6))
    True

  Args:
    module: a linen module (a flax_dense layer, ``fd.KerasSequential``, or
      a model of yours built from them), or an NNX flax_dense layer or
      ``fd.nnx.KerasSequential`` (converted by ``fd.nnx.to_linen``).
    variables: the linen module's variables (``params`` and
      ``constants``), as ``init`` returns them; ``None`` for an NNX module,
      which holds its own.
    name: the Keras layer name; default ``flax_module``.
    seed: seed of the layer's ``SeedGenerator`` (dropout in training).
    rng_collections: the rng streams the module draws from in training.

  Returns:
    A ``keras.layers.Layer``; call it on one input, or on a list of inputs
    for a module with several (``MultiIODense``).

  Raises:
    ImportError: without Keras 3.
    RuntimeError: if Keras runs on another backend than JAX.
    TypeError: for a module that is neither linen nor NNX, or variables
      that are not a mapping.
    ValueError: for variables given with an NNX module or missing for a
      linen one, a collection other than ``params`` and ``constants``, or a
      module that a ``.keras`` file could not rebuild (naming the field).
      Variables that do not fit the module's inputs raise when the layer is
      first called (built), naming each weight that differs.
  """
  keras = import_keras('to_keras')
  if isinstance(module, nnx.Module):
    if variables is not None:
      raise ValueError(
        'to_keras: an NNX module holds its own weights; call'
        ' to_keras(model) without variables.'
      )
    from flax_dense._src.nnx.convert import to_linen

    module, variables = to_linen(module)
  if not isinstance(module, nn.Module):
    raise TypeError(
      'to_keras: module must be a flax.linen.Module or an NNX module, got'
      f' {type(module).__name__}.'
    )
  if variables is None:
    raise ValueError(
      'to_keras: a linen module needs its variables: to_keras(module,'
      ' module.init(key, sample_inputs)).'
    )
  specs = variable_specs(variables)
  config = module_to_config(module)
  del keras
  from flax_dense._src.interop import keras_layers

  layer = keras_layers.FlaxModule(
    module=config,
    variables=[{k: v for k, v in s.items() if k != 'value'} for s in specs],
    seed=seed,
    rng_collections=list(rng_collections),
    name=name or 'flax_module',
  )
  for variable, spec in zip(layer.flax_variables, specs, strict=True):
    # A copy: Keras donates its variables' buffers to its jitted steps,
    # which would delete the caller's arrays.
    variable.assign(np.array(spec['value'], variable.dtype))
  return layer


def keras_custom_objects() -> dict[str, type]:
  """flax_dense's Keras classes, registered, by their registered names.

  ``keras.models.load_model`` finds them once this has run in the process;
  it also returns them for ``custom_objects=``.

  Returns:
    ``{'flax_dense>FlaxModule': ..., 'flax_dense>ConstProduct': ...}``.
  """
  import_keras('keras_custom_objects')
  from flax_dense._src.interop import keras_layers

  return keras_layers.custom_objects()


# ---------------------------------------------------------------------------
# Models back to Keras.


@dataclasses.dataclass(frozen=True)
class _Layer:
  """One flax_dense layer on its way to Keras, with its weights."""

  name: str
  module: nn.Module
  mask_flow: str | None
  params: Mapping[str, Any]
  trainable: bool


def _activation(layer: _Layer, activation: Any) -> str:
  if activation is None:
    return 'linear'
  if isinstance(activation, str) and activation.lower() in KERAS_ACTIVATIONS:
    return activation.lower()
  raise ValueError(
    f"to_keras_model: layer '{layer.name}' has activation {activation!r};"
    ' Keras layers take activations by name: give it as one of'
    f' {", ".join(sorted(KERAS_ACTIVATIONS))}.'
  )


def _activity_regularizer(keras: Any, layer: _Layer, regularizer: Any) -> Any:
  """Keras's ``L1L2`` for an ``fd.l1_l2`` penalty, else our own error."""
  if regularizer is None:
    return None
  call = _factory_call(regularizer)
  if call is None or _resolve(call['factory']) is not l1_l2:
    raise ValueError(
      f"to_keras_model: layer '{layer.name}' has activity_regularizer"
      f' {regularizer!r}; Keras carries fd.l1_l2 penalties only (as'
      ' keras.regularizers.L1L2).'
    )
  return keras.regularizers.L1L2(**call['arguments'])


def _keras_layer(keras: Any, layer: _Layer) -> tuple[Any, list, tuple]:
  """The Keras layer of one flax_dense layer, its weights and build shape.

  Returns:
    ``(keras_layer, weights, build_shape)``: ``weights`` in Keras's order,
    ``build_shape`` the input shape to build it with (``None`` for a layer
    without weights).
  """
  from flax_dense._src.interop import keras_layers

  layers = keras.layers
  module, name, params = layer.module, layer.name, layer.params
  common = {'name': name, 'trainable': layer.trainable}
  kind = _frozen_base(type(module)) or type(module)
  if kind is nn.Dense:
    kernel = params['kernel']
    weights = [kernel, params['bias']] if module.use_bias else [kernel]
    made = layers.Dense(module.features, use_bias=module.use_bias, **common)
    return made, weights, (None, kernel.shape[0])
  if issubclass(kind, dense.PerPositionDense):
    kernel = params['kernel']
    positions, in_features, features = kernel.shape
    made = layers.EinsumDense(
      'abc,bcd->abd',
      output_shape=(positions, features),
      bias_axes='bd' if module.use_bias else None,
      activation=_activation(layer, module.activation),
      activity_regularizer=_activity_regularizer(
        keras, layer, module.activity_regularizer
      ),
      **common,
    )
    weights = [kernel, params['bias']] if module.use_bias else [kernel]
    return made, weights, (None, positions, in_features)
  if issubclass(kind, product.ConstProduct):
    kernel = params['kernel']
    made = keras_layers.ConstProduct(
      kernel.shape[-1], name=name, trainable=layer.trainable
    )
    return made, [kernel], (None, kernel.shape[-1])
  weightless = {
    core.Activation: lambda m: (
      layers.Activation,
      {'activation': _activation(layer, m.activation)},
      not m.params or 'an Activation with params',
    ),
    core.Flatten: lambda m: (layers.Flatten, {'data_format': m.data_format}),
    core.Reshape: lambda m: (
      layers.Reshape,
      {'target_shape': tuple(m.target_shape)},
    ),
    core.Permute: lambda m: (layers.Permute, {'dims': tuple(m.dims)}),
    core.RepeatVector: lambda m: (layers.RepeatVector, {'n': m.n}),
    masking.Masking: lambda m: (layers.Masking, {'mask_value': m.mask_value}),
    dropout.Dropout: lambda m: (
      layers.Dropout,
      {'rate': m.rate, 'noise_shape': m.noise_shape},
    ),
    dropout.SpatialDropout1D: lambda m: (
      layers.SpatialDropout1D,
      {'rate': m.rate},
      m.data_format == 'channels_last' or 'a channels_first SpatialDropout1D',
    ),
    dropout.SpatialDropout2D: lambda m: (
      layers.SpatialDropout2D,
      {'rate': m.rate, 'data_format': m.data_format},
    ),
    dropout.SpatialDropout3D: lambda m: (
      layers.SpatialDropout3D,
      {'rate': m.rate, 'data_format': m.data_format},
    ),
    pooling.GlobalAveragePooling1D: lambda m: (
      layers.GlobalAveragePooling1D,
      {'data_format': m.data_format, 'keepdims': m.keepdims},
    ),
    pooling.GlobalMaxPooling1D: lambda m: (
      layers.GlobalMaxPooling1D,
      {'data_format': m.data_format, 'keepdims': m.keepdims},
    ),
    regularizers.ActivityRegularization: lambda m: (
      layers.ActivityRegularization,
      {'l1': m.l1, 'l2': m.l2},
    ),
  }
  for module_type, describe in weightless.items():
    if issubclass(kind, module_type):
      keras_type, arguments, *supported = describe(module)
      if supported and supported[0] is not True:
        _no_counterpart(layer, supported[0])
      return keras_type(**arguments, name=name), [], None
  return _no_counterpart(layer, f'a {kind.__name__}'), [], None


def _no_counterpart(layer: _Layer, what: str) -> Any:
  raise ValueError(
    f"to_keras_model: layer '{layer.name}' is {what}, which has no Keras"
    ' counterpart; host the module in Keras as one layer with'
    ' fd.to_keras(module, variables) instead.'
  )


#: What Keras's layer does with a mask, for each flax_dense layer that
#: passes one on or reads it (the others, Keras's too, end it): the
#: ``mask_flow`` an imported model gives them.
_KERAS_MASK_FLOW = {
  'Masking': 'compute',
  'Dense': 'propagate',
  'Activation': 'propagate',
  'ActivityRegularization': 'propagate',
  'Dropout': 'propagate',
  'SpatialDropout1D': 'propagate',
  'SpatialDropout2D': 'propagate',
  'SpatialDropout3D': 'propagate',
  'GlobalAveragePooling1D': 'consume',
}


def _check_mask_flows(steps: Sequence[_Layer]) -> None:
  """Raises unless the module passes masks along as Keras will."""
  live = False
  for step in steps:
    kind = (_frozen_base(type(step.module)) or type(step.module)).__name__
    keras_flow = _KERAS_MASK_FLOW.get(kind, 'drop')
    flow = step.mask_flow or 'drop'
    if kind == 'GlobalMaxPooling1D' and live and flow == 'consume':
      raise ValueError(
        f"to_keras_model: layer '{step.name}' is a GlobalMaxPooling1D that"
        " skips masked steps; Keras's GlobalMaxPooling1D ignores the mask,"
        ' so its outputs would differ. Host the module with fd.to_keras.'
      )
    if (live or keras_flow == 'compute') and flow != keras_flow:
      raise ValueError(
        f"to_keras_model: layer '{step.name}' ({kind}) has mask_flow"
        f" {flow!r}, but Keras's layer does {keras_flow!r} with the mask, so"
        " the outputs would differ; use Keras's mask flows (as from_keras"
        ' does) or host the module with fd.to_keras.'
      )
    live = flow in ('compute', 'propagate') and (live or flow == 'compute')


def _steps(module: nn.Module, variables: Mapping[str, Any]) -> list[_Layer]:
  """The layers of ``module`` (a sequence or one layer) with their weights."""
  from flax_dense._src.interop.keras import KerasSequential

  params = variables.get('params', {})
  constants = variables.get(CONSTANTS, {})
  if not isinstance(module, KerasSequential):
    name = module.name or _snake_case(type(module).__name__)
    return [_Layer(name, module, None, {**params, **constants}, not constants)]
  steps = []
  for index, layer in enumerate(module.layers):
    name = module.names[index] if module.names else f'layers_{index}'
    flow = module.mask_flow[index] if module.mask_flow else None
    weights = {**params.get(name, {}), **constants.get(name, {})}
    steps.append(_Layer(name, layer, flow, weights, name not in constants))
  return steps


def _snake_case(name: str) -> str:
  return ''.join(
    f'_{char.lower()}' if char.isupper() and index else char.lower()
    for index, char in enumerate(name)
  )


def to_keras_model(
  module: nn.Module | nnx.Module,
  variables: Mapping[str, Any] | None = None,
  *,
  input_shape: Sequence[int | None] | None = None,
  name: str | None = None,
) -> Any:
  """The native Keras 3 model of a flax_dense model, weights set.

  The reverse of :func:`~flax_dense.from_keras`: each layer of a
  :class:`~flax_dense.KerasSequential` (or one flax_dense layer) becomes
  its Keras layer with the same weights and name, so
  ``keras_model.predict(x)`` equals ``module.apply(variables, x)``:
  ``flax.linen.Dense`` as ``Dense``, :class:`~flax_dense.PerPositionDense`
  as ``EinsumDense('abc,bcd->abd')``, :class:`~flax_dense.ConstProduct` as
  the small Keras layer ``flax_dense>ConstProduct`` shipped with the
  package, and ``Activation``, ``ActivityRegularization``, ``Dropout``,
  ``SpatialDropout1D/2D/3D``, ``Flatten``, ``Reshape``, ``Permute``,
  ``RepeatVector``, ``Masking``, ``GlobalAveragePooling1D`` and
  ``GlobalMaxPooling1D`` (without a mask) as Keras's. Masks flow as
  Keras's layers pass them; frozen layers (``constants``) are
  ``trainable=False``. Layers without a Keras counterpart (``Lambda``,
  ``AttentionDecoder``, ``LocallyConnected1D``, ``MultiIODense``, your own
  modules) raise: host those with :func:`to_keras`.

  Example usage::

    >>> import os; _ = os.environ.setdefault('KERAS_BACKEND', 'jax')
    >>> import keras, jax, jax.numpy as jnp, numpy as np
    >>> import flax_dense as fd
    >>> module = fd.PerPositionDense(3, activation='relu')
    >>> variables = module.init(jax.random.key(0), jnp.ones((1, 5, 4)))
    >>> model = fd.to_keras_model(module, variables, input_shape=(5, 4))
    >>> [type(layer).__name__ for layer in model.layers]
    ['EinsumDense']
    >>> x = np.ones((2, 5, 4), np.float32)
    >>> bool(np.allclose(model.predict(x, verbose=0),
    ...                  module.apply(variables, x), atol=1e-6))
    True

  Args:
    module: a :class:`~flax_dense.KerasSequential` or a single layer
      (linen), or their NNX twins (converted by ``fd.nnx.to_linen``).
    variables: the linen module's variables; ``None`` for NNX.
    input_shape: the shape of one example, to start the model with
      ``keras.Input(input_shape)`` (so it is built and ``summary()`` shows
      shapes); default: none, the layers are built from their weights.
    name: the Keras model's name.

  Returns:
    A ``keras.Sequential``.

  Raises:
    ImportError: without Keras 3.
    RuntimeError: if Keras runs on another backend than JAX.
    ValueError: for a layer with no Keras counterpart (naming it and what
      to do), an activation given as a function, mask flows other than
      Keras's, or variables missing or given for an NNX module.
  """
  keras = import_keras('to_keras_model')
  if isinstance(module, nnx.Module):
    if variables is not None:
      raise ValueError(
        'to_keras_model: an NNX module holds its own weights; call'
        ' to_keras_model(model) without variables.'
      )
    from flax_dense._src.nnx.convert import to_linen

    module, variables = to_linen(module)
  if not isinstance(module, nn.Module):
    raise TypeError(
      'to_keras_model: module must be a flax_dense layer or'
      f' KerasSequential (linen or NNX), got {type(module).__name__}.'
    )
  if not isinstance(variables, Mapping):
    raise ValueError(
      'to_keras_model: a linen module needs its variables, the mapping'
      f' module.init returns; got {type(variables).__name__}.'
    )
  steps = _steps(module, nn.meta.unbox(dict(variables)))
  _check_mask_flows(steps)
  made = [_keras_layer(keras, step) for step in steps]
  layers = [layer for layer, _, _ in made]
  if input_shape is not None:
    layers = [keras.Input(tuple(input_shape)), *layers]
  model = keras.Sequential(layers, name=name)
  for layer, weights, build_shape in made:
    if not weights:
      continue
    if not layer.built:
      layer.build(build_shape)
    layer.set_weights([np.asarray(w) for w in weights])
  return model
