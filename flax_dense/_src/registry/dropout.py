"""The specs of ``Dropout`` and ``SpatialDropout1D/2D/3D``."""

from typing import Any

from flax_dense._src.linen import dropout as linen
from flax_dense._src.nnx import dropout as nnx
from flax_dense._src.registry import spec
from flax_dense._src.registry.spec import ExportedLayer, LayerSpec


def _mode_to_nnx(module: Any, weights: spec.Weights) -> dict:
  del weights
  return {'deterministic': bool(module.deterministic)}


def _mode_to_linen(layer: Any) -> dict:
  return {'deterministic': True if layer.deterministic else None}


def _spatial_arguments(layer: ExportedLayer) -> dict:
  return {'rate': layer.module.rate, 'data_format': layer.module.data_format}


def _spatial_1d_arguments(layer: ExportedLayer) -> dict:
  # Keras's SpatialDropout1D has no data_format: always channels-last.
  if layer.module.data_format != 'channels_last':
    raise layer.no_counterpart('a channels_first SpatialDropout1D')
  return {'rate': layer.module.rate}


_SPATIAL_FIELDS = ('rate', 'data_format', 'rng_collection')


def _dropout_spec(
  linen_type: type,
  nnx_type: type,
  fields: tuple[str, ...],
  arguments: Any,
) -> LayerSpec:
  name = linen_type.__name__
  return LayerSpec(
    linen_type,
    nnx_type,
    fields,
    mask_flow='propagate',
    nnx_arguments=_mode_to_nnx,
    linen_arguments=_mode_to_linen,
    takes_rngs=True,
    keras_import={name: spec.weightless_import(linen_type, 'propagate')},
    keras_export=spec.weightless_export(name, arguments),
  )


SPECS = (
  _dropout_spec(
    linen.Dropout,
    nnx.Dropout,
    ('rate', 'noise_shape', 'rng_collection'),
    lambda layer: {
      'rate': layer.module.rate,
      'noise_shape': layer.module.noise_shape,
    },
  ),
  _dropout_spec(
    linen.SpatialDropout1D,
    nnx.SpatialDropout1D,
    _SPATIAL_FIELDS,
    _spatial_1d_arguments,
  ),
  _dropout_spec(
    linen.SpatialDropout2D,
    nnx.SpatialDropout2D,
    _SPATIAL_FIELDS,
    _spatial_arguments,
  ),
  _dropout_spec(
    linen.SpatialDropout3D,
    nnx.SpatialDropout3D,
    _SPATIAL_FIELDS,
    _spatial_arguments,
  ),
)
