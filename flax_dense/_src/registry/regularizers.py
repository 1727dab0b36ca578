"""The spec of ``ActivityRegularization``, and Keras activity regularizers."""

from typing import Any

from flax_dense._src.linen.regularizers import ActivityRegularization
from flax_dense._src.nnx import regularizers as nnx_regularizers
from flax_dense._src.registry.spec import (
  KerasImport,
  KerasLayer,
  LayerSpec,
  Step,
  weightless_export,
)


def activity_regularization(layer: KerasLayer) -> ActivityRegularization | None:
  """The layer's Keras ``activity_regularizer`` as a flax_dense layer.

  Any Keras layer may have one; an ``ActivityRegularization`` layer is one.

  Raises:
    ValueError: for a regularizer other than Keras's L1, L2 and L1L2.
  """
  config = layer.config
  if layer.class_name == 'ActivityRegularization':
    regularizer: Any = {'class_name': 'L1L2', 'config': config}
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
    raise layer.error(
      f'has activity_regularizer {regularizer!r}; flax_dense imports L1, L2'
      ' and L1L2 (as ActivityRegularization).'
    )
  options = regularizer.get('config') or {}
  return ActivityRegularization(
    float(options.get('l1') or 0.0), float(options.get('l2') or 0.0)
  )


def _import(layer: KerasLayer) -> list[Step]:
  module = activity_regularization(layer)
  assert module is not None  # an ActivityRegularization layer always has one
  return [Step(layer.name, module, 'propagate')]


SPECS = (
  LayerSpec(
    ActivityRegularization,
    nnx_regularizers.ActivityRegularization,
    ('l1', 'l2'),
    mask_flow='propagate',
    keras_import={
      'ActivityRegularization': KerasImport(
        _import, '``ActivityRegularization``'
      )
    },
    keras_export=weightless_export(
      'ActivityRegularization',
      lambda layer: {'l1': layer.module.l1, 'l2': layer.module.l2},
    ),
  ),
)
