"""flax_dense: Keras-style dense and core layers for Flax, linen and NNX.

The linen modules live here, their NNX twins in :mod:`flax_dense.nnx`, and
the pure functions both call in :mod:`flax_dense.functional`.
"""

from flax_dense import checkpoint as checkpoint
from flax_dense import functional as functional
from flax_dense import nnx as nnx
from flax_dense import sharding as sharding
from flax_dense._src.keras.build import from_keras as from_keras
from flax_dense._src.keras.export import to_keras_model as to_keras_model
from flax_dense._src.keras.host import (
  keras_custom_objects as keras_custom_objects,
)
from flax_dense._src.keras.host import to_keras as to_keras
from flax_dense._src.keras.imports import (
  register_keras_layer as register_keras_layer,
)
from flax_dense._src.keras.weights import (
  load_keras_weights as load_keras_weights,
)
from flax_dense._src.linen.attention import AttentionDecoder as AttentionDecoder
from flax_dense._src.linen.core import Activation as Activation
from flax_dense._src.linen.core import Flatten as Flatten
from flax_dense._src.linen.core import Lambda as Lambda
from flax_dense._src.linen.core import Permute as Permute
from flax_dense._src.linen.core import RepeatVector as RepeatVector
from flax_dense._src.linen.core import Reshape as Reshape
from flax_dense._src.linen.dense import PerPositionDense as PerPositionDense
from flax_dense._src.linen.dropout import Dropout as Dropout
from flax_dense._src.linen.dropout import SpatialDropout1D as SpatialDropout1D
from flax_dense._src.linen.dropout import SpatialDropout2D as SpatialDropout2D
from flax_dense._src.linen.dropout import SpatialDropout3D as SpatialDropout3D
from flax_dense._src.linen.embedding import Embedding as Embedding
from flax_dense._src.linen.locally_connected import (
  LocallyConnected1D as LocallyConnected1D,
)
from flax_dense._src.linen.masking import Masking as Masking
from flax_dense._src.linen.multi_io import MultiIODense as MultiIODense
from flax_dense._src.linen.pooling import (
  GlobalAveragePooling1D as GlobalAveragePooling1D,
)
from flax_dense._src.linen.pooling import (
  GlobalMaxPooling1D as GlobalMaxPooling1D,
)
from flax_dense._src.linen.product import ConstProduct as ConstProduct
from flax_dense._src.linen.recurrent import GRU as GRU
from flax_dense._src.linen.recurrent import LSTM as LSTM
from flax_dense._src.linen.recurrent import Bidirectional as Bidirectional
from flax_dense._src.linen.recurrent import SimpleRNN as SimpleRNN
from flax_dense._src.linen.regularizers import (
  ActivityRegularization as ActivityRegularization,
)
from flax_dense._src.linen.wrappers import TimeDistributed as TimeDistributed
from flax_dense._src.models.linen import KerasFunctional as KerasFunctional
from flax_dense._src.models.linen import KerasSequential as KerasSequential
from flax_dense._src.ops.activations import (
  KERAS_ACTIVATIONS as KERAS_ACTIVATIONS,
)
from flax_dense._src.ops.activations import (
  ActivationFunction as ActivationFunction,
)
from flax_dense._src.ops.activations import (
  keras_activation as keras_activation,
)
from flax_dense._src.ops.losses import (
  masked_sparse_categorical_accuracy as masked_sparse_categorical_accuracy,
)
from flax_dense._src.ops.losses import (
  masked_sparse_categorical_crossentropy as masked_sparse_categorical_crossentropy,
)
from flax_dense._src.ops.masking import compute_mask as compute_mask
from flax_dense._src.ops.pooling import masked_max as masked_max
from flax_dense._src.ops.pooling import masked_mean as masked_mean
from flax_dense._src.ops.regularizers import Constraint as Constraint
from flax_dense._src.ops.regularizers import Regularizer as Regularizer
from flax_dense._src.ops.regularizers import constrain as constrain
from flax_dense._src.ops.regularizers import l1_l2 as l1_l2
from flax_dense._src.ops.regularizers import max_norm as max_norm
from flax_dense._src.ops.regularizers import min_max_norm as min_max_norm
from flax_dense._src.ops.regularizers import non_neg as non_neg
from flax_dense._src.ops.regularizers import unit_norm as unit_norm
from flax_dense._src.ops.regularizers import weight_penalty as weight_penalty
from flax_dense._src.registry.keras_weights import (
  keras_weights_to_params as keras_weights_to_params,
)
from flax_dense._src.summary import LayerSummary as LayerSummary
from flax_dense._src.summary import Summary as Summary
from flax_dense._src.summary import summary as summary
from flax_dense._src.variables import CONSTANTS as CONSTANTS
from flax_dense._src.variables import LOSSES as LOSSES
from flax_dense._src.variables import collect_losses as collect_losses

__version__ = '0.1.0'

__all__ = [
  'Activation',
  'ActivationFunction',
  'ActivityRegularization',
  'AttentionDecoder',
  'Bidirectional',
  'CONSTANTS',
  'ConstProduct',
  'Constraint',
  'Dropout',
  'Embedding',
  'Flatten',
  'GRU',
  'GlobalAveragePooling1D',
  'GlobalMaxPooling1D',
  'KERAS_ACTIVATIONS',
  'KerasFunctional',
  'KerasSequential',
  'LOSSES',
  'LSTM',
  'Lambda',
  'LayerSummary',
  'LocallyConnected1D',
  'Masking',
  'MultiIODense',
  'PerPositionDense',
  'Permute',
  'Regularizer',
  'RepeatVector',
  'Reshape',
  'SimpleRNN',
  'SpatialDropout1D',
  'SpatialDropout2D',
  'SpatialDropout3D',
  'Summary',
  'TimeDistributed',
  'checkpoint',
  'collect_losses',
  'compute_mask',
  'constrain',
  'from_keras',
  'functional',
  'keras_activation',
  'keras_custom_objects',
  'keras_weights_to_params',
  'l1_l2',
  'load_keras_weights',
  'masked_max',
  'masked_mean',
  'masked_sparse_categorical_accuracy',
  'masked_sparse_categorical_crossentropy',
  'max_norm',
  'min_max_norm',
  'nnx',
  'non_neg',
  'register_keras_layer',
  'sharding',
  'summary',
  'to_keras',
  'to_keras_model',
  'unit_norm',
  'weight_penalty',
]
