"""flax_dense: Keras-style dense and core layers as Flax linen modules."""

from flax_dense import checkpoint as checkpoint
from flax_dense import functional as functional
from flax_dense import sharding as sharding
from flax_dense._src.activations import (
  KERAS_ACTIVATIONS as KERAS_ACTIVATIONS,
)
from flax_dense._src.attention import AttentionDecoder as AttentionDecoder
from flax_dense._src.dense import PerPositionDense as PerPositionDense
from flax_dense._src.masking import Masking as Masking
from flax_dense._src.masking import compute_mask as compute_mask
from flax_dense._src.multi_io import MultiIODense as MultiIODense
from flax_dense._src.product import CONSTANTS as CONSTANTS
from flax_dense._src.product import ConstProduct as ConstProduct
from flax_dense._src.summary import LayerSummary as LayerSummary
from flax_dense._src.summary import Summary as Summary
from flax_dense._src.summary import summary as summary

__version__ = '0.1.0'

__all__ = [
  'AttentionDecoder',
  'CONSTANTS',
  'ConstProduct',
  'KERAS_ACTIVATIONS',
  'LayerSummary',
  'Masking',
  'MultiIODense',
  'PerPositionDense',
  'Summary',
  'checkpoint',
  'compute_mask',
  'functional',
  'sharding',
  'summary',
]
