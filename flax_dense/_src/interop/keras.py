"""Import Keras 3 models and Keras weights into flax_dense modules."""

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_dense._src.linen.attention import AttentionDecoder
from flax_dense._src.linen.core import (
  Activation,
  Flatten,
  Lambda,
  Permute,
  RepeatVector,
  Reshape,
)
from flax_dense._src.linen.dense import PerPositionDense
from flax_dense._src.linen.dropout import (
  Dropout,
  SpatialDropout1D,
  SpatialDropout2D,
  SpatialDropout3D,
)
from flax_dense._src.linen.locally_connected import LocallyConnected1D
from flax_dense._src.linen.masking import Masking
from flax_dense._src.linen.multi_io import MultiIODense
from flax_dense._src.linen.pooling import (
  GlobalAveragePooling1D,
  GlobalMaxPooling1D,
)
from flax_dense._src.linen.product import ConstProduct
from flax_dense._src.linen.regularizers import ActivityRegularization
from flax_dense._src.ops.activations import KERAS_ACTIVATIONS
from flax_dense._src.ops.masking import compute_mask
from flax_dense._src.variables import CONSTANTS

# ---------------------------------------------------------------------------
# Raw weights, pure NumPy.

#: Kinds of :func:`keras_weights_to_params`: the layout of the Keras kernel
#: and the flax_dense layer whose params it becomes.
WEIGHT_KINDS: dict[str, tuple[str, str]] = {
  'dense': ('(in_features, units)', 'flax.linen.Dense'),
  'dense2d': ('(positions, in_features, units)', 'PerPositionDense'),
  'einsum_dense': ('(positions, in_features, units)', 'PerPositionDense'),
  'locally_connected1d': (
    '(positions, kernel_size * in_features, units) with kernel_size 1',
    'PerPositionDense',
  ),
}


def _weight_kind(kind: str) -> str:
  """The key of :data:`WEIGHT_KINDS` that ``kind`` spells, in any case."""
  if isinstance(kind, str):
    spelled = kind.lower().replace('_', '')
    for known in WEIGHT_KINDS:
      if known.replace('_', '') == spelled:
        return known
  raise ValueError(
    f'keras_weights_to_params: unknown kind {kind!r}; expected one of'
    f' {", ".join(map(repr, WEIGHT_KINDS))} (or the Keras class name, e.g.'
    " 'LocallyConnected1D')."
  )


def keras_weights_to_params(
  kind: str, weights: Sequence[Any]
) -> dict[str, np.ndarray]:
  """The params of a flax_dense layer from one Keras layer's weights.

  ``weights`` is what the Keras layer's ``get_weights()`` returns:
  ``[kernel, bias]``, or ``[kernel]`` for a layer without bias. No Keras is
  needed: the arrays can come from ``np.load``, an ``.h5`` file or a
  pickle. ``kind`` names the Keras layer (case and underscores do not
  matter, so the class name works too):

  ==========================  ===================  ==========================
  kind                        Keras kernel         flax_dense layer
  ==========================  ===================  ==========================
  ``'dense'``                 ``(D, K)``           ``flax.linen.Dense(K)``
  ``'einsum_dense'``          ``(P, D, K)``        ``PerPositionDense(K)``
  ``'dense2d'``               ``(P, D, K)``        ``PerPositionDense(K)``
  ``'locally_connected1d'``   ``(P, 1 * D, K)``    ``PerPositionDense(K)``
  ==========================  ===================  ==========================

  ``'einsum_dense'`` is ``EinsumDense('abc,bcd->abd', bias_axes='bd')``;
  ``'dense2d'`` the classic custom ``Dense2D`` layer (kernel
  ``(P, D, units)``, bias ``(P, units)``); ``'locally_connected1d'`` the
  tf.keras ``LocallyConnected1D(units, kernel_size=1)`` of the default
  ``implementation=1``, whose kernel ``(output_length, kernel_size *
  input_dim, filters)`` is then ``(P, D, units)``. The bias is ``(K,)`` for
  ``'dense'`` and ``(P, K)`` for the others.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp, numpy as np
    >>> kernel = np.ones((5, 4, 3), np.float32)  # (P, 1 * D, K)
    >>> bias = np.zeros((5, 3), np.float32)  # (P, K)
    >>> params = fd.keras_weights_to_params('LocallyConnected1D', [kernel, bias])
    >>> {name: w.shape for name, w in sorted(params.items())}
    {'bias': (5, 3), 'kernel': (5, 4, 3)}
    >>> fd.PerPositionDense(3).apply({'params': params}, jnp.ones((2, 5, 4))).shape
    (2, 5, 3)

  Args:
    kind: the Keras layer: ``'dense'``, ``'einsum_dense'``, ``'dense2d'`` or
      ``'locally_connected1d'``.
    weights: ``[kernel]`` or ``[kernel, bias]``, array-likes.

  Returns:
    ``{'kernel': ..., 'bias': ...}`` (no ``'bias'`` for ``[kernel]``) as new
    NumPy arrays of the weights' dtype; use them as
    ``layer.apply({'params': params}, x)``.

  Raises:
    ValueError: for an unknown ``kind``, a number of weights other than 1 or
      2, or a kernel or bias whose shape does not fit the layout of
      ``kind``.
  """
  kind = _weight_kind(kind)
  layout, _ = WEIGHT_KINDS[kind]
  caller = f'keras_weights_to_params({kind!r})'
  if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
    raise ValueError(
      f'{caller}: weights must be the list [kernel, bias] or [kernel] of the'
      f" layer's get_weights(), got {type(weights).__name__}."
    )
  if len(weights) not in (1, 2):
    raise ValueError(
      f'{caller}: weights must be [kernel, bias] or [kernel], got'
      f' {len(weights)} arrays of shapes'
      f' {[np.shape(w) for w in weights]}.'
    )
  kernel, *bias = (np.array(w) for w in weights)
  kernel_rank = 2 if kind == 'dense' else 3
  if kernel.ndim != kernel_rank:
    raise ValueError(
      f'{caller}: kernel must be {layout}, rank {kernel_rank}, got shape'
      f' {kernel.shape}.'
    )
  params = {'kernel': kernel}
  if bias:
    bias_shape = kernel.shape[-1:] if kind == 'dense' else kernel.shape[::2]
    if bias[0].shape != bias_shape:
      raise ValueError(
        f'{caller}: the bias of a kernel of shape {kernel.shape} must have'
        f' shape {bias_shape}, got {bias[0].shape}.'
      )
    params['bias'] = bias[0]
  return params


# ---------------------------------------------------------------------------
# The imported model.

#: What a layer of :class:`KerasSequential` does with the Keras mask.
MASK_FLOWS = ('compute', 'propagate', 'consume', 'drop')


def check_sequential(
  container: str,
  layers: Sequence[Any],
  names: Sequence[str] | None,
  mask_flow: Sequence[str] | None,
  masking_type: type,
) -> None:
  """Raises our own error unless ``names`` and ``mask_flow`` fit ``layers``.

  Shared by the linen and NNX ``KerasSequential``.

  Args:
    container: the class name, for the messages.
    layers: the layers, in order.
    names: one name per layer, or ``None``.
    mask_flow: one of :data:`MASK_FLOWS` per layer, or ``None``.
    masking_type: the ``Masking`` class of the front end, the only layer
      whose flow may be ``'compute'``.
  """
  count = len(layers)
  for field, value in (('names', names), ('mask_flow', mask_flow)):
    if value is not None and len(value) != count:
      raise ValueError(
        f'{container}: {field} must have one entry per layer ({count}), got'
        f' {len(value)}: {tuple(value)}.'
      )
  for index, flow in enumerate(mask_flow or ()):
    if flow not in MASK_FLOWS:
      raise ValueError(
        f'{container}: mask_flow[{index}] must be one of {MASK_FLOWS}, got'
        f' {flow!r}.'
      )
    if flow == 'compute' and not isinstance(layers[index], masking_type):
      raise ValueError(
        f"{container}: mask_flow[{index}] is 'compute', which only a Masking"
        f' layer does, but layer {index} is a {type(layers[index]).__name__}.'
      )


def apply_sequential(
  layers: Sequence[Any],
  mask_flow: Sequence[str] | None,
  inputs: Any,
  call: Callable[[int, Any, Any, dict[str, Any]], Any],
) -> Any:
  """Runs ``layers`` in order on ``inputs``, passing the Keras mask along.

  Shared by the linen and NNX ``KerasSequential``: a ``'compute'`` layer
  makes the mask from its inputs, ``'propagate'`` passes it on,
  ``'consume'`` gets it as ``mask=`` and ends it, ``'drop'`` ends it.

  Args:
    layers: the layers, in order.
    mask_flow: one of :data:`MASK_FLOWS` per layer, or ``None`` (no mask).
    inputs: the first layer's inputs.
    call: ``call(index, layer, inputs, kwargs)`` applies one layer, with
      ``kwargs`` holding the mask for a consuming layer.

  Returns:
    The last layer's outputs.
  """
  flows = mask_flow or ('drop',) * len(layers)
  mask = None
  for index, (layer, flow) in enumerate(zip(layers, flows, strict=True)):
    kwargs = {}
    if flow == 'consume' and mask is not None:
      kwargs['mask'] = mask
    outputs = call(index, layer, inputs, kwargs)
    if flow == 'compute':
      mask = compute_mask(inputs, layer.mask_value)
    elif flow != 'propagate':
      mask = None
    inputs = outputs
  return inputs


class KerasSequential(nn.Module):
  """Applies layers one after another, passing a Keras mask along.

  The module :func:`from_keras` returns, and a plain Flax module to write by
  hand as well. As in Keras, a mask made by ``Masking`` travels with the
  activations through the layers that propagate it until a layer consumes
  it (``GlobalAveragePooling1D`` averages over the kept steps only) or
  drops it (``Reshape``, ``Flatten``, ...). Layers with a ``deterministic``
  field left ``None`` (dropout) get the ``deterministic`` argument: Keras's
  ``training`` negated, inference by default.

  Example usage::

    >>> import flax.linen as nn, jax, jax.numpy as jnp
    >>> import flax_dense as fd
    >>> model = fd.KerasSequential(
    ...     layers=(fd.Masking(0.0), nn.Dense(4), fd.GlobalAveragePooling1D()),
    ...     names=('masking', 'dense', 'pooling'),
    ...     mask_flow=('compute', 'propagate', 'consume'))
    >>> x = jnp.ones((2, 5, 3)).at[:, 3:].set(0.0)  # 2 padded steps
    >>> variables = model.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'dense': {'bias': (4,), 'kernel': (3, 4)}}}
    >>> y = model.apply(variables, x)  # (2, 4), the mean of 3 steps
    >>> dense = nn.Dense(4).bind({'params': variables['params']['dense']})
    >>> bool(jnp.allclose(y, dense(x[:, :3]).mean(axis=1)))
    True

  Attributes:
    layers: the modules, applied in order to one input.
    names: the name of each layer in the variables (Keras's layer names
      after :func:`from_keras`); default ``layers_0``, ``layers_1``, ...
    mask_flow: what each layer does with the mask, one of
      ``'compute'`` (a :class:`Masking` layer: makes the mask from its
      inputs), ``'propagate'`` (passes it on), ``'consume'`` (gets it as
      ``mask=`` and ends it) or ``'drop'`` (ends it); default: no mask.
  """

  layers: Sequence[nn.Module]
  names: Sequence[str] | None = None
  mask_flow: Sequence[str] | None = None

  @nn.compact
  def __call__(self, inputs: Any, deterministic: bool = True) -> Any:
    """Applies the layers.

    Args:
      inputs: the first layer's inputs.
      deterministic: passed to the layers whose ``deterministic`` field is
        ``None``: true for inference (dropout off), false for training.

    Returns:
      The last layer's outputs.

    Raises:
      ValueError: if ``names`` or ``mask_flow`` do not have one entry per
        layer, or ``mask_flow`` holds an unknown value or ``'compute'`` for
        a layer other than :class:`Masking`.
    """
    check_sequential(
      'KerasSequential', self.layers, self.names, self.mask_flow, Masking
    )

    def call(index, layer, inputs, kwargs):
      if self.names is not None:
        layer = layer.clone(parent=self, name=self.names[index])
      if getattr(layer, 'deterministic', False) is None:
        kwargs['deterministic'] = deterministic
      return layer(inputs, **kwargs)

    return apply_sequential(self.layers, self.mask_flow, inputs, call)


# ---------------------------------------------------------------------------
# Keras layers to flax_dense modules.


@dataclasses.dataclass(frozen=True)
class _Step:
  """One layer of the imported model and its weights."""

  name: str
  module: nn.Module
  mask_flow: str
  params: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def _describe(layer: Any) -> str:
  return f"{type(layer).__name__} layer '{layer.name}'"


def _activation_name(layer: Any, activation: Any) -> str:
  """Our name of a Keras activation, checked against the ones we know."""
  if isinstance(activation, str) and activation.lower() in KERAS_ACTIVATIONS:
    return activation.lower()
  raise ValueError(
    f'from_keras: {_describe(layer)} has activation {activation!r}, which'
    ' flax_dense does not know; expected one of'
    f' {", ".join(sorted(KERAS_ACTIVATIONS))}.'
  )


def _check_plain_weights(layer: Any) -> None:
  """Rejects the weight variants whose ``get_weights()`` we cannot read."""
  if getattr(layer, 'lora_enabled', False) or getattr(
    layer, 'quantization_mode', None
  ):
    raise ValueError(
      f'from_keras: {_describe(layer)} uses LoRA or quantization, whose'
      ' weights are not a plain kernel and bias; import the model before'
      ' enabling them.'
    )


def _dtypes(layer: Any) -> dict[str, str]:
  return {'dtype': layer.compute_dtype, 'param_dtype': layer.variable_dtype}


def _dense(layer: Any) -> list[_Step]:
  config = layer.get_config()
  _check_plain_weights(layer)
  params = keras_weights_to_params('dense', layer.get_weights())
  dense = nn.Dense(
    config['units'], use_bias=config['use_bias'], **_dtypes(layer)
  )
  steps = [_Step(layer.name, dense, 'propagate', params)]
  activation = _activation_name(layer, config['activation'])
  if activation != 'linear':
    name = f'{layer.name}_activation'
    steps.append(_Step(name, Activation(activation), 'propagate'))
  return steps


def _canonical_equation(equation: str) -> str:
  """``equation`` with its letters renamed a, b, c, ... in order of use."""
  letters: dict[str, str] = {}
  for char in equation:
    if char.isalpha() and char not in letters:
      letters[char] = 'abcdefghijklmnopqrstuvwxyz'[len(letters)]
  return ''.join(letters.get(char, char) for char in equation)


def _einsum_dense(layer: Any) -> list[_Step]:
  config = layer.get_config()
  _check_plain_weights(layer)
  equation = config['equation'].replace(' ', '')
  bias_axes = config['bias_axes']
  # Renaming the equation's letters renames the bias axes alike.
  canonical = _canonical_equation(f'{equation}|{bias_axes or ""}')
  if canonical not in ('abc,bcd->abd|', 'abc,bcd->abd|bd'):
    raise ValueError(
      f'from_keras: {_describe(layer)} has equation {equation!r} with'
      f' bias_axes {bias_axes!r}; flax_dense imports the per-position form'
      " 'abc,bcd->abd' with bias_axes 'bd' or None (PerPositionDense)."
    )
  params = keras_weights_to_params('einsum_dense', layer.get_weights())
  module = PerPositionDense(
    params['kernel'].shape[-1],
    use_bias='bias' in params,
    activation=_activation_name(layer, config['activation']),
    **_dtypes(layer),
  )
  return [_Step(layer.name, module, 'drop', params)]


@dataclasses.dataclass(frozen=True)
class _Converter:
  """How one Keras layer class becomes steps of the imported model.

  Attributes:
    makes: the module types its steps can hold (the registry test reads
      them: a public layer must be made by some converter, or be listed in
      :data:`NOT_IMPORTED`).
    convert: the Keras layer to its steps.
  """

  makes: tuple[type[nn.Module], ...]
  convert: Callable[[Any], list[_Step]]


def _weightless(
  module_type: type[nn.Module],
  mask_flow: str,
  arguments: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
) -> _Converter:
  """The converter of a Keras layer without weights: one ``module_type``.

  Args:
    module_type: the flax_dense layer.
    mask_flow: what it does with the mask.
    arguments: ``arguments(layer, config)``, the module's keyword arguments;
      default: each of its fields that the Keras config holds under the
      same name and not as ``None``, lists as tuples (a module must hash).
  """

  def fields_from_config(layer: Any, config: dict[str, Any]) -> dict[str, Any]:
    del layer
    return {
      field.name: tuple(value) if isinstance(value, list) else value
      for field in dataclasses.fields(module_type)
      if field.init
      and field.name not in ('parent', 'name')
      and (value := config.get(field.name)) is not None
    }

  arguments = arguments or fields_from_config

  def convert(layer: Any) -> list[_Step]:
    module = module_type(**arguments(layer, layer.get_config()))
    return [_Step(layer.name, module, mask_flow)]

  return _Converter((module_type,), convert)


def _no_step(layer: Any) -> list[_Step]:
  return []


def _converters(keras: Any) -> dict[type, _Converter]:
  """For each covered Keras layer class, its conversion to steps."""
  layers = keras.layers
  return {
    layers.Activation: _weightless(
      Activation,
      'propagate',
      lambda layer, config: {
        'activation': _activation_name(layer, config['activation'])
      },
    ),
    # Its penalty is added as any layer's activity_regularizer, in _convert.
    layers.ActivityRegularization: _Converter(
      (ActivityRegularization,), _no_step
    ),
    layers.Dense: _Converter((nn.Dense, Activation), _dense),
    layers.Dropout: _weightless(Dropout, 'propagate'),
    layers.EinsumDense: _Converter((PerPositionDense,), _einsum_dense),
    layers.Flatten: _weightless(Flatten, 'drop'),
    layers.GlobalAveragePooling1D: _weightless(
      GlobalAveragePooling1D, 'consume'
    ),
    layers.InputLayer: _Converter((), _no_step),
    layers.Masking: _weightless(Masking, 'compute'),
    layers.Permute: _weightless(Permute, 'drop'),
    layers.RepeatVector: _weightless(RepeatVector, 'drop'),
    layers.Reshape: _weightless(Reshape, 'drop'),
    # SpatialDropout1D has no data_format in Keras: always channels-last.
    layers.SpatialDropout1D: _weightless(SpatialDropout1D, 'propagate'),
    layers.SpatialDropout2D: _weightless(SpatialDropout2D, 'propagate'),
    layers.SpatialDropout3D: _weightless(SpatialDropout3D, 'propagate'),
  }


#: The public layers no Keras layer is imported as, and why. The registry
#: test fails for a public layer that is neither made by a converter of
#: :func:`_converters` nor listed here.
NOT_IMPORTED: dict[type[nn.Module], str] = {
  AttentionDecoder: (
    'a custom layer of a Keras tutorial, not a keras.layers class: import'
    ' its weights by name, which it keeps'
  ),
  ConstProduct: (
    'a custom layer of a Keras tutorial, not a keras.layers class: pass its'
    ' weights as weights='
  ),
  GlobalMaxPooling1D: (
    "not yet: Keras's layer ignores the mask, which ours honours, so its"
    " import needs mask_flow 'drop' and a test against Keras first"
  ),
  LocallyConnected1D: (
    'Keras 3 has no LocallyConnected1D (Keras 2 had): read tf.keras files'
    ' holding one with the HDF5 reader of flax_dense._src.interop.keras_h5'
  ),
  Lambda: (
    "a Keras Lambda holds Python code for Keras's backend, not a JAX"
    ' function: rebuild it as fd.Lambda(function)'
  ),
  MultiIODense: (
    'a custom layer of a Keras tutorial (MyLayer), not a keras.layers'
    ' class; two inputs do not fit a single chain either'
  ),
}


def _activity_regularization(keras: Any, layer: Any) -> nn.Module | None:
  """The layer's Keras ``activity_regularizer`` as a flax_dense layer."""
  regularizer = layer.activity_regularizer
  if regularizer is None:
    return None
  known = (
    keras.regularizers.L1,
    keras.regularizers.L2,
    keras.regularizers.L1L2,
  )
  if type(regularizer) not in known:
    raise ValueError(
      f'from_keras: {_describe(layer)} has activity_regularizer'
      f' {regularizer!r}; flax_dense imports L1, L2 and L1L2 (as'
      ' ActivityRegularization).'
    )
  return ActivityRegularization(
    float(getattr(regularizer, 'l1', 0.0)),
    float(getattr(regularizer, 'l2', 0.0)),
  )


def _swap_params_and_constants(variables: dict) -> dict:
  variables = dict(variables)
  params = variables.pop('params', {})
  constants = variables.pop(CONSTANTS, {})
  return {**variables, 'params': constants, CONSTANTS: params}


def frozen(module: nn.Module) -> nn.Module:
  """``module`` with its ``params`` stored in the ``constants`` collection.

  How :func:`from_keras` freezes a layer set ``trainable = False`` in Keras;
  ``fd.nnx.to_linen`` freezes a layer whose NNX weights are constants so.
  """
  frozen_type = nn.map_variables(
    type(module),
    ('params', CONSTANTS),
    _swap_params_and_constants,
    _swap_params_and_constants,
    init=True,
    mutable=True,
  )
  fields = {
    field.name: getattr(module, field.name)
    for field in dataclasses.fields(module)
    if field.init and field.name not in ('parent', 'name')
  }
  return frozen_type(**fields)


def _convert(
  keras: Any, converters: dict, layer: Any
) -> tuple[list[_Step], bool]:
  """The steps of one Keras layer, and whether its weights train."""
  converter = converters.get(type(layer))
  if converter is None:
    covered = ', '.join(sorted(kind.__name__ for kind in converters))
    raise ValueError(
      f'from_keras: {_describe(layer)} is not covered; flax_dense imports'
      f' {covered}. Rebuild that part of the model in Flax, or import its'
      ' weights with keras_weights_to_params.'
    )
  steps = converter.convert(layer)
  regularization = _activity_regularization(keras, layer)
  if regularization is not None:
    name = f'{layer.name}_activity_regularizer' if steps else layer.name
    steps.append(_Step(name, regularization, 'propagate'))
  trainable = {w.trainable for w in layer.weights}
  if len(trainable) > 1:
    raise ValueError(
      f'from_keras: {_describe(layer)} mixes trainable and non-trainable'
      ' weights, which no covered layer does.'
    )
  return steps, trainable != {False}


def _chain(keras: Any, model: Any) -> list[Any]:
  """The layers of ``model`` in order, checked to form a single chain."""
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
  layers = list(model.layers)
  if isinstance(model, keras.Sequential):
    return layers
  if len(model.inputs) != 1 or len(model.outputs) != 1:
    raise ValueError(
      f"from_keras: functional model '{model.name}' has"
      f' {len(model.inputs)} inputs and {len(model.outputs)} outputs;'
      ' flax_dense imports models with one input and one output.'
    )
  previous = model.inputs[0]
  for layer in layers:
    if isinstance(layer, keras.layers.InputLayer):
      continue
    # A functional graph passes a layer that takes a mask the mask Keras
    # attached to its input as a second input tensor.
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    mask = getattr(previous, '_keras_mask', None)
    if inputs[0] is not previous or any(x is not mask for x in inputs[1:]):
      raise ValueError(
        f"from_keras: functional model '{model.name}' is not a single"
        f' chain: {_describe(layer)} does not take the output of the layer'
        ' before it; flax_dense imports models whose every layer, called'
        ' once, feeds the next.'
      )
    previous = layer.output
  if previous is not model.outputs[0]:
    raise ValueError(
      f"from_keras: functional model '{model.name}' is not a single chain:"
      ' its output is not that of its last layer, called once.'
    )
  return layers


def _import_keras() -> Any:
  try:
    import keras
  except ImportError as error:
    raise ImportError(
      'from_keras needs Keras 3, an optional dependency: pip install'
      " 'flax_dense[keras]'."
    ) from error
  if int(keras.__version__.split('.')[0]) < 3:
    raise ImportError(
      f'from_keras needs Keras 3, found Keras {keras.__version__}: pip'
      " install 'flax_dense[keras]'."
    )
  return keras


#: The front ends :func:`from_keras` builds for.
APIS = ('linen', 'nnx')


def from_keras(
  model_or_path: Any,
  *,
  api: str = 'linen',
  rngs: nnx.Rngs | None = None,
) -> tuple[KerasSequential, dict[str, Any]] | nnx.Module:
  """A Keras 3 model as a Flax module and its variables, same outputs.

  Reads a ``keras.Sequential`` or a functional ``keras.Model`` whose layers
  form a single chain (one input, one output), or the path of a ``.keras``
  file, loaded with Keras itself. Each layer becomes its flax_dense or Flax
  counterpart, named as in Keras, and ``module.apply(variables, x)`` equals
  ``model(x)`` in inference mode. Masks flow as in Keras (see
  :class:`KerasSequential`). Weights of layers set ``trainable = False`` go
  to the ``constants`` collection, so :func:`flax_dense.summary` reports
  Keras's trainable and non-trainable counts.

  With ``api='nnx'`` the model is an NNX :class:`flax_dense.nnx.KerasSequential`
  instead, holding the NNX twins of the same layers (built by
  :func:`flax_dense.nnx.from_linen`) with their weights: frozen ones as
  ``fd.nnx.Constant``. It is returned in eval mode, so ``model(x)`` equals
  Keras's ``model(x)``; ``model.train()`` turns dropout on, drawing from
  ``rngs``.

  Covered layers: ``Activation``, ``ActivityRegularization``, ``Dense``
  (any input rank, as ``flax.linen.Dense`` followed by ``Activation`` when
  it has one), ``Dropout``, ``EinsumDense('abc,bcd->abd')``
  (:class:`PerPositionDense`), ``Flatten``, ``GlobalAveragePooling1D``,
  ``InputLayer``, ``Masking``, ``Permute``, ``RepeatVector``, ``Reshape``,
  ``SpatialDropout1D/2D/3D``; activations by name; activity regularizers
  L1, L2 and L1L2. Weight regularizers and constraints, which only act in
  training, are not carried: see ``fd.weight_penalty`` and
  ``fd.constrain``.

  Example usage::

    >>> import os; _ = os.environ.setdefault('KERAS_BACKEND', 'jax')
    >>> import keras, jax, jax.numpy as jnp, numpy as np
    >>> import flax_dense as fd
    >>> model = keras.Sequential([
    ...     keras.Input((5, 3)), keras.layers.Masking(),
    ...     keras.layers.Dense(4, activation='relu', name='dense'),
    ...     keras.layers.GlobalAveragePooling1D()])
    >>> module, variables = fd.from_keras(model)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'dense': {'bias': (4,), 'kernel': (3, 4)}}}
    >>> x = np.ones((2, 5, 3), np.float32)
    >>> module.apply(variables, x).shape
    (2, 4)
    >>> nnx_model = fd.from_keras(model, api='nnx')
    >>> bool(jnp.allclose(nnx_model(x), module.apply(variables, x)))
    True

  Args:
    model_or_path: a built ``keras.Model``, or the path of a ``.keras``
      file.
    api: ``'linen'`` for a linen module and its variables, ``'nnx'`` for an
      NNX model.
    rngs: with ``api='nnx'``, the ``nnx.Rngs`` the dropout layers draw from
      in training (``None``: pass ``rngs=`` when calling the model).

  Returns:
    With ``api='linen'``, ``(module, variables)``: a
    :class:`KerasSequential` and ``{'params': ..., 'constants': ...}``
    (collections without weights left out), keyed by the Keras layer names.
    With ``api='nnx'``, a :class:`flax_dense.nnx.KerasSequential`.

  Raises:
    ImportError: if Keras 3 is not installed.
    ValueError: for an unknown ``api``, ``rngs`` given with
      ``api='linen'``, a layer, activation, regularizer or EinsumDense
      equation that is not covered (naming the layer and listing what is),
      a model that is not a single chain, a subclassed or unbuilt model, or
      anything other than a Keras model or a path.
    TypeError: for ``rngs`` that is not an ``nnx.Rngs``.
  """
  if api not in APIS:
    raise ValueError(
      f'from_keras: api must be one of {APIS} (the front end of the model it'
      f' returns), got {api!r}.'
    )
  if api == 'nnx' and rngs is not None and not isinstance(rngs, nnx.Rngs):
    raise TypeError(
      'from_keras: rngs must be an nnx.Rngs (the streams of the dropout'
      f' layers) or None, got {rngs!r}.'
    )
  if api == 'linen' and rngs is not None:
    raise ValueError(
      "from_keras: rngs is for api='nnx', whose dropout layers keep their"
      ' streams; a linen module takes rngs= when applied, got'
      f' rngs={rngs!r} with api={api!r}.'
    )
  keras = _import_keras()
  model = model_or_path
  if isinstance(model, str | os.PathLike):
    model = keras.saving.load_model(model, compile=False)
  if not isinstance(model, keras.Model):
    raise ValueError(
      'from_keras: expected a keras.Model or the path of a .keras file, got'
      f' {type(model_or_path).__name__}.'
    )
  converters = _converters(keras)
  layers, names, flows = [], [], []
  variables: dict[str, dict[str, Any]] = {}
  for layer in _chain(keras, model):
    steps, trainable = _convert(keras, converters, layer)
    for step in steps:
      if step.name in names:
        raise ValueError(
          f"from_keras: two layers would be named '{step.name}'; rename the"
          ' Keras layer of that name.'
        )
      module = step.module
      if step.params:
        collection = 'params' if trainable else CONSTANTS
        variables.setdefault(collection, {})[step.name] = step.params
        if not trainable:
          module = frozen(module)
      layers.append(module)
      names.append(step.name)
      flows.append(step.mask_flow)
  module = KerasSequential(tuple(layers), tuple(names), tuple(flows))
  variables = jax.tree.map(jnp.asarray, variables)
  if api == 'linen':
    return module, variables
  # Imported here: the NNX converter imports this module.
  from flax_dense._src.nnx.convert import from_linen

  return from_linen(module, variables, rngs=rngs)
