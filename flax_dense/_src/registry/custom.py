"""The specs of the layers of Keras tutorials, not ``keras.layers`` classes:
``AttentionDecoder`` and ``MultiIODense``."""

from typing import Any

from flax_dense._src.linen.attention import AttentionDecoder
from flax_dense._src.linen.multi_io import MultiIODense
from flax_dense._src.nnx import attention as nnx_attention
from flax_dense._src.nnx import multi_io as nnx_multi_io
from flax_dense._src.ops.attention import attention_decoder_shapes
from flax_dense._src.registry import spec
from flax_dense._src.registry.spec import LayerSpec


def _attention_weights(module: Any) -> tuple[str, ...]:
  return tuple(attention_decoder_shapes(1, module.units, module.output_dim))


_CUSTOM = 'register a converter (examples/keras_custom_layers.py has one)'

SPECS = (
  LayerSpec(
    AttentionDecoder,
    nnx_attention.AttentionDecoder,
    (
      'units',
      'output_dim',
      'return_probabilities',
      'dtype',
      'param_dtype',
      'precision',
    ),
    mask_flow='consume',
    weights=_attention_weights,
    nnx_arguments=spec.in_features('U_a', '(in_features, units)'),
    not_imported=(
      'a custom layer of a Keras tutorial, not a keras.layers class: import'
      ' its weights by name, which it keeps'
    ),
    not_exported='a custom layer of a Keras tutorial: host it with fd.to_keras',
  ),
  LayerSpec(
    MultiIODense,
    nnx_multi_io.MultiIODense,
    ('features', 'dtype', 'param_dtype', 'precision'),
    weights=spec.kernel,
    nnx_arguments=spec.in_features('kernel', '(in_features, features)'),
    not_imported=(
      'a custom layer of a Keras tutorial (MyLayer), not a keras.layers'
      f' class: {_CUSTOM}'
    ),
    not_exported='a custom layer of a Keras tutorial: host it with fd.to_keras',
  ),
)
