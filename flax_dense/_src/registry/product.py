"""The spec of ``ConstProduct``: flax_dense's own Keras layer both ways."""

from typing import Any

import numpy as np

from flax_dense._src.linen.product import ConstProduct
from flax_dense._src.nnx import product as nnx_product
from flax_dense._src.registry import spec
from flax_dense._src.registry.spec import (
  ExportedLayer,
  KerasImport,
  KerasLayer,
  LayerSpec,
  Step,
)
from flax_dense._src.variables import CONSTANTS

#: The Keras class name of the layer ``to_keras_model`` makes of a
#: ``ConstProduct`` (registered with Keras by the package's Keras layers).
KERAS_NAME = 'flax_dense>ConstProduct'


def _to_nnx(module: Any, weights: spec.Weights) -> dict:
  (in_features,) = spec.shape_of(module, weights, 'kernel', '(N,)')
  return {'in_features': in_features, 'weights': weights['kernel']}


def _to_linen(layer: Any) -> dict:
  # Frozen weights are given to the linen layer too, which needs them to
  # build; once built, the variables are the truth.
  return {'weights': None if layer.trainable else layer.kernel[...]}


def _collection(module: Any) -> str:
  return spec.PARAMS if module.trainable else CONSTANTS


def _import(layer: KerasLayer) -> list[Step]:
  """A frozen layer keeps its weights as ``ConstProduct``'s constants, the
  way the linen layer stores them, rather than as frozen params."""
  shapes = [np.shape(w) for w in layer.weights]
  units = layer.config.get('units')
  if len(shapes) != 1 or shapes[0] != (units,):
    raise layer.error(
      f'has weights of shapes {shapes}; expected one kernel of shape'
      f' ({units},) for units={units!r}.'
    )
  (kernel,) = layer.weights
  if layer.config.get('trainable', True):
    module = ConstProduct(trainable=True)
    return [Step(layer.name, module, 'drop', {'params': {'kernel': kernel}})]
  module = ConstProduct(weights=kernel, trainable=False)
  return [Step(layer.name, module, 'drop', {CONSTANTS: {'kernel': kernel}})]


def _export(keras: Any, layer: ExportedLayer):
  kernel = layer.params['kernel']
  keras_type = keras.saving.get_registered_object(KERAS_NAME)
  made = keras_type(
    kernel.shape[-1], name=layer.name, trainable=layer.trainable
  )
  return made, [kernel], (None, kernel.shape[-1])


SPECS = (
  LayerSpec(
    ConstProduct,
    nnx_product.ConstProduct,
    ('trainable', 'dtype', 'param_dtype'),
    weights=spec.kernel,
    collection=_collection,
    nnx_arguments=_to_nnx,
    linen_arguments=_to_linen,
    keras_import={
      KERAS_NAME: KerasImport(
        _import,
        "``ConstProduct`` (flax_dense's own Keras layer, from"
        ' ``fd.to_keras_model``)',
      )
    },
    keras_export=_export,
  ),
)
