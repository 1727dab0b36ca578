"""Functions named by import path, for configs that must be written as JSON."""

import importlib
import inspect
from collections.abc import Callable
from typing import Any


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


def call_keywords(layer: Callable, **values: Any) -> dict[str, Any]:
  """The ``values`` (those not ``None``) that ``layer``'s call takes by
  name: what a container or wrapper hands on, such as ``deterministic`` and
  ``rngs`` to the dropout layers."""
  given = {name: value for name, value in values.items() if value is not None}
  if not given:  # the common call: no signature to read
    return {}
  parameters = inspect.signature(layer).parameters
  return {name: value for name, value in given.items() if name in parameters}
