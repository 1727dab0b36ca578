"""Linen layers to their NNX twins and back, with the same weights.

:func:`from_linen` builds the NNX twin of a linen layer and its variables,
:func:`to_linen` the reverse. Both front ends run the same checked ops, so
the two compute the same outputs. :data:`LINEN_TO_NNX` is the one mapping,
one entry per layer; the sizes an NNX constructor needs and a linen module
infers from its inputs are read off the weights:

======================  =============================  ========================
linen                   NNX                            sizes read off
======================  =============================  ========================
``PerPositionDense``    ``fd.nnx.PerPositionDense``    ``kernel (P, D, K)``
``ConstProduct``        ``fd.nnx.ConstProduct``        ``kernel (N,)``
``MultiIODense``        ``fd.nnx.MultiIODense``        ``kernel (D, K)``
``AttentionDecoder``    ``fd.nnx.AttentionDecoder``    ``U_a (D, units)``
``LocallyConnected1D``  ``fd.nnx.LocallyConnected1D``  ``kernel (O, k * D, F)``
``flax.linen.Dense``    ``flax.nnx.Linear``            ``kernel (D, K)``
``KerasSequential``     ``fd.nnx.KerasSequential``     its layers' weights
``KerasFunctional``     ``fd.nnx.KerasFunctional``     its layers' weights
every weightless layer  its ``fd.nnx`` twin            none
======================  =============================  ========================

Variables map by kind: ``params`` become ``nnx.Param``, the ``constants``
collection :class:`~flax_dense.nnx.Constant` (a frozen ``ConstProduct``, or
the params of a layer :func:`flax_dense.from_keras` froze), and back. The
layers' fields map by name, with two exceptions: initializers are not
carried (the weights are; an NNX module does not keep its initializers),
and dropout's ``deterministic``, a mode on the NNX side, maps linen's
``None`` (chosen per call) and ``False`` to NNX's ``False`` (training,
switched by ``model.eval()``), and back to ``None``. In a
``KerasSequential``, whose call decides for the dropouts with ``None``
(inference by default), those start in eval mode on the NNX side, and all
its dropouts come back with ``None``. Sharding boxes
(``nn.Partitioned``) are unboxed: give the NNX model its own sharding.
``LocallyConnected1D``'s ``input_length``, which its weights fix only up to
the stride, is the shortest input of its O windows; every input they fit
gives the same outputs.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src import registry
from flax_dense._src.models import linen as linen_models
from flax_dense._src.models import nnx as nnx_models
from flax_dense._src.models.graph import check_sequential
from flax_dense._src.nnx.dropout import _stream
from flax_dense._src.registry.spec import PARAMS, LayerSpec, Weights
from flax_dense._src.variables import (
  CONSTANTS,
  LOSSES,
  Constant,
  frozen,
  unfrozen,
)

# ---------------------------------------------------------------------------
# The container of imported Keras models.


# ---------------------------------------------------------------------------
# The mapping.

#: Every linen layer :func:`from_linen` converts, and its NNX twin, as the
#: layer registry lists them (subclasses convert too). ``flax.linen.Dense``
#: is here for the models :func:`flax_dense.from_keras` imports;
#: ``KerasSequential`` and ``KerasFunctional`` convert layer by layer.
LINEN_TO_NNX: Mapping[type[nn.Module], type[nnx.Module]] = MappingProxyType(
  {entry.linen: entry.nnx for entry in registry.SPECS}
)


def _known(
  caller: str,
  kind: str,
  module: Any,
  lookup: Callable[[type], LayerSpec | None],
  types: Collection[type],
) -> LayerSpec:
  """The spec of ``module``'s layer (its nearest registered class)."""
  found = lookup(type(module))
  if found is not None:
    return found
  known = ', '.join(sorted(t.__name__ for t in types))
  raise TypeError(
    f'{caller}: {type(module).__name__} is not a {kind} it converts; expected'
    f' one of {known}, or KerasSequential.'
  )


def _describe(variables: Any) -> Any:
  """``variables`` with each array replaced by its shape, for messages."""
  return jax.tree.map(jnp.shape, variables)


# ---------------------------------------------------------------------------
# linen to NNX.


def _collections(module: nn.Module, variables: Any) -> dict[str, dict]:
  """The weight collections of ``variables``, unboxed, checked."""
  layer = type(module).__name__
  if not isinstance(variables, Mapping):
    raise TypeError(
      f'from_linen: variables of {layer} must be the mapping of collections'
      f" that {layer}.init returns, e.g. {{'params': ...}}, got"
      f' {type(variables).__name__}.'
    )
  variables = nn.meta.unbox(dict(variables))
  # Sown losses are outputs of a call, not weights.
  collections = {
    name: dict(tree)
    for name, tree in variables.items()
    if name != LOSSES and tree
  }
  unknown = sorted(set(collections) - {PARAMS, CONSTANTS})
  if unknown:
    raise ValueError(
      f'from_linen: {layer} keeps its weights in {PARAMS!r} or'
      f' {CONSTANTS!r}, but variables also hold {unknown}, which have no NNX'
      ' counterpart here.'
    )
  return collections


def _layer_weights(
  module: nn.Module, conversion: LayerSpec, variables: Any
) -> tuple[Weights, str]:
  """The weights of one layer, and their collection, checked by name."""
  collections = _collections(module, variables)
  names = _weight_names(module, conversion)
  collection = conversion.collection(module)
  # A layer whose params were moved to constants (fd.from_keras freezes so).
  if collection == PARAMS and set(collections) == {CONSTANTS}:
    collection = CONSTANTS
  expected = {collection: names} if names else {}
  given = {name: tuple(tree) for name, tree in collections.items()}
  if set(given) != set(expected) or set(given.get(collection, ())) != set(
    names
  ):
    layer = type(module).__name__
    raise ValueError(
      f'from_linen: {layer} needs variables holding'
      f' {_names_text(expected)}, got {_describe(collections)}.'
    )
  tree = collections.get(collection, {})
  # A layer of layers (Bidirectional) has each one's weights as a tree.
  return {
    name: jax.tree.map(jnp.asarray, tree[name]) for name in names
  }, collection


def _weight_names(module: nn.Module, conversion: LayerSpec) -> tuple[str, ...]:
  """The names of a layer's weights; a layer of layers holds those of its
  layers that have weights, each under its name."""
  if conversion.inner is None:
    return conversion.weights(module)
  return tuple(
    name
    for name, inner in conversion.inner(module).items()
    if (found := registry.linen_spec(type(inner))) is None
    or _weight_names(inner, found)
  )


def _names_text(expected: dict[str, tuple[str, ...]]) -> str:
  if not expected:
    return 'no weights (it has none)'
  return ' and '.join(
    f'{collection!r}: {", ".join(map(repr, names))}'
    for collection, names in expected.items()
  )


def _check_rngs(rngs: Any) -> None:
  if rngs is not None and not isinstance(rngs, nnx.Rngs):
    raise TypeError(
      'from_linen: rngs must be an nnx.Rngs (the streams of the dropout'
      f' layers, e.g. nnx.Rngs(dropout=0)) or None, got {rngs!r}.'
    )


def _layer_from_linen(
  module: nn.Module, variables: Any, rngs: nnx.Rngs | None
) -> nnx.Module:
  """The NNX twin of one layer of :data:`LINEN_TO_NNX`."""
  conversion = _known(
    'from_linen', 'linen layer', module, registry.linen_spec, LINEN_TO_NNX
  )
  weights, collection = _layer_weights(module, conversion, variables)
  arguments = {field: getattr(module, field) for field in conversion.fields}
  if conversion.inner is not None:
    # A layer of layers (Bidirectional, TimeDistributed): each inner layer
    # converted with its own weights.
    twins = {
      name: from_linen(
        inner,
        {collection: weights[name]} if name in weights else {},
        rngs=rngs,
      )
      for name, inner in conversion.inner(module).items()
    }
    arguments.update(conversion.nnx_arguments(module, twins))
    return conversion.nnx(**arguments)
  arguments.update(conversion.nnx_arguments(module, weights))
  if conversion.takes_rngs:
    arguments['rngs'] = rngs
  if not weights:
    return conversion.nnx(**arguments)
  # Built abstractly, then given the weights: no values are drawn.
  given_rngs = arguments.pop('rngs', None)
  layer = nnx.eval_shape(lambda: conversion.nnx(**arguments, rngs=nnx.Rngs(0)))
  if conversion.takes_rngs:  # a layer of weights and dropout: its stream
    layer.rngs = _stream(given_rngs, layer.rng_collection, type(layer).__name__)
  variable_type = Constant if collection == CONSTANTS else nnx.Param
  for name, value in weights.items():
    built = getattr(layer, name).shape
    if value.shape != built:
      raise ValueError(
        f'from_linen: {type(module).__name__} with the fields'
        f' {_fields_text(module, conversion)} and the other weights needs'
        f' {collection} {name!r} of shape {built}, got shape {value.shape}.'
      )
    setattr(layer, name, variable_type(value))
  return layer


def _fields_text(module: nn.Module, conversion: LayerSpec) -> str:
  return ', '.join(
    f'{field}={getattr(module, field)!r}' for field in conversion.fields
  )


def _container_layers(module: Any) -> tuple[list[str], Sequence[Any]]:
  names = module.names or [f'layers_{i}' for i in range(len(module.layers))]
  return list(names), module.layers


def _sequential_from_linen(
  module: linen_models.KerasSequential | linen_models.KerasFunctional,
  variables: Any,
  rngs: nnx.Rngs | None,
) -> nnx_models.KerasSequential | nnx_models.KerasFunctional:
  """The NNX twin of a linen ``KerasSequential`` or ``KerasFunctional``."""
  collections = _collections(module, variables)
  container = type(module).__name__
  if isinstance(module, linen_models.KerasSequential):
    check_sequential(
      'from_linen', module.layers, module.names, module.mask_flow
    )
  names, modules = _container_layers(module)
  layers = []
  for name, layer in zip(names, modules, strict=True):
    own = {
      collection: tree[name]
      for collection, tree in collections.items()
      if name in tree
    }
    twin: Any = from_linen(layer, own, rngs=rngs)
    if getattr(layer, 'deterministic', False) is None:
      # The container decides: inference unless called otherwise (a
      # Bidirectional's mode is its layers').
      twin.eval()
    layers.append(twin)
  unused = {
    collection: sorted(set(tree) - set(names))
    for collection, tree in collections.items()
    if set(tree) - set(names)
  }
  if unused:
    raise ValueError(
      f'from_linen: variables hold weights of no layer of the'
      f' {container}: {unused}; its layers are named {list(names)}.'
    )
  if isinstance(module, linen_models.KerasFunctional):
    return nnx_models.KerasFunctional(
      layers,
      names=module.names,
      mask_flow=module.mask_flow,
      nodes=module.nodes,
      inputs=module.inputs,
      outputs=module.outputs,
      single_output=module.single_output,
    )
  return nnx_models.KerasSequential(
    layers, names=module.names, mask_flow=module.mask_flow
  )


def from_linen(
  module: nn.Module, variables: Any, *, rngs: nnx.Rngs | None = None
) -> nnx.Module:
  """The NNX twin of a linen layer, with its weights: the same outputs.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.PerPositionDense(features=3, activation='tanh')
    >>> x = jnp.ones((2, 5, 4))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> twin = fd.nnx.from_linen(layer, variables)
    >>> twin.positions, twin.in_features, twin.features
    (5, 4, 3)
    >>> bool((twin(x) == layer.apply(variables, x)).all())
    True

  Args:
    module: a linen layer of :data:`LINEN_TO_NNX` (subclasses included), or
      a :class:`flax_dense.KerasSequential` of them.
    variables: its variables, ``{'params': ..., 'constants': ...}`` as
      ``init`` returns them; a ``'losses'`` collection is ignored.
    rngs: the rng streams of the dropout layers (each forks its
      ``rng_collection`` stream, as the NNX constructors do); ``None`` to
      pass ``rngs=`` when calling them in training.

  Returns:
    The NNX module: ``params`` as ``nnx.Param``, ``constants`` as
    ``fd.nnx.Constant``.

  Raises:
    TypeError: for a module type that is not converted, variables that are
      not a mapping, or ``rngs`` that is not an ``nnx.Rngs``.
    ValueError: for variables that do not fit the layer: other collections
      or weight names, a weight of the wrong rank, or one whose shape
      disagrees with the layer's fields or other weights.
  """
  _check_rngs(rngs)
  if isinstance(
    module, linen_models.KerasSequential | linen_models.KerasFunctional
  ):
    return _sequential_from_linen(module, variables, rngs)
  return _layer_from_linen(module, variables, rngs)


# ---------------------------------------------------------------------------
# NNX to linen.


def linen_form(caller: str, module: Any, variables: Any) -> tuple[Any, Any]:
  """``(module, variables)`` in linen form, for functions that take either:
  an NNX module is converted (it holds its own weights, so ``variables``
  must be ``None``); anything else is returned as given.

  Raises:
    ValueError: for variables given with an NNX module.
  """
  if not isinstance(module, nnx.Module):
    return module, variables
  if variables is not None:
    raise ValueError(
      f'{caller}: an NNX module holds its own weights; call'
      f' {caller}(model) without variables.'
    )
  return to_linen(module)


def _layer_to_linen(layer: nnx.Module) -> tuple[nn.Module, dict[str, Any]]:
  """The linen layer and variables of one NNX twin."""
  conversion = _known(
    'to_linen', 'NNX layer', layer, registry.nnx_spec, LINEN_TO_NNX.values()
  )
  linen_type = conversion.linen
  arguments = {field: getattr(layer, field) for field in conversion.fields}
  variables: dict[str, dict[str, jax.Array]] = {}
  if conversion.inner is not None:
    # A layer of layers (Bidirectional, TimeDistributed): each inner layer
    # converted back; its weights are kept under the inner layer's name.
    inner = {}
    for name in conversion.weights(layer):
      inner_module, inner_variables = to_linen(getattr(layer, name))
      inner[name] = unfrozen(inner_module)
      for collection, tree in inner_variables.items():
        variables.setdefault(collection, {})[name] = tree
    arguments.update(conversion.linen_arguments(layer, inner))
  else:
    arguments.update(conversion.linen_arguments(layer))
  module = linen_type(**arguments)
  for name in (
    () if conversion.inner is not None else conversion.weights(module)
  ):
    variable = getattr(layer, name)
    if isinstance(variable, Constant):
      collection = CONSTANTS
    elif isinstance(variable, nnx.Param):
      collection = PARAMS
    else:
      raise TypeError(
        f'to_linen: {type(layer).__name__}.{name} is a'
        f' {type(variable).__name__}; expected an nnx.Param or a'
        ' fd.nnx.Constant.'
      )
    variables.setdefault(collection, {})[name] = variable[...]
  expected = conversion.collection(module)
  if len(variables) > 1:
    raise ValueError(
      f'to_linen: {type(layer).__name__} mixes nnx.Param and fd.nnx.Constant'
      f' weights ({_describe(variables)}), which no linen layer does.'
    )
  if variables and set(variables) != {expected}:
    if expected != PARAMS:
      raise ValueError(
        f'to_linen: {type(layer).__name__} keeps its weights in'
        f' {expected!r} when configured so, got {_describe(variables)}.'
      )
    module = frozen(module)
  return module, variables


def _sequential_to_linen(
  model: nnx_models.KerasSequential | nnx_models.KerasFunctional,
) -> tuple[nn.Module, dict[str, Any]]:
  """The linen ``KerasSequential`` or ``KerasFunctional`` of an NNX one."""
  names, layers = _container_layers(model)
  modules, variables = [], {}
  for name, layer in zip(names, layers, strict=True):
    module, layer_variables = to_linen(layer)
    if hasattr(layer, 'deterministic'):
      # The container decides, by its deterministic argument.
      module = module.clone(deterministic=None)
    modules.append(module)
    for collection, tree in layer_variables.items():
      variables.setdefault(collection, {})[name] = tree
  if isinstance(model, nnx_models.KerasFunctional):
    module = linen_models.KerasFunctional(
      tuple(modules),
      model.names,
      model.mask_flow,
      model.nodes,
      model.inputs,
      model.outputs,
      model.single_output,
    )
  else:
    module = linen_models.KerasSequential(
      tuple(modules), model.names, model.mask_flow
    )
  return module, variables


def to_linen(layer: nnx.Module) -> tuple[nn.Module, dict[str, Any]]:
  """The linen layer of an NNX twin, and its variables: the same outputs.

  The reverse of :func:`from_linen`: ``to_linen(from_linen(module,
  variables))`` gives back the module's configuration (initializers
  aside) and the same variables.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> twin = fd.nnx.ConstProduct(3, weights=[0.5, 1.0, 2.0])
    >>> module, variables = fd.nnx.to_linen(twin)
    >>> jax.tree.map(jnp.shape, variables)
    {'constants': {'kernel': (3,)}}
    >>> module.apply(variables, jnp.full((1, 3), 2.0))
    Array([[8.]], dtype=float32)

  Args:
    layer: an NNX layer of :data:`LINEN_TO_NNX` (subclasses included), or
      a :class:`KerasSequential` of them.

  Returns:
    ``(module, variables)``: ``nnx.Param`` weights in ``'params'``,
    ``fd.nnx.Constant`` ones in ``'constants'`` (a layer trained in linen
    whose weights are constants comes wrapped, as ``fd.from_keras`` freezes
    layers).

  Raises:
    TypeError: for a module type that is not converted, or a weight that is
      neither an ``nnx.Param`` nor a ``fd.nnx.Constant``.
    ValueError: for a layer that mixes the two, or an option its linen
      layer lacks.
  """
  if isinstance(layer, nnx_models.KerasSequential | nnx_models.KerasFunctional):
    return _sequential_to_linen(layer)
  return _layer_to_linen(layer)
