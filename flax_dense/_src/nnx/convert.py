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

import dataclasses
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src import checks
from flax_dense._src.interop import keras as interop
from flax_dense._src.interop import keras_graph
from flax_dense._src.linen import attention as linen_attention
from flax_dense._src.linen import core as linen_core
from flax_dense._src.linen import dense as linen_dense
from flax_dense._src.linen import dropout as linen_dropout
from flax_dense._src.linen import locally_connected as linen_locally_connected
from flax_dense._src.linen import masking as linen_masking
from flax_dense._src.linen import multi_io as linen_multi_io
from flax_dense._src.linen import pooling as linen_pooling
from flax_dense._src.linen import product as linen_product
from flax_dense._src.linen import regularizers as linen_regularizers
from flax_dense._src.nnx import attention as nnx_attention
from flax_dense._src.nnx import core as nnx_core
from flax_dense._src.nnx import dense as nnx_dense
from flax_dense._src.nnx import dropout as nnx_dropout
from flax_dense._src.nnx import locally_connected as nnx_locally_connected
from flax_dense._src.nnx import masking as nnx_masking
from flax_dense._src.nnx import multi_io as nnx_multi_io
from flax_dense._src.nnx import pooling as nnx_pooling
from flax_dense._src.nnx import product as nnx_product
from flax_dense._src.nnx import regularizers as nnx_regularizers
from flax_dense._src.ops.attention import attention_decoder_shapes
from flax_dense._src.variables import CONSTANTS, LOSSES, Constant

Weights = dict[str, jax.Array]

#: The collection of trained weights in linen.
PARAMS = 'params'


# ---------------------------------------------------------------------------
# The container of imported Keras models.


class KerasSequential(nnx.Module):
  """Applies NNX layers one after another, passing a Keras mask along.

  The NNX twin of :class:`flax_dense.KerasSequential`, which
  ``fd.from_keras(model, api='nnx')`` returns: as in Keras, a mask made by
  a ``Masking`` layer travels with the activations through the layers that
  propagate it until a layer consumes it (``GlobalAveragePooling1D``
  averages over the kept steps only) or drops it. Dropout follows
  ``model.train()`` / ``model.eval()``.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> model = fd.nnx.KerasSequential(
    ...     [fd.nnx.Masking(0.0), nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
    ...      fd.nnx.GlobalAveragePooling1D()],
    ...     names=['masking', 'dense', 'pooling'],
    ...     mask_flow=['compute', 'propagate', 'consume'])
    >>> x = jnp.ones((2, 5, 3)).at[:, 3:].set(0.0)  # 2 padded steps
    >>> y = model(x)  # (2, 4), the mean of 3 steps
    >>> bool(jnp.allclose(y, model.layers[1](x[:, :3]).mean(axis=1)))
    True

  Args:
    layers: the NNX modules, applied in order to one input.
    names: the name of each layer (Keras's layer names after
      ``from_keras``), or ``None``.
    mask_flow: what each layer does with the mask, one of ``'compute'`` (a
      ``Masking`` layer: makes the mask from its inputs), ``'propagate'``,
      ``'consume'`` (gets it as ``mask=``) or ``'drop'``; default: no mask.

  Raises:
    ValueError: if ``names`` or ``mask_flow`` do not have one entry per
      layer, or ``mask_flow`` holds an unknown value or ``'compute'`` for a
      layer other than ``Masking``.
  """

  def __init__(
    self,
    layers: Sequence[nnx.Module],
    *,
    names: Sequence[str] | None = None,
    mask_flow: Sequence[str] | None = None,
  ):
    interop.check_sequential(
      'KerasSequential', layers, names, mask_flow, nnx_masking.Masking
    )
    layers = list(layers)
    self.layers = nnx.List(layers)
    self.names = None if names is None else tuple(names)
    self.mask_flow = None if mask_flow is None else tuple(mask_flow)

  def __call__(
    self,
    inputs: Any,
    *,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | jax.Array | None = None,
  ) -> Any:
    """Applies the layers.

    Args:
      inputs: the first layer's inputs.
      deterministic: if given, overrides the mode of the dropout layers
        (those with a ``deterministic`` attribute) for this call.
      rngs: if given, the rng streams (or a key) of the dropout layers for
        this call, instead of their own.

    Returns:
      The last layer's outputs.
    """
    overrides = {
      name: value
      for name, value in (('deterministic', deterministic), ('rngs', rngs))
      if value is not None
    }

    def call(index, layer, inputs, kwargs):
      del index
      if hasattr(layer, 'deterministic'):
        kwargs.update(overrides)
      return layer(inputs, **kwargs)

    return interop.apply_sequential(self.layers, self.mask_flow, inputs, call)


class KerasFunctional(nnx.Module):
  """Runs a graph of NNX layers on several inputs, as a Keras functional model.

  The NNX twin of :class:`flax_dense.KerasFunctional`, which
  ``fd.from_keras(model, api='nnx')`` returns for a functional Keras model
  that is not a single chain: the same graph and mask flow, run by the same
  code. Dropout follows ``model.train()`` / ``model.eval()``.

  Example usage::

    >>> import flax_dense as fd, jax.numpy as jnp
    >>> from flax import nnx
    >>> from flax_dense._src.interop.keras_graph import Node
    >>> model = fd.nnx.KerasFunctional(  # y = dense(a) + dense(b)
    ...     [nnx.Linear(3, 4, rngs=nnx.Rngs(0))], names=['dense'],
    ...     mask_flow=['propagate'],
    ...     nodes=[Node((0,), steps=(0,)), Node((1,), steps=(0,)),
    ...            Node((2, 3), merge='Add')],
    ...     inputs=2, outputs=[4])
    >>> a, b = jnp.ones((2, 3)), jnp.zeros((2, 3))
    >>> bool(jnp.allclose(model(a, b), model.layers[0](a) + model.layers[0](b)))
    True

  Args:
    layers: the NNX modules, each called at one node or more.
    names: the name of each layer.
    mask_flow: what each layer does with the mask.
    nodes: the calls, each taking earlier tensors.
    inputs: the number of inputs.
    outputs: the numbers of the output tensors.
    single_output: return the one output itself rather than a list.

  Raises:
    ValueError: if the parts of the graph do not fit together.
  """

  def __init__(
    self,
    layers: Sequence[nnx.Module],
    *,
    names: Sequence[str],
    mask_flow: Sequence[str],
    nodes: Sequence[keras_graph.Node],
    inputs: int,
    outputs: Sequence[int],
    single_output: bool = True,
  ):
    layers = list(layers)
    keras_graph.check_graph(
      'KerasFunctional',
      layers,
      names,
      mask_flow,
      nodes,
      inputs,
      outputs,
      nnx_masking.Masking,
    )
    self.layers = nnx.List(layers)
    self.names = tuple(names)
    self.mask_flow = tuple(mask_flow)
    self.nodes = tuple(nodes)
    self.inputs = inputs
    self.outputs = tuple(outputs)
    self.single_output = single_output

  def __call__(
    self,
    *inputs: Any,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | jax.Array | None = None,
  ) -> Any:
    """Applies the graph.

    Args:
      *inputs: the model's inputs, in Keras's order.
      deterministic: if given, overrides the mode of the dropout layers for
        this call.
      rngs: if given, the rng streams (or a key) of the dropout layers for
        this call.

    Returns:
      The output, or the list of outputs.
    """
    keras_graph.check_inputs('KerasFunctional', self.inputs, inputs)
    overrides = {
      name: value
      for name, value in (('deterministic', deterministic), ('rngs', rngs))
      if value is not None
    }

    def call(index, layer, inputs, kwargs):
      del index
      if hasattr(layer, 'deterministic'):
        kwargs.update(overrides)
      if isinstance(inputs, list):
        return layer(*inputs, **kwargs)
      return layer(inputs, **kwargs)

    return keras_graph.apply_graph(
      self.layers,
      self.mask_flow,
      self.nodes,
      self.outputs,
      self.single_output,
      inputs,
      call,
    )


# ---------------------------------------------------------------------------
# The mapping.


def _no_weights(module: Any) -> tuple[str, ...]:
  del module
  return ()


def _no_arguments(module: Any, *rest: Any) -> dict[str, Any]:
  del module, rest
  return {}


def _trained(module: Any) -> str:
  del module
  return PARAMS


@dataclasses.dataclass(frozen=True)
class Conversion:
  """How one linen layer and its NNX twin turn into each other.

  Attributes:
    nnx_type: the NNX twin.
    fields: the configuration both keep under the same name: the linen
      module's fields, the NNX constructor's arguments and attributes.
    weights: ``weights(linen_module)``, the names of its weights.
    collection: ``collection(linen_module)``, the linen collection of its
      weights (``'params'``, or ``'constants'`` for frozen ones).
    nnx_arguments: ``nnx_arguments(linen_module, weights)``, the other NNX
      constructor arguments: sizes read off the weights, renamed fields.
    linen_arguments: ``linen_arguments(nnx_module)``, the other linen
      fields.
    takes_rngs: whether the NNX twin keeps ``rngs`` (dropout's stream).
  """

  nnx_type: type[Any]
  fields: tuple[str, ...] = ()
  weights: Callable[[nn.Module], tuple[str, ...]] = _no_weights
  collection: Callable[[nn.Module], str] = _trained
  nnx_arguments: Callable[[Any, Weights], dict[str, Any]] = _no_arguments
  linen_arguments: Callable[[Any], dict[str, Any]] = _no_arguments
  takes_rngs: bool = False


def _kernel(module: Any) -> tuple[str, ...]:
  del module
  return ('kernel',)


def _kernel_and_bias(module: Any) -> tuple[str, ...]:
  return ('kernel', 'bias') if module.use_bias else ('kernel',)


def _shape_of(
  module: nn.Module, weights: Weights, name: str, layout: str
) -> tuple[int, ...]:
  """The shape of weight ``name``, checked to have the rank of ``layout``."""
  shape = weights[name].shape
  if len(shape) != len([axis for axis in layout[1:-1].split(',') if axis]):
    raise ValueError(
      f'from_linen: {type(module).__name__} needs {name} of shape {layout},'
      f' got shape {shape}.'
    )
  return shape


def _per_position_dense_sizes(module: Any, weights: Weights) -> dict:
  positions, in_features, _ = _shape_of(
    module, weights, 'kernel', '(positions, in_features, features)'
  )
  return {'positions': positions, 'in_features': in_features}


def _locally_connected_sizes(module: Any, weights: Weights) -> dict:
  kernel_size, strides = checks.locally_connected_1d_options(
    module.filters,
    module.kernel_size,
    module.strides,
    module.padding,
    module.data_format,
    module.use_bias,
  )
  output_length, window, _ = _shape_of(
    module,
    weights,
    'kernel',
    '(output_length, kernel_size * in_features, filters)',
  )
  if window % kernel_size:
    raise ValueError(
      f'from_linen: LocallyConnected1D with kernel_size={kernel_size} needs'
      f' a kernel of shape (output_length, {kernel_size} * in_features,'
      f' filters), got shape {weights["kernel"].shape}.'
    )
  # The shortest input with output_length windows: every input the weights
  # fit gives the same outputs, and the NNX layer checks no more.
  return {
    'input_length': (output_length - 1) * strides + kernel_size,
    'in_features': window // kernel_size,
  }


def _in_features(name: str, layout: str) -> Callable[[Any, Weights], dict]:
  """The ``in_features`` of a layer, the first axis of weight ``name``."""

  def sizes(module: Any, weights: Weights) -> dict:
    return {'in_features': _shape_of(module, weights, name, layout)[0]}

  return sizes


def _const_product_weights(module: Any, weights: Weights) -> dict:
  (in_features,) = _shape_of(module, weights, 'kernel', '(N,)')
  return {'in_features': in_features, 'weights': weights['kernel']}


def _const_product_linen(layer: Any) -> dict:
  # Frozen weights are given to the linen layer too, which needs them to
  # build; once built, the variables are the truth.
  return {'weights': None if layer.trainable else layer.kernel[...]}


def _const_product_collection(module: Any) -> str:
  return PARAMS if module.trainable else CONSTANTS


def _dropout_mode(module: Any, weights: Weights) -> dict:
  del weights
  return {'deterministic': bool(module.deterministic)}


def _dropout_mode_linen(layer: Any) -> dict:
  return {'deterministic': True if layer.deterministic else None}


def _attention_weights(module: Any) -> tuple[str, ...]:
  return tuple(attention_decoder_shapes(1, module.units, module.output_dim))


def _check_default(caller: str, layer: Any, field: str, default: Any) -> None:
  """Raises our own error when ``field`` of ``layer`` is not its default."""
  value = getattr(layer, field)
  if value is not default and value != default:
    raise ValueError(
      f'{caller}: {type(layer).__name__} with a {field} of its own ({value!r})'
      f' is not converted; only the default {default!r} is.'
    )


def _dense_to_nnx(module: nn.Dense, weights: Weights) -> dict:
  defaults = {
    field.name: field.default for field in dataclasses.fields(nn.Dense)
  }
  for field in ('dot_general', 'dot_general_cls', 'promote_dtype'):
    _check_default('from_linen', module, field, defaults[field])
  (in_features, _) = _shape_of(module, weights, 'kernel', '(in_features, K)')
  return {'in_features': in_features, 'out_features': module.features}


def _linear_to_linen(layer: nnx.Linear) -> dict:
  defaults = inspect.signature(nnx.Linear.__init__).parameters
  for field in ('dot_general', 'preferred_element_type', 'promote_dtype'):
    _check_default('to_linen', layer, field, defaults[field].default)
  return {'features': layer.out_features}


_DENSE_FIELDS = ('use_bias', 'dtype', 'param_dtype', 'precision')
_DROPOUT = {
  'nnx_arguments': _dropout_mode,
  'linen_arguments': _dropout_mode_linen,
  'takes_rngs': True,
}
_SPATIAL_DROPOUT_FIELDS = ('rate', 'data_format', 'rng_collection')

#: Every linen layer :func:`from_linen` converts, and how (see the module
#: docstring for the table). ``flax.linen.Dense`` is here for the models
#: :func:`flax_dense.from_keras` imports; ``KerasSequential`` converts layer
#: by layer.
LINEN_TO_NNX: dict[type[nn.Module], Conversion] = {
  linen_core.Activation: Conversion(nnx_core.Activation, ('activation',)),
  linen_regularizers.ActivityRegularization: Conversion(
    nnx_regularizers.ActivityRegularization, ('l1', 'l2')
  ),
  linen_attention.AttentionDecoder: Conversion(
    nnx_attention.AttentionDecoder,
    (
      'units',
      'output_dim',
      'return_probabilities',
      'dtype',
      'param_dtype',
      'precision',
    ),
    weights=_attention_weights,
    nnx_arguments=_in_features('U_a', '(in_features, units)'),
  ),
  linen_product.ConstProduct: Conversion(
    nnx_product.ConstProduct,
    ('trainable', 'dtype', 'param_dtype'),
    weights=_kernel,
    collection=_const_product_collection,
    nnx_arguments=_const_product_weights,
    linen_arguments=_const_product_linen,
  ),
  nn.Dense: Conversion(
    nnx.Linear,
    _DENSE_FIELDS,
    weights=_kernel_and_bias,
    nnx_arguments=_dense_to_nnx,
    linen_arguments=_linear_to_linen,
  ),
  linen_dropout.Dropout: Conversion(
    nnx_dropout.Dropout, ('rate', 'noise_shape', 'rng_collection'), **_DROPOUT
  ),
  linen_core.Flatten: Conversion(nnx_core.Flatten, ('data_format',)),
  linen_pooling.GlobalAveragePooling1D: Conversion(
    nnx_pooling.GlobalAveragePooling1D, ('data_format', 'keepdims')
  ),
  linen_pooling.GlobalMaxPooling1D: Conversion(
    nnx_pooling.GlobalMaxPooling1D, ('data_format', 'keepdims')
  ),
  linen_core.Lambda: Conversion(nnx_core.Lambda, ('function',)),
  linen_locally_connected.LocallyConnected1D: Conversion(
    nnx_locally_connected.LocallyConnected1D,
    (
      'filters',
      'kernel_size',
      'strides',
      'padding',
      'data_format',
      'activation',
      *_DENSE_FIELDS,
    ),
    weights=_kernel_and_bias,
    nnx_arguments=_locally_connected_sizes,
  ),
  linen_masking.Masking: Conversion(nnx_masking.Masking, ('mask_value',)),
  linen_multi_io.MultiIODense: Conversion(
    nnx_multi_io.MultiIODense,
    ('features', 'dtype', 'param_dtype', 'precision'),
    weights=_kernel,
    nnx_arguments=_in_features('kernel', '(in_features, features)'),
  ),
  linen_dense.PerPositionDense: Conversion(
    nnx_dense.PerPositionDense,
    ('features', 'activation', 'activity_regularizer', *_DENSE_FIELDS),
    weights=_kernel_and_bias,
    nnx_arguments=_per_position_dense_sizes,
  ),
  linen_core.Permute: Conversion(nnx_core.Permute, ('dims',)),
  linen_core.RepeatVector: Conversion(nnx_core.RepeatVector, ('n',)),
  linen_core.Reshape: Conversion(nnx_core.Reshape, ('target_shape',)),
  linen_dropout.SpatialDropout1D: Conversion(
    nnx_dropout.SpatialDropout1D, _SPATIAL_DROPOUT_FIELDS, **_DROPOUT
  ),
  linen_dropout.SpatialDropout2D: Conversion(
    nnx_dropout.SpatialDropout2D, _SPATIAL_DROPOUT_FIELDS, **_DROPOUT
  ),
  linen_dropout.SpatialDropout3D: Conversion(
    nnx_dropout.SpatialDropout3D, _SPATIAL_DROPOUT_FIELDS, **_DROPOUT
  ),
}


def _known(
  caller: str, kind: str, module: Any, types: Collection[type]
) -> type:
  """The type of ``types`` that ``module`` is an instance of (the nearest)."""
  for base in type(module).__mro__:
    if base in types:
      return base
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
  module: nn.Module, conversion: Conversion, variables: Any
) -> tuple[Weights, str]:
  """The weights of one layer, and their collection, checked by name."""
  collections = _collections(module, variables)
  names = conversion.weights(module)
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
  return {name: jnp.asarray(tree[name]) for name in names}, collection


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
  conversion = LINEN_TO_NNX[
    _known('from_linen', 'linen layer', module, LINEN_TO_NNX)
  ]
  weights, collection = _layer_weights(module, conversion, variables)
  arguments = {field: getattr(module, field) for field in conversion.fields}
  arguments.update(conversion.nnx_arguments(module, weights))
  if conversion.takes_rngs:
    arguments['rngs'] = rngs
  if not weights:
    return conversion.nnx_type(**arguments)
  # Built abstractly, then given the weights: no values are drawn.
  layer = nnx.eval_shape(
    lambda: conversion.nnx_type(**arguments, rngs=nnx.Rngs(0))
  )
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


def _fields_text(module: nn.Module, conversion: Conversion) -> str:
  return ', '.join(
    f'{field}={getattr(module, field)!r}' for field in conversion.fields
  )


def _container_layers(module: Any) -> tuple[list[str], Sequence[Any]]:
  names = module.names or [f'layers_{i}' for i in range(len(module.layers))]
  return list(names), module.layers


def _sequential_from_linen(
  module: interop.KerasSequential | keras_graph.KerasFunctional,
  variables: Any,
  rngs: nnx.Rngs | None,
) -> KerasSequential | KerasFunctional:
  """The NNX twin of a linen ``KerasSequential`` or ``KerasFunctional``."""
  collections = _collections(module, variables)
  container = type(module).__name__
  if isinstance(module, interop.KerasSequential):
    interop.check_sequential(
      'from_linen',
      module.layers,
      module.names,
      module.mask_flow,
      linen_masking.Masking,
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
      # The container decides: inference unless called otherwise.
      twin.deterministic = True
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
  if isinstance(module, keras_graph.KerasFunctional):
    return KerasFunctional(
      layers,
      names=module.names,
      mask_flow=module.mask_flow,
      nodes=module.nodes,
      inputs=module.inputs,
      outputs=module.outputs,
      single_output=module.single_output,
    )
  return KerasSequential(layers, names=module.names, mask_flow=module.mask_flow)


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
  if isinstance(module, interop.KerasSequential | keras_graph.KerasFunctional):
    return _sequential_from_linen(module, variables, rngs)
  return _layer_from_linen(module, variables, rngs)


# ---------------------------------------------------------------------------
# NNX to linen.

#: Each NNX twin and its linen layer, the reverse of :data:`LINEN_TO_NNX`.
NNX_TO_LINEN: dict[type[nnx.Module], type[nn.Module]] = {
  conversion.nnx_type: linen_type
  for linen_type, conversion in LINEN_TO_NNX.items()
}


def _layer_to_linen(layer: nnx.Module) -> tuple[nn.Module, dict[str, Any]]:
  """The linen layer and variables of one NNX twin."""
  linen_type = NNX_TO_LINEN[
    _known('to_linen', 'NNX layer', layer, NNX_TO_LINEN)
  ]
  conversion = LINEN_TO_NNX[linen_type]
  arguments = {field: getattr(layer, field) for field in conversion.fields}
  arguments.update(conversion.linen_arguments(layer))
  module = linen_type(**arguments)
  variables: dict[str, dict[str, jax.Array]] = {}
  for name in conversion.weights(module):
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
    module = interop.frozen(module)
  return module, variables


def _sequential_to_linen(
  model: KerasSequential | KerasFunctional,
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
  if isinstance(model, KerasFunctional):
    module = keras_graph.KerasFunctional(
      tuple(modules),
      model.names,
      model.mask_flow,
      model.nodes,
      model.inputs,
      model.outputs,
      model.single_output,
    )
  else:
    module = interop.KerasSequential(
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
  if isinstance(layer, KerasSequential | KerasFunctional):
    return _sequential_to_linen(layer)
  return _layer_to_linen(layer)
