"""Import Keras 3 models and Keras weights into flax_dense modules."""

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flax_dense._src import checks
from flax_dense._src.interop import keras_h5
from flax_dense._src.interop.keras_graph import (
  MASK_FLOWS,
  MERGES,
  OPERATIONS,
  KerasFunctional,
  Node,
  apply_steps,
  freeze,
  merge,
)
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
from flax_dense._src.variables import CONSTANTS, Constant

# ---------------------------------------------------------------------------
# Raw weights, pure NumPy.

#: Kinds of :func:`keras_weights_to_params`: the layout of the Keras kernel
#: and the flax_dense layer whose params it becomes.
WEIGHT_KINDS: dict[str, tuple[str, str]] = {
  'dense': ('(in_features, units)', 'flax.linen.Dense'),
  'dense2d': ('(positions, in_features, units)', 'PerPositionDense'),
  'einsum_dense': ('(positions, in_features, units)', 'PerPositionDense'),
  'locally_connected1d': (
    '(output_length, kernel_size * in_features, filters)',
    'PerPositionDense (kernel_size 1) or LocallyConnected1D',
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
  kind: str, weights: Sequence[Any], *, kernel_size: int = 1
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
  ``'locally_connected1d'``   ``(P, k * D, K)``    ``PerPositionDense(K)``
                                                   (``k = 1``) or
                                                   ``LocallyConnected1D(K,
                                                   k)``
  ==========================  ===================  ==========================

  ``'einsum_dense'`` is ``EinsumDense('abc,bcd->abd', bias_axes='bd')``;
  ``'dense2d'`` the classic custom ``Dense2D`` layer (kernel
  ``(P, D, units)``, bias ``(P, units)``); ``'locally_connected1d'`` the
  tf.keras ``LocallyConnected1D(units, kernel_size=1)`` of the default
  ``implementation=1``, whose kernel ``(output_length, kernel_size *
  input_dim, filters)`` is ``(P, D, units)`` for ``kernel_size=1``; give
  the layer's ``kernel_size`` for a larger window, whose kernel
  :class:`LocallyConnected1D` takes as it is (other implementations'
  layouts: ``flax_dense._src.interop.keras_h5.locally_connected1d_weights``).
  The bias is ``(K,)`` for ``'dense'`` and ``(P, K)`` for the others.

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
    kernel_size: for ``'locally_connected1d'``, the layer's window, whose
      multiple the kernel's middle axis must be.

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
  if not isinstance(kernel_size, int) or isinstance(kernel_size, bool):
    raise TypeError(
      f'{caller}: kernel_size must be an int, got {kernel_size!r}.'
    )
  if kernel_size < 1 or (kind != 'locally_connected1d' and kernel_size != 1):
    raise ValueError(
      f'{caller}: kernel_size must be a positive int, and 1 unless kind is'
      f" 'locally_connected1d', got {kernel_size}."
    )
  if kernel.shape[1] % kernel_size:
    raise ValueError(
      f'{caller}: the kernel of shape {kernel.shape} must be {layout}, but'
      f' {kernel.shape[1]} is no multiple of kernel_size={kernel_size}.'
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

  Raises:
    TypeError: if ``layers``, ``names`` or ``mask_flow`` is not a tuple or
      list (of strings, for the last two).
    ValueError: for a count that differs from the layers' or an unknown
      flow.
  """
  if not isinstance(layers, tuple | list):
    raise TypeError(
      f'{container}: layers must be a tuple or list of modules, got'
      f' {layers!r} of type {type(layers).__name__}.'
    )
  count = len(layers)
  for field, value in (('names', names), ('mask_flow', mask_flow)):
    if value is not None and (
      not isinstance(value, tuple | list)
      or not all(isinstance(entry, str) for entry in value)
    ):
      raise TypeError(
        f'{container}: {field} must be None or a tuple of strings, one per'
        f' layer, got {value!r} of type {type(value).__name__}.'
      )
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

  Shared by the linen and NNX ``KerasSequential``; see
  :func:`~flax_dense._src.interop.keras_graph.apply_steps`.

  Returns:
    The last layer's outputs.
  """
  outputs, _ = apply_steps(
    layers, mask_flow, range(len(layers)), inputs, None, call
  )
  return outputs


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

  def __post_init__(self):
    # A module must hash to be a static jit argument; clone() passes the
    # tuples back in, which stay as they are.
    for field in ('layers', 'names', 'mask_flow'):
      object.__setattr__(self, field, freeze(getattr(self, field)))
    super().__post_init__()

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
    deterministic = checks.check_bool(
      deterministic, 'KerasSequential', 'deterministic'
    )

    def call(index, layer, inputs, kwargs):
      if self.names is not None:
        layer = layer.clone(parent=self, name=self.names[index])
      if getattr(layer, 'deterministic', False) is None:
        kwargs['deterministic'] = deterministic
      return layer(inputs, **kwargs)

    return apply_sequential(self.layers, self.mask_flow, inputs, call)


# ---------------------------------------------------------------------------
# Keras layers to flax_dense modules, from class name, config and weights.


@dataclasses.dataclass(frozen=True)
class _Layer:
  """One Keras layer as both sources give it.

  Attributes:
    class_name: the Keras class name (``'Dense'``).
    name: the layer's name.
    config: ``layer.get_config()``, or the ``config`` of the file's
      ``model_config`` entry.
    weights: ``layer.get_weights()``, or the arrays the file holds.
    source: where it comes from, for messages (``"model 'm'"``,
      ``"file 'm.h5'"``).
    keras_type: the class of a live layer, ``None`` for a file.
  """

  class_name: str
  name: str
  config: dict[str, Any]
  weights: list[np.ndarray]
  source: str
  keras_type: type | None = None
  input_shape: tuple[int, ...] | None = None

  def describe(self) -> str:
    return f"{self.class_name} layer '{self.name}' of {self.source}"


@dataclasses.dataclass(frozen=True)
class _Step:
  """One module of the imported model and its weights."""

  name: str
  module: nn.Module
  mask_flow: str
  variables: dict[str, dict[str, np.ndarray]] = dataclasses.field(
    default_factory=dict
  )


def _error(layer: _Layer, message: str) -> ValueError:
  return ValueError(f'from_keras: {layer.describe()} {message}')


def _activation_name(layer: _Layer, activation: Any) -> str:
  """Our name of a Keras activation, checked against the ones we know."""
  if activation is None:
    return 'linear'
  if isinstance(activation, str) and activation.lower() in KERAS_ACTIVATIONS:
    return activation.lower()
  raise _error(
    layer,
    f'has activation {activation!r}, which flax_dense does not know;'
    f' expected one of {", ".join(sorted(KERAS_ACTIVATIONS))}.',
  )


class _Dtypes(TypedDict, total=False):
  """A layer's dtype arguments, typed by key for ``**`` unpacking."""

  dtype: str
  param_dtype: str


def _dtypes(config: dict[str, Any]) -> _Dtypes:
  """``dtype`` and ``param_dtype`` of a Keras 2 or 3 ``dtype`` config."""
  dtype = config.get('dtype')
  if isinstance(dtype, dict):
    dtype = dtype.get('config', {}).get('name')
  if not isinstance(dtype, str):
    return {}
  if dtype.startswith('mixed_'):
    return {'dtype': dtype.removeprefix('mixed_'), 'param_dtype': 'float32'}
  return {'dtype': dtype, 'param_dtype': dtype}


def _params(layer: _Layer, kind: str, **options: Any) -> dict[str, Any]:
  try:
    return keras_weights_to_params(kind, layer.weights, **options)
  except ValueError as error:
    raise _error(layer, f'has weights that do not fit: {error}') from None


def _check_units(layer: _Layer, params: dict, units: int, field: str):
  if params['kernel'].shape[-1] != units:
    raise _error(
      layer,
      f'has {field}={units} in its config but a kernel of shape'
      f' {params["kernel"].shape}.',
    )


def _with_activation(
  layer: _Layer, steps: list[_Step], activation: Any
) -> list[_Step]:
  name = _activation_name(layer, activation)
  if name != 'linear':
    module = Activation(name)
    steps.append(_Step(f'{layer.name}_activation', module, 'propagate'))
  return steps


def _dense(layer: _Layer) -> list[_Step]:
  config = layer.config
  params = _params(layer, 'dense')
  _check_units(layer, params, config['units'], 'units')
  use_bias = config.get('use_bias', True)
  if use_bias != ('bias' in params):
    raise _error(
      layer, f'has use_bias={use_bias} but {len(layer.weights)} weights.'
    )
  dense = nn.Dense(config['units'], use_bias=use_bias, **_dtypes(config))
  step = _Step(layer.name, dense, 'propagate', {'params': params})
  return _with_activation(layer, [step], config.get('activation'))


def _canonical_equation(equation: str) -> str:
  """``equation`` with its letters renamed a, b, c, ... in order of use."""
  letters: dict[str, str] = {}
  for char in equation:
    if char.isalpha() and char not in letters:
      letters[char] = 'abcdefghijklmnopqrstuvwxyz'[len(letters)]
  return ''.join(letters.get(char, char) for char in equation)


def _einsum_dense(layer: _Layer) -> list[_Step]:
  config = layer.config
  equation = config['equation'].replace(' ', '')
  bias_axes = config.get('bias_axes')
  # Renaming the equation's letters renames the bias axes alike.
  canonical = _canonical_equation(f'{equation}|{bias_axes or ""}')
  if canonical not in ('abc,bcd->abd|', 'abc,bcd->abd|bd'):
    raise _error(
      layer,
      f'has equation {equation!r} with bias_axes {bias_axes!r}; flax_dense'
      " imports the per-position form 'abc,bcd->abd' with bias_axes 'bd' or"
      ' None (PerPositionDense).',
    )
  params = _params(layer, 'einsum_dense')
  module = PerPositionDense(
    params['kernel'].shape[-1],
    use_bias='bias' in params,
    activation=_activation_name(layer, config.get('activation')),
    **_dtypes(config),
  )
  return [_Step(layer.name, module, 'drop', {'params': params})]


def _const_product(layer: _Layer) -> list[_Step]:
  """flax_dense's own Keras ``ConstProduct`` (what ``to_keras_model`` makes).

  A frozen layer keeps its weights as ``ConstProduct``'s constants, the
  way the linen layer stores them, rather than through :func:`frozen`.
  """
  shapes = [np.shape(w) for w in layer.weights]
  units = layer.config.get('units')
  if len(shapes) != 1 or shapes[0] != (units,):
    raise _error(
      layer,
      f'has weights of shapes {shapes}; expected one kernel of shape'
      f' ({units},) for units={units!r}.',
    )
  (kernel,) = layer.weights
  if layer.config.get('trainable', True):
    module = ConstProduct(trainable=True)
    return [_Step(layer.name, module, 'drop', {'params': {'kernel': kernel}})]
  module = ConstProduct(weights=kernel, trainable=False)
  return [_Step(layer.name, module, 'drop', {CONSTANTS: {'kernel': kernel}})]


def _single(layer: _Layer, field: str, default: Any = None) -> int:
  value = layer.config.get(field, default)
  if isinstance(value, list | tuple) and len(value) == 1:
    value = value[0]
  if not isinstance(value, int) or isinstance(value, bool):
    raise _error(layer, f'has {field}={value!r}; expected an int.')
  return value


def _locally_connected_1d(layer: _Layer) -> list[_Step]:
  """tf.keras's ``LocallyConnected1D``, any ``implementation``.

  ``kernel_size=1, strides=1`` (channels-last) is a :class:`PerPositionDense`,
  anything else a :class:`LocallyConnected1D`, both in implementation 1's
  layout (``keras_h5.locally_connected1d_weights``).
  """
  config = layer.config
  if config.get('padding', 'valid') != 'valid':
    raise _error(
      layer,
      f'has padding={config.get("padding")!r}; Keras 2 builds'
      " LocallyConnected1D with padding='valid' only.",
    )
  kernel_size = _single(layer, 'kernel_size')
  strides = _single(layer, 'strides', 1)
  data_format = config.get('data_format') or 'channels_last'
  implementation = config.get('implementation', 1)
  try:
    shape = layer.input_shape
    if shape is not None and len(shape) == 2:
      config = {**config, 'batch_input_shape': [None, *shape]}
    input_length, in_features = keras_h5._locally_connected_1d_input(
      config, layer.weights, kernel_size, strides
    )
    weights = keras_h5.locally_connected1d_weights(
      layer.weights,
      implementation,
      input_length,
      in_features,
      kernel_size,
      strides,
      config['filters'],
      data_format,
    )
  except (ValueError, IndexError) as error:
    raise _error(
      layer,
      f'(implementation={implementation}) has weights of shapes'
      f' {[tuple(w.shape) for w in layer.weights]} that do not fit its'
      f' config: {error}',
    ) from None
  params = _params(
    dataclasses.replace(layer, weights=weights),
    'locally_connected1d',
    kernel_size=kernel_size,
  )
  activation = _activation_name(layer, config.get('activation'))
  options: dict[str, Any] = dict(
    use_bias='bias' in params, activation=activation, **_dtypes(config)
  )
  if kernel_size == 1 and strides == 1 and data_format == 'channels_last':
    module = PerPositionDense(config['filters'], **options)
  else:
    module = LocallyConnected1D(
      config['filters'],
      kernel_size,
      strides=strides,
      data_format=data_format,
      **options,
    )
  return [_Step(layer.name, module, 'drop', {'params': params})]


def _time_distributed(layer: _Layer) -> list[_Step]:
  """``TimeDistributed(Dense)``: a Dense acts on the last axis anyway."""
  inner = layer.config.get('layer')
  if not isinstance(inner, dict) or inner.get('class_name') != 'Dense':
    class_name = inner.get('class_name') if isinstance(inner, dict) else inner
    raise _error(
      layer,
      f'wraps {class_name!r}; flax_dense imports TimeDistributed(Dense).',
    )
  wrapped = dataclasses.replace(
    layer, class_name='Dense', config=inner.get('config', {})
  )
  steps = _dense(wrapped)
  # Named after the wrapper, which holds the weights in Keras.
  return [
    dataclasses.replace(
      step, name=step.name.replace(wrapped.name, layer.name, 1)
    )
    if step.name.startswith(wrapped.name)
    else step
    for step in steps
  ]


@dataclasses.dataclass(frozen=True)
class _Converter:
  """How one Keras layer class becomes steps of the imported model.

  Attributes:
    makes: the module types its steps can hold (the registry test reads
      them: a public layer must be made by some converter, or be listed in
      :data:`NOT_IMPORTED`); also the "becomes" column of the table in
      docs/keras_import.md.
    convert: the layer to its steps.
    becomes: what it becomes, in words, for the table.
  """

  makes: tuple[type[nn.Module], ...]
  convert: Callable[[_Layer], list[_Step]]
  becomes: str = ''


def _weightless(
  module_type: type[nn.Module],
  mask_flow: str,
  arguments: Callable[[_Layer], dict[str, Any]] | None = None,
) -> _Converter:
  """The converter of a Keras layer without weights: one ``module_type``.

  Args:
    module_type: the flax_dense layer.
    mask_flow: what it does with the mask.
    arguments: ``arguments(layer)``, the module's keyword arguments;
      default: each of its fields that the Keras config holds under the
      same name and not as ``None``, lists as tuples (a module must hash).
  """

  def fields_from_config(layer: _Layer) -> dict[str, Any]:
    return {
      field.name: freeze(value)
      for field in dataclasses.fields(module_type)
      if field.init
      and field.name not in ('parent', 'name')
      and (value := layer.config.get(field.name)) is not None
    }

  arguments = arguments or fields_from_config

  def convert(layer: _Layer) -> list[_Step]:
    module = module_type(**arguments(layer))
    return [_Step(layer.name, module, mask_flow)]

  return _Converter((module_type,), convert, f'``{module_type.__name__}``')


def _no_step(layer: _Layer) -> list[_Step]:
  del layer
  return []


def _merge_converter(class_name: str) -> _Converter:
  return _Converter((), _no_step, 'a merge node of ``KerasFunctional``')


#: Every Keras layer class :func:`from_keras` covers, by class name, and its
#: converter. Live models and ``.h5`` files share them.
CONVERTERS: dict[str, _Converter] = {
  'Activation': _weightless(
    Activation,
    'propagate',
    lambda layer: {
      'activation': _activation_name(layer, layer.config['activation'])
    },
  ),
  # Its penalty is added as any layer's activity_regularizer, in _convert.
  'ActivityRegularization': _Converter(
    (ActivityRegularization,), _no_step, '``ActivityRegularization``'
  ),
  'Dense': _Converter(
    (nn.Dense, Activation),
    _dense,
    '``flax.linen.Dense`` (any input rank), then ``Activation``',
  ),
  'Dropout': _weightless(Dropout, 'propagate'),
  'EinsumDense': _Converter(
    (PerPositionDense,),
    _einsum_dense,
    "``PerPositionDense`` (equation ``'abc,bcd->abd'``)",
  ),
  'Flatten': _weightless(Flatten, 'drop'),
  'GlobalAveragePooling1D': _weightless(GlobalAveragePooling1D, 'consume'),
  # Keras 3's GlobalMaxPooling1D takes no mask: the max of every step.
  'GlobalMaxPooling1D': _weightless(GlobalMaxPooling1D, 'drop'),
  'InputLayer': _Converter((), _no_step, 'an input of the model'),
  'LocallyConnected1D': _Converter(
    (PerPositionDense, LocallyConnected1D),
    _locally_connected_1d,
    '``PerPositionDense`` (``kernel_size=1, strides=1``), else'
    ' ``LocallyConnected1D`` (tf.keras 2 ``.h5`` files)',
  ),
  'Masking': _weightless(Masking, 'compute'),
  'Permute': _weightless(Permute, 'drop'),
  'RepeatVector': _weightless(RepeatVector, 'drop'),
  'Reshape': _weightless(Reshape, 'drop'),
  # SpatialDropout1D has no data_format in Keras: always channels-last.
  'SpatialDropout1D': _weightless(SpatialDropout1D, 'propagate'),
  'SpatialDropout2D': _weightless(SpatialDropout2D, 'propagate'),
  'SpatialDropout3D': _weightless(SpatialDropout3D, 'propagate'),
  'TimeDistributed': _Converter(
    (nn.Dense, Activation),
    _time_distributed,
    '``TimeDistributed(Dense)``: ``flax.linen.Dense``, then ``Activation``',
  ),
  **{name: _merge_converter(name) for name in MERGES},
  # The Keras layer fd.to_keras_model makes of a ConstProduct.
  'flax_dense>ConstProduct': _Converter(
    (ConstProduct,),
    _const_product,
    "``ConstProduct`` (flax_dense's own Keras layer, from"
    ' ``fd.to_keras_model``)',
  ),
}

#: The converters of :func:`register_keras_layer`, by Keras class name.
_REGISTERED: dict[str, _Converter] = {}

#: The public layers no built-in converter makes, and why. The registry
#: test fails for a public layer that is neither made by a converter of
#: :data:`CONVERTERS` nor listed here.
NOT_IMPORTED: dict[type[nn.Module], str] = {
  AttentionDecoder: (
    'a custom layer of a Keras tutorial, not a keras.layers class: import'
    ' its weights by name, which it keeps'
  ),
  Lambda: (
    "a Keras Lambda holds Python code for Keras's backend, not a JAX"
    ' function: rebuild it as fd.Lambda(function)'
  ),
  MultiIODense: (
    'a custom layer of a Keras tutorial (MyLayer), not a keras.layers'
    ' class: register a converter (examples/keras_custom_layers.py has one)'
  ),
}


def _registered_converter(converter: Callable[..., Any]) -> _Converter:
  """A user's ``converter(class_name, config, weights)`` as a _Converter."""

  def convert(layer: _Layer) -> list[_Step]:
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
    return [_Step(layer.name, module, 'drop', variables)]

  return _Converter((), convert, 'registered')


def register_keras_layer(
  keras_class_or_class_name: type | str,
  converter: Callable[
    [str, dict[str, Any], list[np.ndarray]],
    nn.Module | tuple[nn.Module, dict[str, Any]],
  ],
) -> None:
  """Teaches :func:`from_keras` a Keras layer class of your own.

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
  the same converter. Registering a name again replaces its converter.

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
  if class_name in CONVERTERS:
    raise ValueError(
      f'register_keras_layer: {class_name} is a Keras layer flax_dense'
      ' imports itself; give your layer class a name of its own.'
    )
  _REGISTERED[class_name] = _registered_converter(converter)


def _regularization(layer: _Layer) -> nn.Module | None:
  """The layer's Keras ``activity_regularizer`` as a flax_dense layer."""
  config = layer.config
  if layer.class_name == 'ActivityRegularization':
    regularizer = {'class_name': 'L1L2', 'config': config}
  else:
    regularizer = config.get('activity_regularizer')
  if regularizer is None:
    return None
  if (
    not isinstance(regularizer, dict)
    or regularizer.get('class_name') not in ('L1', 'L2', 'L1L2')
    or (regularizer.get('module') or 'keras.regularizers').split('.')[-1]
    != 'regularizers'
  ):
    raise _error(
      layer,
      f'has activity_regularizer {regularizer!r}; flax_dense imports L1, L2'
      ' and L1L2 (as ActivityRegularization).',
    )
  options = regularizer.get('config') or {}
  return ActivityRegularization(
    float(options.get('l1') or 0.0), float(options.get('l2') or 0.0)
  )


def _converter(layer: _Layer) -> _Converter:
  registered = _REGISTERED.get(layer.class_name.rpartition('>')[2])
  # A live layer of a class of our own goes by its registered name; a file
  # names it so already.
  module = '' if layer.keras_type is None else layer.keras_type.__module__
  own = module.startswith('flax_dense')
  key = f'flax_dense>{layer.class_name}' if own else layer.class_name
  converter = registered or CONVERTERS.get(key)
  if converter is None or (
    module and registered is None and not module.startswith('keras') and not own
  ):
    covered = ', '.join(sorted(CONVERTERS))
    raise ValueError(
      f'from_keras: {layer.describe()} is not covered; flax_dense imports'
      f' {covered} (docs/keras_import.md). For a layer of your own,'
      f" register a converter: fd.register_keras_layer('{layer.class_name}',"
      ' converter); or rebuild that part of the model in Flax.'
    )
  return converter


def _built_in_steps(converter: _Converter, layer: _Layer) -> list[_Step]:
  """A built-in converter's steps; a config it cannot read is our error.

  A file's config may hold a value of the wrong type or lack a key Keras
  always writes; the module's own checks or the converter fail then.
  """
  try:
    return converter.convert(layer)
  except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
    message = str(error)
    if message.startswith('from_keras:'):
      raise
    kind = TypeError if isinstance(error, TypeError) else ValueError
    raise kind(
      f'from_keras: {layer.describe()} has a config that flax_dense cannot'
      f' import ({type(error).__name__}: {message})'
    ) from None


def _convert(layer: _Layer, trainable: bool) -> list[_Step]:
  """The steps of one Keras layer, frozen ones wrapped to use constants."""
  converter = _converter(layer)
  if converter.becomes == 'registered':
    steps = converter.convert(layer)
  else:
    steps = _built_in_steps(converter, layer)
  regularization = _regularization(layer)
  if regularization is not None:
    name = f'{layer.name}_activity_regularizer' if steps else layer.name
    steps.append(_Step(name, regularization, 'propagate'))
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
    init=False,
    mutable=True,
  )
  fields = {
    field.name: getattr(module, field.name)
    for field in dataclasses.fields(module)
    if field.init and field.name not in ('parent', 'name')
  }
  return frozen_type(**fields)


# ---------------------------------------------------------------------------
# A model's config to a graph of steps.


def _tensors(value: Any) -> list[tuple[str, int, int]]:
  """The ``(layer, node, tensor)`` references in a Keras 3 call's args."""
  if isinstance(value, dict):
    if value.get('class_name') == '__keras_tensor__':
      history = value['config']['keras_history']
      if not keras_h5.is_reference(history):
        raise ValueError(f'has a tensor reference {history!r:.60}')
      return [tuple(history[:3])]
    return [ref for item in value.values() for ref in _tensors(item)]
  if isinstance(value, list | tuple):
    return [ref for item in value for ref in _tensors(item)]
  return []


def _inbound(node: Any) -> list[tuple[str, int, int]]:
  """A node's input references, Keras 2 (lists) or Keras 3 (args) spelling.

  Keras 3 writes ``{'args': [...], 'kwargs': {...}}`` with tensors as
  ``{'class_name': '__keras_tensor__', 'config': {'keras_history': [layer,
  node, tensor]}}``; its ``mask`` keyword is Keras's own mask, which the
  graph recomputes. Keras 2 writes ``[[layer, node, tensor, kwargs],
  ...]``.
  """
  if isinstance(node, dict):
    kwargs = node.get('kwargs', {})
    if not isinstance(kwargs, dict):
      raise ValueError(f'has kwargs {kwargs!r:.60}, not an object')
    kwargs = {k: v for k, v in kwargs.items() if k != 'mask'}
    refs = _tensors(node.get('args', []))
    if _tensors(kwargs):
      raise ValueError('takes tensors as keyword arguments')
    return refs
  if not isinstance(node, list | tuple) or not all(
    map(keras_h5.is_reference, node)
  ):
    raise ValueError(
      f'has an inbound node {node!r:.60}, not a list of [layer, node,'
      ' tensor] references'
    )
  return [(ref[0], ref[1], ref[2]) for ref in node]


def _endpoints(value: Any) -> tuple[list[tuple[str, int, int]], bool]:
  """``input_layers`` / ``output_layers``: references, and whether single."""
  if keras_h5.is_reference(value):
    return [tuple(value[:3])], True
  if isinstance(value, dict):
    refs = _tensors(value)
    if refs:
      return refs, False
    value = list(value.values())
  if (
    not isinstance(value, list | tuple)
    or not value
    or not all(map(keras_h5.is_reference, value))
  ):
    raise ValueError(
      f'has inputs or outputs {value!r:.60}, not a non-empty list of'
      ' [layer, node, tensor] references'
    )
  return [tuple(ref[:3]) for ref in value], False


@dataclasses.dataclass
class _Model:
  """What :func:`from_keras` reads from either source."""

  name: str
  class_name: str
  config: dict[str, Any]
  layers: dict[str, _Layer]
  trainable: dict[str, bool]
  source: str
  keras3: bool
  #: The ``keras.ops`` calls of the graph, by name: ``'module.Class'``.
  operations: dict[str, str] = dataclasses.field(default_factory=dict)


def _input_shape(config: dict[str, Any], where: str) -> tuple[int, ...] | None:
  """The per-example shape an InputLayer (or first layer) config gives.

  Raises:
    ValueError: naming ``where``, for a shape that is not a list of sizes.
  """
  shape = config.get('batch_shape') or config.get('batch_input_shape')
  if not shape:
    return None
  if not isinstance(shape, list | tuple) or not all(
    size is None or (checks.is_int(size) and size > 0) for size in shape
  ):
    raise ValueError(
      f'from_keras: {where} gives the input shape {shape!r:.60}, not a list'
      ' of sizes (null for any).'
    )
  if any(size is None for size in shape[1:]):
    return None
  return tuple(shape[1:])


def _abstract(shape: tuple[int, ...] | None) -> Any:
  """An abstract batch of one of ``shape``, or ``None`` when unknown."""
  if shape is None:
    return None
  return jax.ShapeDtypeStruct((1, *shape), jnp.float32)


def _abstract_outputs(
  layer: _Layer, run: Callable[..., Any], given: Sequence[Any]
) -> Any:
  """``jax.eval_shape(run, *given)``, a layer's failure as our own error.

  Weights that do not fit the inputs the config gives fail here, in the
  layer's own checks or in Flax's (``ScopeParamShapeError``).
  """
  try:
    return jax.eval_shape(run, *given)
  except (TypeError, ValueError, flax.errors.FlaxError) as error:
    raise ValueError(
      f'from_keras: {layer.describe()} cannot take inputs of shapes'
      f' {[tuple(x.shape[1:]) for x in given]} (per example) with its'
      f' weights {[tuple(w.shape) for w in layer.weights]}:'
      f' {str(error).splitlines()[0]}'
    ) from None


def _check_weights_used(model: _Model, used: set[str]) -> None:
  """Fails unless every layer holding weights gave them to the model."""
  unused = [
    name
    for name, layer in model.layers.items()
    if layer.weights and name not in used
  ]
  if unused:
    raise ValueError(
      f'from_keras: the weights of the layers {unused} of {model.source}'
      ' would be dropped: no output of the model depends on them, or their'
      ' layer class takes no weights; the model is damaged, or register a'
      ' converter for such a layer (fd.register_keras_layer).'
    )


def _build(model: _Model) -> tuple[nn.Module, dict[str, Any]]:
  """The linen module of ``model`` and its variables.

  Shapes are followed along the graph (abstractly, with ``jax.eval_shape``)
  where the inputs' are known, since a ``LocallyConnected1D``'s weights do
  not always tell its input's.
  """
  steps_of: dict[str, tuple[int, ...]] = {}
  used: set[str] = set()
  modules, names, flows = [], [], []
  variables: dict[str, dict[str, Any]] = {}

  def steps(layer_name: str, given: list[Any]) -> tuple[int, ...]:
    if layer_name not in steps_of:
      layer = model.layers[layer_name]
      if len(given) == 1 and given[0] is not None:
        layer = dataclasses.replace(
          layer, input_shape=tuple(given[0].shape[1:])
        )
      indices = []
      for step in _convert(layer, model.trainable[layer_name]):
        if step.variables:
          used.add(layer_name)
        if step.name in names:
          raise ValueError(
            f'from_keras: two layers of {model.source} would be named'
            f" '{step.name}'; rename the Keras layer of that name."
          )
        for collection, tree in step.variables.items():
          variables.setdefault(collection, {})[step.name] = tree
        indices.append(len(modules))
        modules.append(step.module)
        names.append(step.name)
        flows.append(step.mask_flow)
      steps_of[layer_name] = tuple(indices)
      if layer.weights and layer_name not in used:
        _check_weights_used(model, {*model.layers} - {layer_name})
    return steps_of[layer_name]

  def shapes_after(layer_name: str, indices, given: list[Any]) -> Any:
    """The abstract outputs of the steps, or ``None`` when unknown."""
    if any(x is None for x in given):
      return None

    def call(index, module, inputs, kwargs):
      if getattr(module, 'deterministic', False) is None:
        kwargs['deterministic'] = True
      own = {
        c: tree[names[index]]
        for c, tree in variables.items()
        if names[index] in tree
      }
      inputs = inputs if isinstance(inputs, list) else [inputs]
      return module.apply(own, *inputs, **kwargs)

    def run(*inputs):
      outputs, _ = apply_steps(
        modules,
        None,
        indices,
        inputs[0] if len(inputs) == 1 else list(inputs),
        None,
        call,
      )
      return outputs

    return _abstract_outputs(model.layers[layer_name], run, given)

  config = model.config
  if model.class_name == 'Sequential':
    order = [
      name
      for name in model.layers
      if model.layers[name].class_name != 'InputLayer'
    ]
    entries = list(model.layers.values())
    current = _abstract(
      _input_shape(entries[0].config, entries[0].describe())
      if entries
      else None
    ) or _abstract(
      _input_shape(
        {'batch_shape': config.get('build_input_shape')}, model.source
      )
    )
    for name in order:
      if name in model.operations:
        _operation(model, name, 0)
      _check_no_merge(model, name)
      indices = steps(name, [current])
      current = shapes_after(name, indices, [current])
    _check_weights_used(model, used)
    module = KerasSequential(tuple(modules), tuple(names), tuple(flows))
    return module, variables
  # A functional graph: nodes resolved once their inputs are.
  try:
    inputs, _ = _endpoints(config['input_layers'])
    outputs, single = _endpoints(config['output_layers'])
    pending = [
      (entry['name'], index, _inbound(node))
      for entry in config['layers']
      for index, node in enumerate(entry.get('inbound_nodes', []))
      if entry.get('class_name') != 'InputLayer'
    ]
  except (KeyError, TypeError, ValueError, IndexError) as error:
    raise ValueError(
      f'from_keras: the functional config of {model.source} is not one'
      f' Keras writes ({type(error).__name__}: {error}).'
    ) from None
  # Only the calls the outputs need: Keras 3 also records the ops that make
  # masks (NotEqual, Any), which feed mask= keywords only.
  calls = {(name, index): refs for name, index, refs in pending}
  needed, todo = set(), [ref[:2] for ref in outputs]
  while todo:
    call = todo.pop()
    if call in calls and call not in needed:
      needed.add(call)
      todo += [ref[:2] for ref in calls[call]]
  pending = [entry for entry in pending if entry[:2] in needed]
  if len(outputs) == 1:
    single = True  # Keras 3 and tf.keras return the one output itself
  tensor_of = {
    (name, node, tensor): i for i, (name, node, tensor) in enumerate(inputs)
  }
  count = len(inputs)
  shapes = [
    _abstract(
      _input_shape(model.layers[name].config, model.layers[name].describe())
    )
    for name, _, _ in inputs
  ]
  nodes = []
  while pending:
    ready = [
      entry for entry in pending if all(ref in tensor_of for ref in entry[2])
    ]
    if not ready:
      name, _, refs = pending[0]
      missing = [ref for ref in refs if ref not in tensor_of]
      raise ValueError(
        f"from_keras: layer '{name}' of {model.source} takes"
        f' {missing}, which no input or layer of the model makes.'
      )
    for entry in ready:
      pending.remove(entry)
      name, node_index, refs = entry
      layer = model.layers[name]
      uses = [
        ref[2]
        for ref in [r for e in pending for r in e[2]] + outputs
        if ref[:2] == (name, node_index)
      ]
      made = max([0, *uses]) + 1
      node_inputs = tuple(tensor_of[ref] for ref in refs)
      given = [shapes[t] for t in node_inputs]
      if name in model.operations or layer.class_name in MERGES:
        _check_made(layer, made, 1)
        _check_merge_inputs(layer, len(node_inputs))
        nodes.append(
          Node(
            node_inputs,
            merge=layer.class_name,
            options=_operation(model, name, node_index)
            if name in model.operations
            else _merge(layer, model.keras3),
          )
        )
        options = dict(nodes[-1].options)
        made_shapes = (
          [
            _abstract_outputs(
              layer,
              lambda *x, o=options, k=layer.class_name: merge(k, o, x),
              given,
            )
          ]
          if None not in given
          else [None]
        )
      else:
        indices = steps(name, given)
        nodes.append(Node(node_inputs, made, indices))
        out = shapes_after(name, indices, given)
        made_shapes = (
          ([out] if not isinstance(out, list | tuple) else list(out))
          if out is not None
          else [None] * _check_made(layer, made, _MAX_OUTPUTS)
        )
        _check_made(layer, made, len(made_shapes))
      shapes += (made_shapes + [None] * made)[:made]
      for tensor in range(made):
        tensor_of[(name, node_index, tensor)] = count + tensor
      count += made
  missing = [ref for ref in outputs if ref not in tensor_of]
  if missing:
    raise ValueError(
      f'from_keras: the outputs {missing} of {model.source} are made by no'
      ' layer of the model.'
    )
  _check_weights_used(model, used)
  output_ids = tuple(tensor_of[ref] for ref in outputs)
  chain = (
    len(inputs) == 1
    and single
    and all(
      n.inputs == (k,) and n.outputs == 1 and not n.merge
      for k, n in enumerate(nodes)
    )
    and output_ids == (count - 1,)
    and len({n.steps for n in nodes}) == len(nodes)
  )
  if chain:
    module = KerasSequential(tuple(modules), tuple(names), tuple(flows))
  else:
    module = KerasFunctional(
      tuple(modules),
      tuple(names),
      tuple(flows),
      tuple(nodes),
      len(inputs),
      output_ids,
      single,
    )
  return module, variables


#: The most outputs a layer is taken to make when its inputs' shapes are
#: unknown (so its outputs' too): a reference beyond is a damaged config.
_MAX_OUTPUTS = 64


def _check_made(layer: _Layer, used: int, makes: int) -> int:
  """``used``, or our error when the model takes more outputs than made."""
  if used > makes:
    raise ValueError(
      f'from_keras: the model takes output {used - 1} of {layer.describe()},'
      f' which makes {makes}.'
    )
  return used


def _check_merge_inputs(layer: _Layer, count: int) -> None:
  """Our error for a merge called on a number of tensors it cannot take."""
  two = layer.class_name in ('Subtract', 'Dot')
  if count == 0 or (two and count != 2):
    raise ValueError(
      f'from_keras: {layer.describe()} is called on {count} tensors; it'
      f' takes {"exactly 2" if two else "at least 1"}.'
    )


def _operation(model: _Model, name: str, node_index: int) -> tuple:
  """The merge options of a covered ``keras.ops`` call, else our error.

  Covered: ``keras.ops.add``, ``subtract``, ``multiply``, ``maximum`` and
  ``minimum`` of two tensors, called with nothing else.
  """
  operation = model.operations[name]
  class_name = operation.rpartition('.')[2]
  entry = next(e for e in model.config['layers'] if _entry_name(e) == name)
  nodes = entry.get('inbound_nodes')
  node = (
    nodes[node_index]
    if isinstance(nodes, list | tuple) and node_index < len(nodes)
    else {}
  )
  node = node if isinstance(node, dict) else {}
  args = node.get('args')
  if (
    model.class_name != 'Sequential'
    and class_name in OPERATIONS
    and isinstance(args, list | tuple)
    and len(args) == 2
    and all(
      isinstance(arg, dict) and arg.get('class_name') == '__keras_tensor__'
      for arg in args
    )
    and not node.get('kwargs')
  ):
    return (('operation', True),)
  raise ValueError(
    f"from_keras: {model.source} calls the Keras operation '{name}'"
    f' ({operation}) directly; flax_dense imports only'
    ' keras.ops.add, subtract, multiply, maximum and minimum of two'
    ' tensors. Use a Keras layer for it (keras.layers.Add and the like),'
    ' or rebuild that part of the model in Flax.'
  )


def _check_no_merge(model: _Model, name: str) -> None:
  if model.layers[name].class_name in MERGES:
    raise ValueError(
      f'from_keras: {model.layers[name].describe()} is a merge layer in a'
      ' Sequential model, which passes it a single tensor.'
    )


def _merge(layer: _Layer, keras3: bool) -> tuple[tuple[str, Any], ...]:
  """The options of a merge node; tf.keras combines masks otherwise."""
  config = layer.config
  options = () if keras3 else (('keras2', True),)
  if layer.class_name == 'Concatenate':
    axis = config.get('axis', -1)
    if not checks.is_int(axis):
      raise _error(layer, f'has axis {axis!r:.60}, not an integer.')
    return (('axis', axis), *options)
  if layer.class_name == 'Dot':
    axes = config.get('axes')
    axes = tuple(axes) if isinstance(axes, list) else axes
    if not checks.is_int(axes) and not (
      isinstance(axes, tuple)
      and len(axes) == 2
      and all(map(checks.is_int, axes))
    ):
      raise _error(layer, f'has axes {axes!r:.60}, not an integer or two.')
    normalize = checks.check_bool(
      config.get('normalize', False), layer.describe(), 'normalize'
    )
    return (('axes', axes), ('normalize', normalize))
  return options


def _layer_entries(model_config: dict[str, Any]) -> list[dict[str, Any]]:
  config = model_config.get('config', {})
  layers = config.get('layers', []) if isinstance(config, dict) else config
  return [entry for entry in layers if isinstance(entry, dict)]


def _entry_name(entry: dict[str, Any]) -> str:
  return entry.get('name') or entry.get('config', {}).get('name')


def _operation_path(entry: dict[str, Any]) -> str:
  """``'module.Class'`` of a ``keras.ops`` entry of a config, for messages."""
  return f'{entry.get("module")}.{entry.get("class_name")}'


def _nested_model_error(source: str, entry: dict[str, Any]) -> ValueError:
  return ValueError(
    f"from_keras: layer '{_entry_name(entry)}' of {source} is a"
    f' {entry.get("class_name")} model inside the model; flax_dense imports'
    ' flat models: call the inner model on keras.Input tensors of the outer'
    ' one, or import it apart.'
  )


_MODEL_CLASSES = ('Sequential', 'Functional', 'Model')


def _from_h5(path: str) -> _Model:
  model_config, weights, version = keras_h5.read_model(path, 'from_keras')
  source = f'file {path!r}'
  class_name = model_config.get('class_name')
  if class_name not in _MODEL_CLASSES:
    raise ValueError(
      f'from_keras: {path!r} holds a {class_name!r}, not a Keras'
      ' Sequential or functional model.'
    )
  layers, trainable, operations = {}, {}, {}
  for entry in _layer_entries(model_config):
    name = _entry_name(entry)
    if entry.get('class_name') in _MODEL_CLASSES:
      raise _nested_model_error(source, entry)
    config = entry['config']  # read_model checked the entries' types
    layers[name] = _Layer(
      entry['class_name'], name, config, weights.get(name, []), source
    )
    if str(entry.get('module')).startswith(('keras.src.ops.', 'keras.ops.')):
      operations[name] = _operation_path(entry)
    trainable[name] = checks.check_bool(
      config.get('trainable', True),
      f"from_keras: layer '{name}' of {source}",
      'trainable',
    )
  return _Model(
    model_config.get('config', {}).get('name', path),
    class_name,
    model_config.get('config', {}),
    layers,
    trainable,
    source,
    # Keras 3 also writes .h5 files, in its own config spelling and rules.
    keras3=version.startswith('3'),
    operations=operations,
  )


def _from_live(keras: Any, model: Any) -> _Model:
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
  source = f"model '{model.name}'"
  try:
    config = model.get_config()
  except NotImplementedError as error:
    raise ValueError(
      f'from_keras: {source} cannot give its config, which from_keras reads'
      f' its graph from: {error} (give your layers a get_config()).'
    ) from None
  layers, trainable = {}, {}
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      raise _nested_model_error(
        source, {'name': layer.name, 'class_name': type(layer).__name__}
      )
    if getattr(layer, 'lora_enabled', False) or getattr(
      layer, 'quantization_mode', None
    ):
      raise ValueError(
        f"from_keras: {type(layer).__name__} layer '{layer.name}' of"
        f' {source} uses LoRA or quantization, whose weights are not a plain'
        ' kernel and bias; import the model before enabling them.'
      )
    record = _Layer(
      type(layer).__name__,
      layer.name,
      layer.get_config(),
      [np.asarray(w) for w in layer.get_weights()],
      source,
      type(layer),
    )
    flags = {w.trainable for w in layer.weights}
    if len(flags) > 1 and record.class_name not in _REGISTERED:
      _converter(record)  # an uncovered layer gets the advice all such get
      raise _error(
        record,
        'mixes trainable and non-trainable weights, which no covered layer'
        ' does.',
      )
    layers[layer.name] = record
    trainable[layer.name] = flags != {False} and layer.trainable
  class_name = 'Sequential' if isinstance(model, keras.Sequential) else 'Model'
  # Keras 3 records a keras.ops call on the graph's tensors as an operation,
  # listed with the layers in the config but not in model.layers.
  operations = {}
  for entry in config.get('layers', []) if class_name == 'Model' else []:
    name = _entry_name(entry)
    if name not in layers:
      layers[name] = _Layer(entry['class_name'], name, {}, [], source)
      trainable[name] = False
      operations[name] = _operation_path(entry)
  return _Model(
    model.name,
    class_name,
    config,
    layers,
    trainable,
    source,
    keras3=True,
    operations=operations,
  )


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


def _check_api(api: str, rngs: Any) -> None:
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


def _read(model_or_path: Any) -> _Model:
  """The model, from a live Keras model or a file."""
  if isinstance(model_or_path, str | os.PathLike):
    path = os.fspath(model_or_path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'from_keras: no such file {path!r}.')
    if path.endswith(('.h5', '.hdf5')):
      return _from_h5(path)
    if not path.endswith('.keras'):
      raise ValueError(
        f'from_keras: {path!r} is neither a .keras file (Keras 3) nor an .h5'
        ' file (Keras 2 / tf.keras model.save).'
      )
    keras = _import_keras()
    return _from_live(keras, keras.saving.load_model(path, compile=False))
  keras = _import_keras()
  if not isinstance(model_or_path, keras.Model):
    raise ValueError(
      'from_keras: expected a keras.Model or the path of a .keras or .h5'
      f' file, got {type(model_or_path).__name__}.'
    )
  return _from_live(keras, model_or_path)


def from_keras(
  model_or_path: Any,
  *,
  api: str = 'linen',
  rngs: nnx.Rngs | None = None,
) -> tuple[nn.Module, dict[str, Any]] | nnx.Module:
  """A Keras model as a Flax module and its variables, same outputs.

  Reads a built ``keras.Sequential`` or functional ``keras.Model``, the
  path of a ``.keras`` file (loaded with Keras 3), or the path of a Keras 2
  / tf.keras ``.h5`` file written by ``model.save('model.h5')`` (read with
  h5py alone: neither TensorFlow nor Keras is imported). Each layer becomes
  its flax_dense or Flax counterpart, named as in Keras; the table of every
  covered layer and activation and what it becomes is in
  ``docs/keras_import.md`` ("Coming from Keras"), and a layer class of your
  own imports once you :func:`register_keras_layer` a converter for it.

  A chain (one input, one output, each layer called once on the one
  before) becomes a :class:`KerasSequential`; any other functional graph
  (several inputs and outputs, branches, shared layers, merges) a
  :class:`KerasFunctional`, called as ``module.apply(variables, *inputs)``
  and returning what Keras's ``model(inputs)`` returns: one array, or a
  list. Masks flow as in Keras. Weights of layers set ``trainable = False``
  go to the ``constants`` collection, so :func:`flax_dense.summary` reports
  Keras's trainable and non-trainable counts. Weight regularizers and
  constraints, which only act in training, are not carried: see
  ``fd.weight_penalty`` and ``fd.constrain``.

  With ``api='nnx'`` the model is the NNX twin
  (:class:`flax_dense.nnx.KerasSequential` or
  :class:`flax_dense.nnx.KerasFunctional`, built by
  :func:`flax_dense.nnx.from_linen`) with the weights, frozen ones as
  ``fd.nnx.Constant``. It is returned in eval mode, so ``model(x)`` equals
  Keras's ``model(x)``; ``model.train()`` turns dropout on, drawing from
  ``rngs``.

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
    model_or_path: a built ``keras.Model``, or the path of a ``.keras`` or
      ``.h5`` file.
    api: ``'linen'`` for a linen module and its variables, ``'nnx'`` for an
      NNX model.
    rngs: with ``api='nnx'``, the ``nnx.Rngs`` the dropout layers draw from
      in training (``None``: pass ``rngs=`` when calling the model).

  Returns:
    With ``api='linen'``, ``(module, variables)``: a
    :class:`KerasSequential` or :class:`KerasFunctional` and
    ``{'params': ..., 'constants': ...}`` (collections without weights left
    out), keyed by the Keras layer names. With ``api='nnx'``, the NNX twin.

  Raises:
    ImportError: if Keras 3 is needed (a live model, a ``.keras`` file) and
      not installed.
    FileNotFoundError: for a path with no file.
    ValueError: for an unknown ``api``, ``rngs`` given with
      ``api='linen'``, a layer, activation, regularizer or EinsumDense
      equation that is not covered (naming the layer and its class, and how
      to register a converter), a subclassed or unbuilt model, a nested
      model, a file that is not a Keras model (corrupt, truncated,
      weights-only, written by Keras 1, a ``model_config`` of the wrong
      shape, text that is not UTF-8) or whose weights disagree with its
      config or input shape, weights the model would drop (a layer no
      output needs, a weightless layer class), a ``keras.ops`` call other
      than ``add``, ``subtract``, ``multiply``, ``maximum`` or ``minimum``
      of two tensors (naming the operation), or anything other than a Keras
      model or a path.
    TypeError: for ``rngs`` that is not an ``nnx.Rngs``, or a layer of a
      file whose ``trainable`` is not a boolean.
  """
  _check_api(api, rngs)
  module, variables = _build(_read(model_or_path))
  variables = jax.tree.map(jnp.asarray, variables)
  if api == 'linen':
    return module, variables
  # Imported here: the NNX converter imports this module.
  from flax_dense._src.nnx.convert import from_linen

  return from_linen(module, variables, rngs=rngs)


# ---------------------------------------------------------------------------
# Keras 3 weights-only files.


def _keras_order(names: Sequence[str]) -> list[str]:
  """Weight names in Keras's ``get_weights()`` order: kernel, then bias."""
  return sorted(names, key=lambda name: (name != 'kernel', name != 'bias'))


def load_keras_weights(
  module_or_variables: Any, path: str | os.PathLike
) -> Any:
  """Weights from a Keras weights file into an imported model.

  Reads ``path``, a Keras 3 ``model.save_weights('x.weights.h5')`` file (or
  a Keras 2 ``save_weights('x.h5')`` one) with h5py alone, and puts each
  Keras layer's arrays into the layer of the same name: its ``kernel``,
  then its ``bias``, Keras's order. Every layer with weights in the target
  must be in the file and the other way round, and every array must have
  the shape already there.

  Example usage::

    >>> import flax_dense as fd, jax, jax.numpy as jnp
    >>> module, variables = fd.from_keras(
    ...     'tests/fixtures/functional.h5')
    >>> loaded = fd.load_keras_weights(
    ...     variables, 'tests/fixtures/keras3.weights.h5')
    >>> jax.tree.map(jnp.shape, loaded) == jax.tree.map(jnp.shape, variables)
    True

  Args:
    module_or_variables: the variables ``from_keras`` returned (linen;
      ``{'params': {layer: {'kernel', 'bias'}}, 'constants': ...}``), or an
      NNX model it returned (``api='nnx'``).
    path: the weights file.

  Returns:
    For variables, new variables of the same structure holding the file's
    weights (the given ones are left alone). For an NNX model, the same
    model, its weights replaced in place.

  Raises:
    FileNotFoundError: if there is no file at ``path``.
    ValueError: for a file that is not a readable Keras weights file (a
      whole-model file, corrupt, Keras 1), layers missing on either side,
      or weights of other shapes than the model's.
    TypeError: for a target that is neither variables nor an NNX model.
  """
  caller = 'load_keras_weights'
  path = os.fspath(path)
  weights, _ = keras_h5.read_weights(path, caller)
  is_nnx = isinstance(module_or_variables, nnx.Module)
  if is_nnx:
    tree = _nnx_layers(module_or_variables)
  elif isinstance(module_or_variables, dict):
    tree = {
      layer: values
      for collection in ('params', CONSTANTS)
      for layer, values in module_or_variables.get(collection, {}).items()
    }
  else:
    raise TypeError(
      f'{caller}: expected the variables from_keras returned or an NNX model'
      f' it returned, got {type(module_or_variables).__name__}.'
    )
  with_weights = {name for name, arrays in weights.items() if arrays}
  if with_weights != set(tree):
    raise ValueError(
      f'{caller}: {path!r} holds weights of the layers'
      f' {sorted(with_weights)}, the model of {sorted(tree)}; they must be'
      ' the same.'
    )
  loaded: dict[str, dict[str, Any]] = {}
  for layer, values in tree.items():
    names = _keras_order(list(values))
    arrays = weights[layer]
    shapes = [tuple(np.shape(values[name])) for name in names]
    if [tuple(a.shape) for a in arrays] != shapes:
      raise ValueError(
        f'{caller}: {path!r}: layer {layer!r} holds weights of shapes'
        f' {[tuple(a.shape) for a in arrays]}, the model needs {names} of'
        f' shapes {shapes}.'
      )
    loaded[layer] = {
      name: jnp.asarray(array)
      for name, array in zip(names, arrays, strict=True)
    }
  if is_nnx:
    for layer, values in loaded.items():
      for name, value in values.items():
        getattr(_nnx_layer(module_or_variables, layer), name)[...] = value
    return module_or_variables
  return {
    collection: (
      {layer: loaded.get(layer, v) for layer, v in trees.items()}
      if collection in ('params', CONSTANTS)
      else trees
    )
    for collection, trees in module_or_variables.items()
  }


def _nnx_layer(model: Any, name: str) -> nnx.Module:
  return model.layers[list(model.names).index(name)]


def _nnx_layers(model: Any) -> dict[str, dict[str, Any]]:
  """``{layer name: {weight name: array}}`` of an imported NNX model."""
  names = getattr(model, 'names', None)
  if names is None:
    raise TypeError(
      'load_keras_weights: expected an NNX model from_keras returned'
      ' (KerasSequential or KerasFunctional with names), got'
      f' {type(model).__name__}.'
    )
  tree = {}
  for name, layer in zip(names, model.layers, strict=True):
    values = {
      key: value[...]
      for key, value in vars(layer).items()
      if isinstance(value, nnx.Variable)
      and isinstance(value, nnx.Param | Constant)
    }
    if values:
      tree[name] = values
  return tree
