"""The pure functional core: each layer's math for one example.

Every function here takes one example (no batch axis) and the layer's
weights as arrays; batch them with ``jax.vmap``. The modules in
:mod:`flax_dense` own the parameters and do exactly that.
"""

from flax_dense._src.ops.activations import (
  resolve_activation as resolve_activation,
)
from flax_dense._src.ops.attention import attention_decoder as attention_decoder
from flax_dense._src.ops.attention import (
  attention_decoder_shapes as attention_decoder_shapes,
)
from flax_dense._src.ops.core import flatten as flatten
from flax_dense._src.ops.core import permute as permute
from flax_dense._src.ops.core import repeat_vector as repeat_vector
from flax_dense._src.ops.core import reshape as reshape
from flax_dense._src.ops.dense import per_position_dense as per_position_dense
from flax_dense._src.ops.dropout import dropout as dropout
from flax_dense._src.ops.embedding import embedding as embedding
from flax_dense._src.ops.embedding import embedding_mask as embedding_mask
from flax_dense._src.ops.locally_connected import (
  locally_connected_1d as locally_connected_1d,
)
from flax_dense._src.ops.masking import masking as masking
from flax_dense._src.ops.multi_io import multi_io_dense as multi_io_dense
from flax_dense._src.ops.pooling import masked_max as masked_max
from flax_dense._src.ops.pooling import masked_mean as masked_mean
from flax_dense._src.ops.product import const_product as const_product
from flax_dense._src.ops.recurrent import recurrent as recurrent
from flax_dense._src.ops.recurrent import (
  recurrent_shapes as recurrent_shapes,
)

__all__ = [
  'attention_decoder',
  'attention_decoder_shapes',
  'const_product',
  'dropout',
  'embedding',
  'embedding_mask',
  'flatten',
  'locally_connected_1d',
  'masked_max',
  'masked_mean',
  'masking',
  'multi_io_dense',
  'per_position_dense',
  'permute',
  'recurrent',
  'recurrent_shapes',
  'repeat_vector',
  'reshape',
  'resolve_activation',
]
