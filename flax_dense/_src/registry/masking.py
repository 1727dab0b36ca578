"""The specs of ``Masking`` and the global pooling layers."""

from flax_dense._src.linen import masking as linen_masking
from flax_dense._src.linen import pooling as linen_pooling
from flax_dense._src.nnx import masking as nnx_masking
from flax_dense._src.nnx import pooling as nnx_pooling
from flax_dense._src.registry import spec
from flax_dense._src.registry.spec import ExportedLayer, LayerSpec


def _pooling_arguments(layer: ExportedLayer) -> dict:
  return {
    'data_format': layer.module.data_format,
    'keepdims': layer.module.keepdims,
  }


SPECS = (
  LayerSpec(
    linen_masking.Masking,
    nnx_masking.Masking,
    ('mask_value',),
    mask_flow='compute',
    keras_import={
      'Masking': spec.weightless_import(linen_masking.Masking, 'compute')
    },
    keras_export=spec.weightless_export(
      'Masking', lambda layer: {'mask_value': layer.module.mask_value}
    ),
  ),
  LayerSpec(
    linen_pooling.GlobalAveragePooling1D,
    nnx_pooling.GlobalAveragePooling1D,
    ('data_format', 'keepdims'),
    mask_flow='consume',
    keras_import={
      'GlobalAveragePooling1D': spec.weightless_import(
        linen_pooling.GlobalAveragePooling1D, 'consume'
      )
    },
    keras_export=spec.weightless_export(
      'GlobalAveragePooling1D', _pooling_arguments
    ),
  ),
  # Keras 3's GlobalMaxPooling1D takes no mask: the max of every step.
  LayerSpec(
    linen_pooling.GlobalMaxPooling1D,
    nnx_pooling.GlobalMaxPooling1D,
    ('data_format', 'keepdims'),
    keras_import={
      'GlobalMaxPooling1D': spec.weightless_import(
        linen_pooling.GlobalMaxPooling1D, 'drop'
      )
    },
    keras_export=spec.weightless_export(
      'GlobalMaxPooling1D', _pooling_arguments
    ),
  ),
)
