"""The specs of ``flax.linen.Dense`` and ``PerPositionDense``."""

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
from flax import nnx

from flax_dense._src.callables import factory_call, resolve
from flax_dense._src.linen.core import Activation
from flax_dense._src.linen.dense import PerPositionDense
from flax_dense._src.nnx import dense as nnx_dense
from flax_dense._src.ops.regularizers import l1_l2
from flax_dense._src.registry import spec
from flax_dense._src.registry.keras_weights import keras_weights_to_params
from flax_dense._src.registry.spec import (
  ExportedLayer,
  KerasImport,
  KerasLayer,
  LayerSpec,
  Step,
)

DENSE_FIELDS = ('use_bias', 'dtype', 'param_dtype', 'precision')


def keras_params(layer: KerasLayer, kind: str, **options: Any) -> dict:
  """The params of ``layer``'s weights in the layout ``kind``, checked."""
  try:
    return keras_weights_to_params(kind, layer.weights, **options)
  except ValueError as error:
    raise layer.error(f'has weights that do not fit: {error}') from None


def with_activation(
  layer: KerasLayer, steps: list[Step], activation: Any
) -> list[Step]:
  """``steps``, then an ``Activation`` step unless the activation is linear."""
  name = spec.activation_name(layer, activation)
  if name != 'linear':
    steps.append(
      Step(f'{layer.name}_activation', Activation(name), 'propagate')
    )
  return steps


# ---------------------------------------------------------------------------
# flax.linen.Dense <-> flax.nnx.Linear, Keras Dense.


def _check_default(caller: str, layer: Any, field: str, default: Any) -> None:
  """Raises our own error when ``field`` of ``layer`` is not its default."""
  value = getattr(layer, field)
  if value is not default and value != default:
    raise ValueError(
      f'{caller}: {type(layer).__name__} with a {field} of its own ({value!r})'
      f' is not converted; only the default {default!r} is.'
    )


def _dense_to_nnx(module: nn.Dense, weights: spec.Weights) -> dict:
  defaults = {
    field.name: field.default for field in dataclasses.fields(nn.Dense)
  }
  for field in ('dot_general', 'dot_general_cls', 'promote_dtype'):
    _check_default('from_linen', module, field, defaults[field])
  (in_features, _) = spec.shape_of(
    module, weights, 'kernel', '(in_features, K)'
  )
  return {'in_features': in_features, 'out_features': module.features}


def _linear_to_linen(layer: nnx.Linear) -> dict:
  defaults = inspect.signature(nnx.Linear.__init__).parameters
  for field in ('dot_general', 'preferred_element_type', 'promote_dtype'):
    _check_default('to_linen', layer, field, defaults[field].default)
  return {'features': layer.out_features}


def import_dense(layer: KerasLayer) -> list[Step]:
  """Keras ``Dense``: ``nn.Dense`` (any input rank), then its activation."""
  config = layer.config
  params = keras_params(layer, 'dense')
  units = config['units']
  if params['kernel'].shape[-1] != units:
    raise layer.error(
      f'has units={units} in its config but a kernel of shape'
      f' {params["kernel"].shape}.'
    )
  use_bias = config.get('use_bias', True)
  if use_bias != ('bias' in params):
    raise layer.error(
      f'has use_bias={use_bias} but {len(layer.weights)} weights.'
    )
  dense = nn.Dense(units, use_bias=use_bias, **spec.dtypes(config))
  step = Step(layer.name, dense, 'propagate', {'params': params})
  return with_activation(layer, [step], config.get('activation'))


def _export_dense(keras: Any, layer: ExportedLayer):
  module, kernel = layer.module, layer.params['kernel']
  weights = [kernel, layer.params['bias']] if module.use_bias else [kernel]
  made = keras.layers.Dense(
    module.features,
    use_bias=module.use_bias,
    name=layer.name,
    trainable=layer.trainable,
  )
  return made, weights, (None, kernel.shape[0])


# ---------------------------------------------------------------------------
# PerPositionDense, Keras EinsumDense('abc,bcd->abd').


def _per_position_dense_sizes(module: Any, weights: spec.Weights) -> dict:
  positions, in_features, _ = spec.shape_of(
    module, weights, 'kernel', '(positions, in_features, features)'
  )
  return {'positions': positions, 'in_features': in_features}


def _canonical_equation(equation: str) -> str:
  """``equation`` with its letters renamed a, b, c, ... in order of use."""
  letters: dict[str, str] = {}
  for char in equation:
    if char.isalpha() and char not in letters:
      letters[char] = 'abcdefghijklmnopqrstuvwxyz'[len(letters)]
  return ''.join(letters.get(char, char) for char in equation)


def _import_einsum_dense(layer: KerasLayer) -> list[Step]:
  config = layer.config
  equation = config['equation'].replace(' ', '')
  bias_axes = config.get('bias_axes')
  # Renaming the equation's letters renames the bias axes alike.
  canonical = _canonical_equation(f'{equation}|{bias_axes or ""}')
  if canonical not in ('abc,bcd->abd|', 'abc,bcd->abd|bd'):
    raise layer.error(
      f'has equation {equation!r} with bias_axes {bias_axes!r}; flax_dense'
      " imports the per-position form 'abc,bcd->abd' with bias_axes 'bd' or"
      ' None (PerPositionDense).'
    )
  params = keras_params(layer, 'einsum_dense')
  module = PerPositionDense(
    params['kernel'].shape[-1],
    use_bias='bias' in params,
    activation=spec.activation_name(layer, config.get('activation')),
    **spec.dtypes(config),
  )
  return [Step(layer.name, module, 'drop', {'params': params})]


def _export_per_position_dense(keras: Any, layer: ExportedLayer):
  module, kernel = layer.module, layer.params['kernel']
  positions, in_features, features = kernel.shape
  regularizer = module.activity_regularizer
  if regularizer is not None:
    call = factory_call(regularizer)
    if call is None or resolve(call['factory']) is not l1_l2:
      raise ValueError(
        f"to_keras_model: layer '{layer.name}' has activity_regularizer"
        f' {regularizer!r}; Keras carries fd.l1_l2 penalties only (as'
        ' keras.regularizers.L1L2).'
      )
    regularizer = keras.regularizers.L1L2(**call['arguments'])
  made = keras.layers.EinsumDense(
    'abc,bcd->abd',
    output_shape=(positions, features),
    bias_axes='bd' if module.use_bias else None,
    activation=spec.export_activation(layer, module.activation),
    activity_regularizer=regularizer,
    name=layer.name,
    trainable=layer.trainable,
  )
  weights = [kernel, layer.params['bias']] if module.use_bias else [kernel]
  return made, weights, (None, positions, in_features)


SPECS = (
  LayerSpec(
    nn.Dense,
    nnx.Linear,
    DENSE_FIELDS,
    per_step=True,
    mask_flow='propagate',
    weights=spec.kernel_and_bias,
    nnx_arguments=_dense_to_nnx,
    linen_arguments=_linear_to_linen,
    keras_import={
      'Dense': KerasImport(
        import_dense,
        '``flax.linen.Dense`` (any input rank), then ``Activation``',
      ),
    },
    keras_export=_export_dense,
  ),
  LayerSpec(
    PerPositionDense,
    nnx_dense.PerPositionDense,
    ('features', 'activation', 'activity_regularizer', *DENSE_FIELDS),
    weights=spec.kernel_and_bias,
    nnx_arguments=_per_position_dense_sizes,
    keras_import={
      'EinsumDense': KerasImport(
        _import_einsum_dense,
        "``PerPositionDense`` (equation ``'abc,bcd->abd'``)",
      ),
    },
    keras_export=_export_per_position_dense,
  ),
)
