"""The layer registry: one :class:`~.spec.LayerSpec` per layer.

NNX conversion, Keras import and export, the imported models' mask flows
and the tests all read the layers from here. A layer is registered by the
``SPECS`` of its family module, listed in :data:`FAMILIES`; every spec is
checked when the package is imported, so a spec missing a part, or a layer
or Keras class registered twice, fails at once.
"""

from collections.abc import Iterable
from typing import Any

from flax_dense._src.ops.masking import MASK_FLOWS
from flax_dense._src.registry import (
  core,
  custom,
  dense,
  dropout,
  locally_connected,
  masking,
  product,
  recurrent,
  regularizers,
  wrappers,
)
from flax_dense._src.registry.spec import KerasImport, LayerSpec

#: The family modules, each with its ``SPECS``.
FAMILIES = (
  core,
  custom,
  dense,
  dropout,
  locally_connected,
  masking,
  product,
  recurrent,
  regularizers,
  wrappers,
)


def check_specs(specs: Iterable[LayerSpec]) -> tuple[LayerSpec, ...]:
  """``specs`` as a tuple, each checked to be whole and registered once.

  Raises:
    TypeError: for an entry that is not a ``LayerSpec``, or a spec whose
      linen or NNX class is not a class.
    ValueError: for a spec without a mask flow, without Keras import or a
      reason for none, without Keras export or a reason for none; or a
      linen class, NNX class or Keras class name registered twice.
  """
  specs = tuple(specs)
  seen: dict[Any, str] = {}
  for entry in specs:
    if not isinstance(entry, LayerSpec):
      raise TypeError(
        f'layer registry: expected LayerSpec entries, got {entry!r}.'
      )
    name = getattr(entry.linen, '__name__', repr(entry.linen))
    for part in ('linen', 'nnx'):
      if not isinstance(getattr(entry, part), type):
        raise TypeError(
          f'layer registry: the spec of {name} needs its {part} class, got'
          f' {getattr(entry, part)!r}.'
        )
    if not callable(entry.mask_flow) and entry.mask_flow not in MASK_FLOWS:
      raise ValueError(
        f'layer registry: the spec of {name} needs a mask flow, one of'
        f' {MASK_FLOWS} or a function of the module, got'
        f' {entry.mask_flow!r}.'
      )
    if not entry.keras_import and not entry.not_imported:
      raise ValueError(
        f'layer registry: the spec of {name} imports from no Keras class;'
        ' give keras_import, or not_imported saying why.'
      )
    if entry.keras_export is None and not entry.not_exported:
      raise ValueError(
        f'layer registry: the spec of {name} has no keras_export; give one,'
        ' or not_exported saying why.'
      )
    keys = [
      ('linen class', entry.linen),
      ('NNX class', entry.nnx),
      *(('Keras class', class_name) for class_name in entry.keras_import),
    ]
    for kind, key in keys:
      if key in seen:
        shown = getattr(key, '__name__', key)
        raise ValueError(
          f'layer registry: {kind} {shown} is registered twice, by the'
          f' specs of {seen[key]} and {name}.'
        )
      seen[key] = name
  return specs


#: Every layer's spec.
SPECS: tuple[LayerSpec, ...] = check_specs(
  entry for family in FAMILIES for entry in family.SPECS
)

_BY_LINEN = {entry.linen: entry for entry in SPECS}
_BY_NNX = {entry.nnx: entry for entry in SPECS}

#: The Keras classes the built-in specs import, by class name.
KERAS_IMPORTS: dict[str, KerasImport] = {
  class_name: keras_import
  for entry in SPECS
  for class_name, keras_import in entry.keras_import.items()
}

#: The Keras classes of ``fd.register_keras_layer``, by class name.
REGISTERED: dict[str, KerasImport] = {}


def _nearest(module_type: type, table: dict[type, LayerSpec]) -> Any:
  for base in module_type.__mro__:
    if base in table:
      return table[base]
  return None


def linen_spec(module_type: type) -> LayerSpec | None:
  """The spec of a linen layer class (or of its nearest registered base)."""
  return _nearest(module_type, _BY_LINEN)


def nnx_spec(module_type: type) -> LayerSpec | None:
  """The spec of an NNX layer class (or of its nearest registered base)."""
  return _nearest(module_type, _BY_NNX)


def keras_import(class_name: str) -> KerasImport | None:
  """How the Keras class ``class_name`` is imported: a user's registered
  converter first, then the built-in specs."""
  return REGISTERED.get(class_name.rpartition('>')[2]) or KERAS_IMPORTS.get(
    class_name
  )
