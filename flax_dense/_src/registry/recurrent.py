"""The specs of ``Embedding``, ``SimpleRNN``, ``LSTM``, ``GRU`` and
``Bidirectional``, with Keras 2's ``CuDNNLSTM`` and ``CuDNNGRU``."""

from typing import Any

import numpy as np

from flax_dense._src import validate
from flax_dense._src.linen import embedding as linen_embedding
from flax_dense._src.linen import recurrent as linen
from flax_dense._src.nnx import embedding as nnx_embedding
from flax_dense._src.nnx import recurrent as nnx
from flax_dense._src.ops.recurrent import GATES, recurrent_shapes
from flax_dense._src.registry import spec
from flax_dense._src.registry.spec import (
  ExportedLayer,
  KerasImport,
  KerasLayer,
  LayerSpec,
  Step,
)

# ---------------------------------------------------------------------------
# Embedding.


def _embedding_flow(module: Any) -> str:
  return 'compute' if module.mask_zero else 'drop'


def _embedding_sizes(module: Any, weights: spec.Weights) -> dict:
  input_dim, output_dim = spec.shape_of(
    module, weights, 'embeddings', '(input_dim, output_dim)'
  )
  return {'input_dim': input_dim, 'output_dim': output_dim}


def _embedding_fields(layer: Any) -> dict:
  return {'input_dim': layer.input_dim, 'output_dim': layer.output_dim}


def _import_embedding(layer: KerasLayer) -> list[Step]:
  """Keras ``Embedding``: its table as ``embeddings``, ``mask_zero`` kept."""
  config = layer.config
  input_dim, output_dim = config['input_dim'], config['output_dim']
  shapes = [np.shape(w) for w in layer.weights]
  if shapes != [(input_dim, output_dim)]:
    raise layer.error(
      f'has weights of shapes {shapes}; expected one table of shape'
      f' ({input_dim}, {output_dim}) for input_dim={input_dim!r} and'
      f' output_dim={output_dim!r}.'
    )
  mask_zero = validate.check_bool(
    config.get('mask_zero', False), layer.describe(), 'mask_zero'
  )
  if config.get('sparse'):
    raise layer.error('has sparse=True, whose outputs flax_dense lacks.')
  module = linen_embedding.Embedding(
    input_dim, output_dim, mask_zero=mask_zero, **spec.dtypes(config)
  )
  params = {'embeddings': layer.weights[0]}
  return [Step(layer.name, module, _embedding_flow(module), {'params': params})]


def _export_embedding(keras: Any, layer: ExportedLayer):
  table = layer.params['embeddings']
  made = keras.layers.Embedding(
    table.shape[0],
    table.shape[1],
    mask_zero=layer.module.mask_zero,
    name=layer.name,
    trainable=layer.trainable,
  )
  return made, [table], (None, None)


# ---------------------------------------------------------------------------
# SimpleRNN, LSTM, GRU.

#: The Keras class of each linen recurrent layer, and its kind.
_KINDS = {linen.SimpleRNN: 'simple_rnn', linen.LSTM: 'lstm', linen.GRU: 'gru'}
_CLASSES = {kind: module_type for module_type, kind in _KINDS.items()}
_KERAS_NAMES = {'SimpleRNN': 'simple_rnn', 'LSTM': 'lstm', 'GRU': 'gru'}
#: Keras 2's cuDNN layers and the kind each runs as.
_CUDNN = {'CuDNNLSTM': 'lstm', 'CuDNNGRU': 'gru'}

_COMMON_FIELDS = (
  'units',
  'activation',
  'use_bias',
  'dtype',
  'param_dtype',
  'precision',
  'dropout',
  'recurrent_dropout',
  'return_sequences',
  'return_state',
  'go_backwards',
  'rng_collection',
  'zero_output_for_mask',
)


def recurrent_flow(module: Any) -> str:
  """A recurrent layer's mask flow: passed on with its sequences."""
  return 'use' if module.return_sequences else 'consume'


def _recurrent_weights(module: Any) -> tuple[str, ...]:
  names = ('kernel', 'recurrent_kernel')
  return (*names, 'bias') if module.use_bias else names


def _recurrent_to_nnx(module: Any, weights: spec.Weights) -> dict:
  (in_features, _) = spec.shape_of(
    module, weights, 'kernel', '(in_features, gates * units)'
  )
  return {
    'in_features': in_features,
    'deterministic': bool(module.deterministic),
  }


def _recurrent_to_linen(layer: Any) -> dict:
  return {'deterministic': True if layer.deterministic else None}


def _keras_flag(layer: KerasLayer, config: dict, name: str, default: bool):
  return validate.check_bool(config.get(name, default), layer.describe(), name)


def _checked_weights(
  layer: KerasLayer,
  kind: str,
  weights: list[np.ndarray],
  units: int,
  use_bias: bool,
  reset_after: bool,
  what: str = '',
) -> dict[str, np.ndarray]:
  """The params of a recurrent layer's Keras weights, shapes checked."""
  shapes = [tuple(np.shape(w)) for w in weights]
  in_features = shapes[0][0] if shapes and len(shapes[0]) == 2 else None
  expected = (
    recurrent_shapes(kind, in_features, units, use_bias, reset_after)
    if in_features
    else None
  )
  if expected is None or shapes != list(expected.values()):
    layout = ['(D, G*U)', '(U, G*U)'] + (['bias'] if use_bias else [])
    raise layer.error(
      f'{what}has weights of shapes {shapes}; for units={units!r} with'
      f' {GATES[kind]} gates (use_bias={use_bias}) expected'
      f' {list(expected.values()) if expected else layout}.'
    )
  return dict(zip(expected, weights, strict=True))


def _per_gate(kernel: np.ndarray, gates: int, transform: Any) -> np.ndarray:
  return np.hstack([transform(block) for block in np.hsplit(kernel, gates)])


def cudnn_weights(weights: list[np.ndarray], kind: str) -> list[np.ndarray]:
  """Keras 2's CuDNNLSTM / CuDNNGRU weights as LSTM / GRU(reset_after) ones.

  cuDNN reads each gate's ``(D, U)`` input block as its row-major ``(U,
  D)`` matrix, so the Keras block is ``block.reshape(U, D).T``; each
  recurrent block is transposed; the LSTM's doubled bias ``(8U,)`` is
  summed, the GRU's ``(6U,)`` is GRU's ``(2, 3U)``
  (``tests/fixtures/make_cudnn_h5.py`` derives it).
  """
  gates = GATES[kind]
  kernel, recurrent_kernel, bias = weights
  units = recurrent_kernel.shape[0]
  kernel = _per_gate(
    kernel, gates, lambda block: block.reshape(units, block.shape[0]).T
  )
  recurrent_kernel = _per_gate(recurrent_kernel, gates, np.transpose)
  if kind == 'lstm':
    bias = bias[: 4 * units] + bias[4 * units :]
  else:
    bias = bias.reshape(2, 3 * units)
  return [kernel, recurrent_kernel, bias]


def _recurrent_module(
  layer: KerasLayer, class_name: str, config: dict, weights: list
) -> tuple[Any, dict[str, np.ndarray]]:
  """The linen module and params of one Keras recurrent layer's config."""
  units = validate.check_positive_int(
    config.get('units'), f'from_keras: {layer.describe()}', 'units'
  )
  for name in ('stateful', 'time_major'):
    if _keras_flag(layer, config, name, False):
      raise layer.error(
        f'has {name}=True, which flax_dense does not take: '
        + (
          'its layers keep no state between calls; import the model'
          ' without it and pass initial_state.'
          if name == 'stateful'
          else 'its inputs are (batch, timesteps, features); transpose'
          ' them and import the model without it.'
        )
      )
  # unroll and implementation change how Keras computes, not what.
  flags = {
    name: _keras_flag(layer, config, name, False)
    for name in ('return_sequences', 'return_state', 'go_backwards')
  }
  options: dict[str, Any] = {**flags, **spec.dtypes(config)}
  if class_name in _CUDNN:
    kind = _CUDNN[class_name]
    count = [np.shape(w) for w in weights]
    bias_size = 2 * GATES[kind] * units
    if len(count) != 3 or count[2] != (bias_size,):
      raise layer.error(
        f'({class_name}) has weights of shapes {count}; expected kernel,'
        f' recurrent_kernel and a doubled bias of shape ({bias_size},).'
      )
    weights = cudnn_weights(weights, kind)
    use_bias, reset_after = True, True
  else:
    kind = _KERAS_NAMES[class_name]
    use_bias = _keras_flag(layer, config, 'use_bias', True)
    reset_after = kind == 'gru' and _keras_flag(
      layer, config, 'reset_after', True
    )
    options['activation'] = spec.activation_name(
      layer, config.get('activation', 'tanh')
    )
    if kind != 'simple_rnn':
      options['recurrent_activation'] = spec.activation_name(
        layer, config.get('recurrent_activation', 'sigmoid')
      )
    options['use_bias'] = use_bias
    options['zero_output_for_mask'] = _keras_flag(
      layer, config, 'zero_output_for_mask', False
    )
    for name in ('dropout', 'recurrent_dropout'):
      options[name] = float(config.get(name, 0.0) or 0.0)
    if kind == 'lstm':
      options['unit_forget_bias'] = _keras_flag(
        layer, config, 'unit_forget_bias', True
      )
    if kind == 'gru':
      options['reset_after'] = reset_after
  params = _checked_weights(layer, kind, weights, units, use_bias, reset_after)
  return _CLASSES[kind](units, **options), params


def _import_recurrent(layer: KerasLayer) -> list[Step]:
  """Keras ``SimpleRNN``, ``LSTM``, ``GRU`` (and Keras 2's cuDNN layers)."""
  module, params = _recurrent_module(
    layer, layer.class_name, layer.config, layer.weights
  )
  # cuDNN layers take no mask: Keras 2 fails on one.
  flow = 'drop' if layer.class_name in _CUDNN else recurrent_flow(module)
  return [Step(layer.name, module, flow, {'params': params})]


def _keras_recurrent(keras: Any, module: Any, **named: Any) -> Any:
  """The Keras 3 layer of a linen recurrent module."""
  name = named.get('name', '')
  exported = ExportedLayer(name, module, None, {}, True)
  options: dict[str, Any] = {
    'activation': spec.export_activation(exported, module.activation),
    'use_bias': module.use_bias,
    'dropout': module.dropout,
    'recurrent_dropout': module.recurrent_dropout,
    'return_sequences': module.return_sequences,
    'return_state': module.return_state,
    'go_backwards': module.go_backwards,
    'zero_output_for_mask': module.zero_output_for_mask,
  }
  kind = _KINDS[type(module)]
  if kind != 'simple_rnn':
    options['recurrent_activation'] = spec.export_activation(
      exported, module.recurrent_activation
    )
  if kind == 'lstm':
    options['unit_forget_bias'] = module.unit_forget_bias
  if kind == 'gru':
    options['reset_after'] = module.reset_after
  keras_type = getattr(keras.layers, type(module).__name__)
  return keras_type(module.units, **options, **named)


def _recurrent_keras_weights(module: Any, params: Any) -> list:
  return [params[name] for name in _recurrent_weights(module)]


def _export_recurrent(keras: Any, layer: ExportedLayer):
  made = _keras_recurrent(
    keras, layer.module, name=layer.name, trainable=layer.trainable
  )
  weights = _recurrent_keras_weights(layer.module, layer.params)
  return made, weights, (None, None, layer.params['kernel'].shape[0])


def _recurrent_spec(module_type: type, nnx_type: type) -> LayerSpec:
  kind = _KINDS[module_type]
  fields = _COMMON_FIELDS
  if kind != 'simple_rnn':
    fields += ('recurrent_activation',)
  if kind == 'lstm':
    fields += ('unit_forget_bias',)
  if kind == 'gru':
    fields += ('reset_after',)
  name = module_type.__name__
  imports = {name: KerasImport(_import_recurrent, f'``{name}``')}
  if f'CuDNN{name}' in _CUDNN:
    imports[f'CuDNN{name}'] = KerasImport(
      _import_recurrent,
      f'``{name}`` (Keras 2 ``.h5`` files; weights converted'
      + (', ``reset_after=True``)' if kind == 'gru' else ')'),
    )
  return LayerSpec(
    module_type,
    nnx_type,
    fields,
    mask_flow=recurrent_flow,
    weights=_recurrent_weights,
    nnx_arguments=_recurrent_to_nnx,
    linen_arguments=_recurrent_to_linen,
    takes_rngs=True,
    per_step=True,
    keras_import=imports,
    keras_export=_export_recurrent,
  )


# ---------------------------------------------------------------------------
# Bidirectional.

#: The Keras classes Bidirectional's layers are imported from.
_WRAPPED = (*_KERAS_NAMES, *_CUDNN)


def _bidirectional_weights(module: Any) -> tuple[str, ...]:
  del module
  return ('forward_layer', 'backward_layer')


def _inner_layers(module: Any) -> tuple[Any, Any]:
  """The linen forward and backward layers of a linen ``Bidirectional``."""
  forward = module.layer
  backward = module.backward_layer
  if backward is None:
    backward = forward.clone(go_backwards=not forward.go_backwards)
  return forward, backward


def _inner(module: Any) -> dict[str, Any]:
  forward, backward = _inner_layers(module)
  return {'forward_layer': forward, 'backward_layer': backward}


def _bidirectional_to_nnx(module: Any, twins: dict[str, Any]) -> dict:
  """The NNX arguments of the two directions' twins (converted, with their
  weights, by ``fd.nnx.from_linen``)."""
  del module
  return {
    'layer': twins['forward_layer'],
    'backward_layer': twins['backward_layer'],
  }


def _bidirectional_to_linen(layer: Any, inner: dict[str, Any]) -> dict:
  """The linen fields of the two directions (converted by
  ``fd.nnx.to_linen``)."""
  del layer
  return {
    'layer': inner['forward_layer'],
    'backward_layer': inner['backward_layer'],
  }


def _bidirectional_flow(module: Any) -> str:
  return recurrent_flow(module.layer)


def _wrapped(layer: KerasLayer, key: str) -> tuple[str, dict] | None:
  """The class name and config of the layer Bidirectional holds at ``key``."""
  entry = layer.config.get(key)
  if entry is None and key == 'backward_layer':
    return None
  class_name = entry.get('class_name') if isinstance(entry, dict) else None
  if not isinstance(entry, dict) or class_name not in _WRAPPED:
    raise layer.error(
      f'wraps {class_name or entry!r} as its {key}; flax_dense imports'
      " Bidirectional of SimpleRNN, LSTM and GRU (and Keras 2's CuDNNLSTM"
      ' and CuDNNGRU).'
    )
  config = entry.get('config')
  if not isinstance(config, dict):
    raise layer.error(f'has a {key} without a config: {entry!r:.60}.')
  return class_name, config


def _weight_count(class_name: str, config: dict) -> int:
  if class_name in _CUDNN or config.get('use_bias', True):
    return 3
  return 2


def _import_bidirectional(layer: KerasLayer) -> list[Step]:
  """Keras ``Bidirectional``: its two layers' weights, forward first."""
  forward_class, forward_config = _wrapped(layer, 'layer') or ('', {})
  backward_entry = _wrapped(layer, 'backward_layer')
  count = _weight_count(forward_class, forward_config)
  forward_weights = layer.weights[:count]
  backward_weights = layer.weights[count:]
  forward, forward_params = _recurrent_module(
    layer, forward_class, forward_config, forward_weights
  )
  if backward_entry is None:
    backward_class = forward_class
    backward_config = {
      **forward_config,
      'go_backwards': not forward.go_backwards,
    }
  else:
    backward_class, backward_config = backward_entry
  backward, backward_params = _recurrent_module(
    layer, backward_class, backward_config, backward_weights
  )
  if forward.go_backwards == backward.go_backwards or any(
    getattr(forward, name) != getattr(backward, name)
    for name in ('return_sequences', 'return_state')
  ):
    raise layer.error(
      'has forward and backward layers that Keras would refuse: they must'
      ' differ in go_backwards and agree in return_sequences and'
      ' return_state.'
    )
  merge_mode = layer.config.get('merge_mode', 'concat')
  module = linen.Bidirectional(
    forward, merge_mode=merge_mode, backward_layer=backward
  )
  params: dict[str, Any] = {
    'forward_layer': forward_params,
    'backward_layer': backward_params,
  }
  flow = 'drop' if forward_class in _CUDNN else recurrent_flow(forward)
  return [Step(layer.name, module, flow, {'params': params})]


def _export_bidirectional(keras: Any, layer: ExportedLayer):
  module = layer.module
  forward, backward = _inner_layers(module)
  params = layer.params
  made = keras.layers.Bidirectional(
    _keras_recurrent(keras, forward),
    merge_mode=module.merge_mode,
    backward_layer=_keras_recurrent(keras, backward),
    name=layer.name,
    trainable=layer.trainable,
  )
  weights = [
    *_recurrent_keras_weights(forward, params['forward_layer']),
    *_recurrent_keras_weights(backward, params['backward_layer']),
  ]
  in_features = params['forward_layer']['kernel'].shape[0]
  return made, weights, (None, None, in_features)


SPECS = (
  LayerSpec(
    linen_embedding.Embedding,
    nnx_embedding.Embedding,
    ('mask_zero', 'dtype', 'param_dtype'),
    mask_flow=_embedding_flow,
    per_step=True,
    weights=lambda module: ('embeddings',),
    nnx_arguments=_embedding_sizes,
    linen_arguments=_embedding_fields,
    keras_import={
      'Embedding': KerasImport(
        _import_embedding, '``Embedding`` (``mask_zero`` makes the mask)'
      )
    },
    keras_export=_export_embedding,
  ),
  _recurrent_spec(linen.SimpleRNN, nnx.SimpleRNN),
  _recurrent_spec(linen.LSTM, nnx.LSTM),
  _recurrent_spec(linen.GRU, nnx.GRU),
  LayerSpec(
    linen.Bidirectional,
    nnx.Bidirectional,
    ('merge_mode',),
    mask_flow=_bidirectional_flow,
    per_step=True,
    weights=_bidirectional_weights,
    nnx_arguments=_bidirectional_to_nnx,
    linen_arguments=_bidirectional_to_linen,
    inner=_inner,
    keras_import={
      'Bidirectional': KerasImport(
        _import_bidirectional,
        '``Bidirectional`` of ``SimpleRNN``, ``LSTM``, ``GRU`` (also Keras'
        " 2's cuDNN layers)",
      )
    },
    keras_export=_export_bidirectional,
  ),
)
