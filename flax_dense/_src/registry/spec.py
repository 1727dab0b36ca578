"""What flax_dense knows about one layer, in one place: :class:`LayerSpec`.

A spec names a layer's linen class and NNX twin, how the two turn into each
other (the configuration both keep, the weights, the sizes the NNX
constructor reads off them), what the layer does with a Keras mask, the
Keras classes it is imported from, and the native Keras layer it is
exported as. The Keras parts are plain functions of configs and NumPy
arrays (export receives the ``keras`` module from its caller), so nothing
here imports Keras.
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_dense._src.ops.activations import KERAS_ACTIVATIONS

Weights = dict[str, jax.Array]

#: The collection of trained weights in linen.
PARAMS = 'params'


# ---------------------------------------------------------------------------
# Keras layers on their way in.


@dataclasses.dataclass(frozen=True)
class KerasLayer:
  """One Keras layer as a live model or a file gives it.

  Attributes:
    class_name: the Keras class name (``'Dense'``).
    name: the layer's name.
    config: ``layer.get_config()``, or the ``config`` of the file's
      ``model_config`` entry.
    weights: ``layer.get_weights()``, or the arrays the file holds.
    source: where it comes from, for messages (``"model 'm'"``,
      ``"file 'm.h5'"``).
    keras_type: the class of a live layer, ``None`` for a file.
    input_shape: the per-example shape of its one input, where known.
    keras3: false for a Keras 2 / tf.keras ``.h5`` file, whose names can
      mean other functions (``hard_sigmoid``).
  """

  class_name: str
  name: str
  config: dict[str, Any]
  weights: list[np.ndarray]
  source: str
  keras_type: type | None = None
  input_shape: tuple[int, ...] | None = None
  keras3: bool = True

  def describe(self) -> str:
    return f"{self.class_name} layer '{self.name}' of {self.source}"

  def error(self, message: str) -> ValueError:
    """Our error about this layer: ``from_keras: <layer> <message>``."""
    return ValueError(f'from_keras: {self.describe()} {message}')


@dataclasses.dataclass(frozen=True)
class Step:
  """One module of an imported model and its weights.

  Attributes:
    name: its name in the model's variables.
    module: the linen module.
    mask_flow: one of :data:`MASK_FLOWS`.
    variables: ``{'params': {...}}`` or ``{'constants': {...}}``.
  """

  name: str
  module: nn.Module
  mask_flow: str
  variables: dict[str, dict[str, np.ndarray]] = dataclasses.field(
    default_factory=dict
  )


#: ``convert(layer)``: the steps one Keras layer becomes.
Converter = Callable[[KerasLayer], list[Step]]


@dataclasses.dataclass(frozen=True)
class KerasImport:
  """How one Keras class becomes flax_dense modules.

  Attributes:
    convert: the layer to its steps.
    becomes: what it becomes, in words (the table in docs/keras_import.md).
    makes: the module types its steps can hold, besides the spec's own.
  """

  convert: Converter
  becomes: str
  makes: tuple[type, ...] = ()


# ---------------------------------------------------------------------------
# Layers on their way out.


@dataclasses.dataclass(frozen=True)
class ExportedLayer:
  """One flax_dense layer on its way to Keras, with its weights.

  Attributes:
    name: its name in the model.
    module: the linen module (unwrapped when frozen).
    mask_flow: what it does with the mask in the model, or ``None``.
    params: its weights by name, whichever collection held them.
    trainable: false for frozen weights (``constants``).
    export_inner: for a layer of layers, ``export_inner(weight_name)``
      exports the inner layer kept under that name as its own spec does
      (``(keras_layer, weights, build_shape)``); ``None`` elsewhere.
  """

  name: str
  module: nn.Module
  mask_flow: str | None
  params: Mapping[str, Any]
  trainable: bool
  export_inner: Callable[[str], tuple[Any, list, tuple | None]] | None = None

  def no_counterpart(self, what: str) -> ValueError:
    return ValueError(
      f"to_keras_model: layer '{self.name}' is {what}, which has no Keras"
      ' counterpart; host the module in Keras as one layer with'
      ' fd.to_keras(module, variables) instead.'
    )


#: ``export(keras, layer)``: ``(keras_layer, weights, build_shape)``, the
#: weights in Keras's order and the input shape to build it with (``None``
#: for a layer without weights).
Exporter = Callable[[Any, ExportedLayer], tuple[Any, list, tuple | None]]


# ---------------------------------------------------------------------------
# The spec.


def no_weights(module: Any) -> tuple[str, ...]:
  del module
  return ()


def no_arguments(module: Any, *rest: Any) -> dict[str, Any]:
  del module, rest
  return {}


def trained(module: Any) -> str:
  del module
  return PARAMS


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """Everything flax_dense knows about one layer.

  Attributes:
    linen: the linen class.
    nnx: its NNX twin.
    fields: the configuration both keep under the same name: the linen
      module's fields, the NNX constructor's arguments and attributes.
    mask_flow: one of :data:`MASK_FLOWS`, or ``mask_flow(module)`` for a
      layer whose flow depends on its configuration; what Keras's layer
      does with the mask, and what the imported model does.
    weights: ``weights(linen_module)``, the names of its weights.
    collection: ``collection(linen_module)``, the linen collection of its
      weights (``'params'``, or ``'constants'`` for frozen ones).
    nnx_arguments: ``nnx_arguments(linen_module, weights)``, the other NNX
      constructor arguments: sizes read off the weights, renamed fields.
    linen_arguments: ``linen_arguments(nnx_module)``, the other linen
      fields.
    takes_rngs: whether the NNX twin keeps ``rngs`` (dropout's stream).
    per_step: whether the layer takes every leading axis as a batch axis,
      so that Keras's ``TimeDistributed`` of it imports as the layer itself.
    inner: for a layer of layers (``Bidirectional``), ``inner(linen_module)``
      gives its inner linen layers by weight name; NNX conversion converts
      each with its weights and hands the twins (or, back, the linen
      layers) to ``nnx_arguments`` / ``linen_arguments`` as their
      ``weights``.
    keras_import: the Keras class names it is imported from, each with its
      :class:`KerasImport`.
    keras_export: its native Keras layer, or ``None``.
    not_imported: for a layer no Keras class becomes, why (the docs and the
      registry test read it).
    not_exported: for a layer without ``keras_export``, why.
  """

  linen: type[nn.Module]
  nnx: type[Any]
  fields: tuple[str, ...] = ()
  mask_flow: str | Callable[[Any], str] = 'drop'
  weights: Callable[[Any], tuple[str, ...]] = no_weights
  collection: Callable[[Any], str] = trained
  nnx_arguments: Callable[..., dict[str, Any]] = no_arguments
  linen_arguments: Callable[..., dict[str, Any]] = no_arguments
  takes_rngs: bool = False
  per_step: bool = False
  inner: Callable[[Any], dict[str, Any]] | None = None
  keras_import: Mapping[str, KerasImport] = dataclasses.field(
    default_factory=dict
  )
  keras_export: Exporter | None = None
  not_imported: str = ''
  not_exported: str = ''

  def flow(self, module: Any) -> str:
    """The mask flow of ``module``, an instance of this layer."""
    return (
      self.mask_flow(module) if callable(self.mask_flow) else self.mask_flow
    )


# ---------------------------------------------------------------------------
# Helpers the specs share.


def kernel(module: Any) -> tuple[str, ...]:
  del module
  return ('kernel',)


def kernel_and_bias(module: Any) -> tuple[str, ...]:
  return ('kernel', 'bias') if module.use_bias else ('kernel',)


def shape_of(
  module: Any, weights: Weights, name: str, layout: str
) -> tuple[int, ...]:
  """The shape of weight ``name``, checked to have the rank of ``layout``."""
  shape = weights[name].shape
  if len(shape) != len([axis for axis in layout[1:-1].split(',') if axis]):
    raise ValueError(
      f'from_linen: {type(module).__name__} needs {name} of shape {layout},'
      f' got shape {shape}.'
    )
  return shape


def in_features(name: str, layout: str) -> Callable[[Any, Weights], dict]:
  """The ``in_features`` of a layer, the first axis of weight ``name``."""

  def sizes(module: Any, weights: Weights) -> dict:
    return {'in_features': shape_of(module, weights, name, layout)[0]}

  return sizes


def keras2_hard_sigmoid(x: jax.Array) -> jax.Array:
  """Keras 2's ``hard_sigmoid``: ``clip(0.2 x + 0.5, 0, 1)`` (Keras 3's is
  ``relu6(x + 3) / 6``)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def activation_name(layer: KerasLayer, activation: Any) -> Any:
  """Our name of a Keras activation, checked against the ones we know.

  A Keras 2 file's ``'hard_sigmoid'`` is :func:`keras2_hard_sigmoid`, a
  function, since Keras 3 changed what the name computes.
  """
  if activation is None:
    return 'linear'
  if not layer.keras3 and activation == 'hard_sigmoid':
    return keras2_hard_sigmoid
  if isinstance(activation, str) and activation.lower() in KERAS_ACTIVATIONS:
    return activation.lower()
  raise layer.error(
    f'has activation {activation!r}, which flax_dense does not know;'
    f' expected one of {", ".join(sorted(KERAS_ACTIVATIONS))}.'
  )


def export_activation(layer: ExportedLayer, activation: Any) -> str:
  """The Keras name of a layer's activation, else our own error."""
  if activation is None:
    return 'linear'
  if isinstance(activation, str) and activation.lower() in KERAS_ACTIVATIONS:
    return activation.lower()
  raise ValueError(
    f"to_keras_model: layer '{layer.name}' has activation {activation!r};"
    ' Keras layers take activations by name: give it as one of'
    f' {", ".join(sorted(KERAS_ACTIVATIONS))}.'
  )


class Dtypes(TypedDict, total=False):
  """A layer's dtype arguments, typed by key for ``**`` unpacking."""

  dtype: str
  param_dtype: str


def dtypes(config: dict[str, Any]) -> Dtypes:
  """``dtype`` and ``param_dtype`` of a Keras 2 or 3 ``dtype`` config."""
  dtype = config.get('dtype')
  if isinstance(dtype, dict):
    dtype = dtype.get('config', {}).get('name')
  if not isinstance(dtype, str):
    return {}
  if dtype.startswith('mixed_'):
    return {'dtype': dtype.removeprefix('mixed_'), 'param_dtype': 'float32'}
  return {'dtype': dtype, 'param_dtype': dtype}


def freeze(value: Any) -> Any:
  """A list as a tuple (a module must hash), anything else unchanged."""
  return tuple(value) if isinstance(value, list) else value


def weightless_import(
  module_type: type[nn.Module],
  mask_flow: str,
  arguments: Callable[[KerasLayer], dict[str, Any]] | None = None,
) -> KerasImport:
  """The import of a Keras layer without weights: one ``module_type``.

  Args:
    module_type: the flax_dense layer.
    mask_flow: what it does with the mask.
    arguments: ``arguments(layer)``, the module's keyword arguments;
      default: each of its fields that the Keras config holds under the
      same name and not as ``None``, lists as tuples (a module must hash).
  """

  def fields_from_config(layer: KerasLayer) -> dict[str, Any]:
    return {
      field.name: freeze(value)
      for field in dataclasses.fields(module_type)
      if field.init
      and field.name not in ('parent', 'name')
      and (value := layer.config.get(field.name)) is not None
    }

  arguments = arguments or fields_from_config

  def convert(layer: KerasLayer) -> list[Step]:
    return [Step(layer.name, module_type(**arguments(layer)), mask_flow)]

  return KerasImport(convert, f'``{module_type.__name__}``')


def weightless_export(
  keras_class: str, arguments: Callable[[ExportedLayer], dict[str, Any]]
) -> Exporter:
  """The export of a layer without weights as ``keras.layers.<keras_class>``.

  Args:
    keras_class: the Keras class name.
    arguments: ``arguments(layer)``, its keyword arguments.
  """

  def export(keras: Any, layer: ExportedLayer):
    made = getattr(keras.layers, keras_class)(
      **arguments(layer), name=layer.name
    )
    return made, [], None

  return export
