"""flax_dense modules and their variables as a hosting Keras layer keeps them.

A hosted module is saved in a ``.keras`` file as JSON: its class (by import
path) and the dataclass fields that differ from their defaults, encoded by
:func:`module_to_config`; its variables are Keras weights
(:func:`variable_specs`). Nothing here imports Keras.
"""

import dataclasses
import enum
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from flax_dense._src.callables import factory_call, resolve
from flax_dense._src.variables import CONSTANTS, LOSSES, frozen, frozen_base

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
