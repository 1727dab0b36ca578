"""The NNX front end: every flax_dense layer as an ``nnx.Module``.

The same names, arguments and semantics as the linen layers in
:mod:`flax_dense`, over the same pure functions, in NNX's style: built
eagerly with explicit input sizes and ``rngs=nnx.Rngs(...)``, weights as
attributes (``nnx.Param`` for trained ones, :class:`Constant` for frozen
ones), dropouts switched by ``model.train()`` / ``model.eval()``, and
activity penalties sown as :class:`Loss` inside ``nnx.capture``::

  from flax import nnx
  import flax_dense as fd

  layer = fd.nnx.PerPositionDense(1024, 256, 10, rngs=nnx.Rngs(0))
  y = layer(x)  # x: (batch, 1024, 256)

A linen layer and its variables become their NNX twin with
:func:`from_linen` (and back with :func:`to_linen`), a Keras model an NNX
:class:`KerasSequential` with ``fd.from_keras(model, api='nnx')``.
"""

from flax_dense._src.convert import LINEN_TO_NNX as LINEN_TO_NNX
from flax_dense._src.convert import from_linen as from_linen
from flax_dense._src.convert import to_linen as to_linen
from flax_dense._src.models.nnx import KerasFunctional as KerasFunctional
from flax_dense._src.models.nnx import KerasSequential as KerasSequential
from flax_dense._src.nnx.attention import AttentionDecoder as AttentionDecoder
from flax_dense._src.nnx.core import Activation as Activation
from flax_dense._src.nnx.core import Flatten as Flatten
from flax_dense._src.nnx.core import Lambda as Lambda
from flax_dense._src.nnx.core import Permute as Permute
from flax_dense._src.nnx.core import RepeatVector as RepeatVector
from flax_dense._src.nnx.core import Reshape as Reshape
from flax_dense._src.nnx.dense import PerPositionDense as PerPositionDense
from flax_dense._src.nnx.dropout import Dropout as Dropout
from flax_dense._src.nnx.dropout import SpatialDropout1D as SpatialDropout1D
from flax_dense._src.nnx.dropout import SpatialDropout2D as SpatialDropout2D
from flax_dense._src.nnx.dropout import SpatialDropout3D as SpatialDropout3D
from flax_dense._src.nnx.embedding import Embedding as Embedding
from flax_dense._src.nnx.locally_connected import (
  LocallyConnected1D as LocallyConnected1D,
)
from flax_dense._src.nnx.masking import Masking as Masking
from flax_dense._src.nnx.multi_io import MultiIODense as MultiIODense
from flax_dense._src.nnx.pooling import (
  GlobalAveragePooling1D as GlobalAveragePooling1D,
)
from flax_dense._src.nnx.pooling import GlobalMaxPooling1D as GlobalMaxPooling1D
from flax_dense._src.nnx.product import ConstProduct as ConstProduct
from flax_dense._src.nnx.recurrent import GRU as GRU
from flax_dense._src.nnx.recurrent import LSTM as LSTM
from flax_dense._src.nnx.recurrent import Bidirectional as Bidirectional
from flax_dense._src.nnx.recurrent import SimpleRNN as SimpleRNN
from flax_dense._src.nnx.regularizers import (
  ActivityRegularization as ActivityRegularization,
)
from flax_dense._src.nnx.wrappers import TimeDistributed as TimeDistributed
from flax_dense._src.variables import Constant as Constant
from flax_dense._src.variables import Loss as Loss

__all__ = [
  'Activation',
  'ActivityRegularization',
  'AttentionDecoder',
  'Bidirectional',
  'ConstProduct',
  'Constant',
  'Dropout',
  'Embedding',
  'Flatten',
  'GRU',
  'GlobalAveragePooling1D',
  'GlobalMaxPooling1D',
  'KerasFunctional',
  'KerasSequential',
  'LINEN_TO_NNX',
  'LSTM',
  'Lambda',
  'LocallyConnected1D',
  'Loss',
  'Masking',
  'MultiIODense',
  'PerPositionDense',
  'Permute',
  'RepeatVector',
  'Reshape',
  'SimpleRNN',
  'SpatialDropout1D',
  'SpatialDropout2D',
  'SpatialDropout3D',
  'TimeDistributed',
  'from_linen',
  'to_linen',
]
