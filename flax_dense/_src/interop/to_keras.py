"""flax_dense modules inside Keras 3, and models handed back to Keras.

Two ways out of JAX's own process:

- :func:`to_keras` hosts a Flax module (a flax_dense layer, an imported
  model, or a user's linen model built from them) as one Keras layer whose
  weights are Keras variables: Keras trains it, saves it and serves it.
- :func:`~flax_dense._src.interop.to_keras_model.to_keras_model` rebuilds
  the native Keras model of a module that :func:`~flax_dense.from_keras`
  makes, one Keras layer per flax_dense layer.

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
    found = resolve(f'{module}:{qualname}')
  except (ImportError, AttributeError):
    return None
  return f'{module}:{qualname}' if found is value else None


def resolve(path: str) -> Any:
  """The class or function at ``'module:qualname'``."""
  module, qualname = path.split(':')
  value = importlib.import_module(module)
  for part in qualname.split('.'):
    value = getattr(value, part)
  return value


def factory_call(function: Callable) -> dict[str, Any] | None:
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
    factory = resolve(f'{function.__module__}:{factory_name}')
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
    call = factory_call(value)
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
    return resolve(value['enum'])[value['name']]
  if 'dtype' in value:
    return jnp.dtype(value['dtype'])
  if 'function' in value:
    _check_trusted(value['function'], trusted)
    return resolve(value['function'])
  if 'factory' in value:
    _check_trusted(value['factory'], trusted)
    arguments = {k: _decode(v, trusted) for k, v in value['arguments'].items()}
    return resolve(value['factory'])(**arguments)
  raise ValueError(f'to_keras: unreadable saved value {value!r}.')


def frozen_base(module_type: type) -> type | None:
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
  frozen = frozen_base(module_type)
  if frozen is not None:
    module_type = frozen
  path = _import_path(module_type)
  if path is None:
    raise ValueError(
      f'to_keras: {where} is a {module_type.__module__}.'
      f'{module_type.__qualname__}, a class that cannot be imported by name'
      ' (defined inside a function, or replaced since), so a .keras file'
      ' could not rebuild it; define the class at the top level of an'
      ' importable module to save the model, or save its weights alone'
      ' (model.save_weights).'
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
  module_type = resolve(config['class'])
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
    flat: dict[tuple, Any] = traverse_util.flatten_dict(
      nn.meta.unbox(dict(tree))
    )
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


def call_arguments(module: nn.Module, training: bool) -> dict[str, Any]:
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

  Any linen module can be hosted, trained and called. A ``.keras`` file
  saves it by its class and fields (see :func:`module_to_config`), so
  ``model.save('x.keras')`` needs its class importable by name (defined at
  the top level of a module) and fields that are JSON data, modules,
  dtypes or named functions; saving fails otherwise, naming the class or
  field and what to do.
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
      linen one, or a collection other than ``params`` and ``constants``.
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
  del keras
  from flax_dense._src.interop import keras_layers

  layer = keras_layers.FlaxModule(
    module=module,
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
