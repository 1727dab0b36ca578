"""The pure functional core: each layer's math for one example.

Every function here takes one example (no batch axis) and the layer's
weights as arrays; batch them with ``jax.vmap``. The modules in
:mod:`flax_dense` own the parameters and do exactly that.
"""

from flax_dense._src.activations import (
  resolve_activation as resolve_activation,
)
from flax_dense._src.attention import attention_decoder as attention_decoder
from flax_dense._src.attention import (
  attention_decoder_shapes as attention_decoder_shapes,
)
from flax_dense._src.dense import per_position_dense as per_position_dense
from flax_dense._src.masking import masking as masking
from flax_dense._src.multi_io import multi_io_dense as multi_io_dense
from flax_dense._src.product import const_product as const_product

__all__ = [
  'attention_decoder',
  'attention_decoder_shapes',
  'const_product',
  'masking',
  'multi_io_dense',
  'per_position_dense',
  'resolve_activation',
]
