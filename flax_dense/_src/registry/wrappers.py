"""The spec of ``TimeDistributed``, a layer of any one layer."""

from typing import Any

from flax_dense._src.linen import wrappers as linen
from flax_dense._src.nnx import wrappers as nnx
from flax_dense._src.registry.spec import ExportedLayer, LayerSpec


def _inner(module: Any) -> dict[str, Any]:
  return {'layer': module.layer}


def _to_nnx(module: Any, twins: dict[str, Any]) -> dict:
  """The NNX argument: the wrapped layer's twin (converted, with its
  weights, by ``fd.nnx.from_linen``)."""
  del module
  return {'layer': twins['layer']}


def _to_linen(layer: Any, inner: dict[str, Any]) -> dict:
  del layer
  return {'layer': inner['layer']}


def _export_time_distributed(keras: Any, layer: ExportedLayer):
  assert layer.export_inner is not None
  made, weights, shape = layer.export_inner('layer')
  wrapper = keras.layers.TimeDistributed(
    made, name=layer.name, trainable=layer.trainable
  )
  return (
    wrapper,
    weights,
    None if shape is None else (shape[0], None, *shape[1:]),
  )


SPECS = (
  LayerSpec(
    linen.TimeDistributed,
    nnx.TimeDistributed,
    mask_flow='propagate',
    weights=lambda module: ('layer',),
    nnx_arguments=_to_nnx,
    linen_arguments=_to_linen,
    inner=_inner,
    not_imported=(
      "made by from_keras's reading of Keras's TimeDistributed wrapper"
      ' (a node of the graph, not a spec: it wraps any imported layer)'
    ),
    keras_export=_export_time_distributed,
  ),
)
