"""The specs of the Keras core layers without weights: ``Activation``,
``Reshape``, ``Permute``, ``Flatten``, ``RepeatVector`` and ``Lambda``."""

from flax_dense._src.linen import core as linen
from flax_dense._src.nnx import core as nnx
from flax_dense._src.registry import spec
from flax_dense._src.registry.spec import LayerSpec


def _activation_arguments(layer: spec.KerasLayer) -> dict:
  return {'activation': spec.activation_name(layer, layer.config['activation'])}


def _export_activation(layer: spec.ExportedLayer) -> dict:
  if layer.module.activation_kwargs:
    raise layer.no_counterpart('an Activation with activation_kwargs')
  return {'activation': spec.export_activation(layer, layer.module.activation)}


SPECS = (
  LayerSpec(
    linen.Activation,
    nnx.Activation,
    ('activation', 'activation_kwargs'),
    per_step=True,
    mask_flow='propagate',
    keras_import={
      'Activation': spec.weightless_import(
        linen.Activation, 'propagate', _activation_arguments
      )
    },
    keras_export=spec.weightless_export('Activation', _export_activation),
  ),
  LayerSpec(
    linen.Flatten,
    nnx.Flatten,
    ('data_format',),
    keras_import={'Flatten': spec.weightless_import(linen.Flatten, 'drop')},
    keras_export=spec.weightless_export(
      'Flatten', lambda layer: {'data_format': layer.module.data_format}
    ),
  ),
  LayerSpec(
    linen.Lambda,
    nnx.Lambda,
    ('function',),
    not_imported=(
      "a Keras Lambda holds Python code for Keras's backend, not a JAX"
      ' function: rebuild it as fd.Lambda(function)'
    ),
    not_exported='a JAX function, which Keras cannot call',
  ),
  LayerSpec(
    linen.Permute,
    nnx.Permute,
    ('dims',),
    keras_import={'Permute': spec.weightless_import(linen.Permute, 'drop')},
    keras_export=spec.weightless_export(
      'Permute', lambda layer: {'dims': tuple(layer.module.dims)}
    ),
  ),
  LayerSpec(
    linen.RepeatVector,
    nnx.RepeatVector,
    ('n',),
    keras_import={
      'RepeatVector': spec.weightless_import(linen.RepeatVector, 'drop')
    },
    keras_export=spec.weightless_export(
      'RepeatVector', lambda layer: {'n': layer.module.n}
    ),
  ),
  LayerSpec(
    linen.Reshape,
    nnx.Reshape,
    ('target_shape',),
    keras_import={'Reshape': spec.weightless_import(linen.Reshape, 'drop')},
    keras_export=spec.weightless_export(
      'Reshape',
      lambda layer: {'target_shape': tuple(layer.module.target_shape)},
    ),
  ),
)
