"""Models handed back to Keras: ``fd.to_keras_model``.

Each flax_dense layer becomes the Keras layer its registry spec exports,
with the same weights and name; masks flow as Keras's layers pass them.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import numpy as np
from flax import nnx

from flax_dense._src import registry
from flax_dense._src.convert import linen_form
from flax_dense._src.keras.backend import import_keras
from flax_dense._src.models.linen import KerasFunctional, KerasSequential
from flax_dense._src.registry.spec import ExportedLayer
from flax_dense._src.variables import CONSTANTS, unfrozen


def _check_mask_flows(steps: Sequence[ExportedLayer]) -> None:
  """Raises unless the module passes masks along as Keras will."""
  live = False
  for step in steps:
    layer_spec = registry.linen_spec(type(step.module))
    kind = type(step.module).__name__
    keras_flow = 'drop' if layer_spec is None else layer_spec.flow(step.module)
    flow = step.mask_flow or 'drop'
    if kind == 'GlobalMaxPooling1D' and live and flow == 'consume':
      raise ValueError(
        f"to_keras_model: layer '{step.name}' is a GlobalMaxPooling1D that"
        " skips masked steps; Keras's GlobalMaxPooling1D ignores the mask,"
        ' so its outputs would differ. Host the module with fd.to_keras.'
      )
    if (live or keras_flow == 'compute') and flow != keras_flow:
      raise ValueError(
        f"to_keras_model: layer '{step.name}' ({kind}) has mask_flow"
        f" {flow!r}, but Keras's layer does {keras_flow!r} with the mask, so"
        " the outputs would differ; use Keras's mask flows (as from_keras"
        ' does) or host the module with fd.to_keras.'
      )
    live = flow in ('compute', 'propagate', 'use') and (
      live or flow == 'compute'
    )


def _keras_layer(
  keras: Any, layer: ExportedLayer
) -> tuple[Any, list, tuple | None]:
  """The Keras layer of one flax_dense layer, its weights and build shape,
  as its registry spec exports it."""
  layer_spec = registry.linen_spec(type(layer.module))
  if layer_spec is None or layer_spec.keras_export is None:
    raise layer.no_counterpart(f'a {type(layer.module).__name__}')
  if layer_spec.inner is not None:
    inner = layer_spec.inner(layer.module)

    def export_inner(name: str) -> tuple[Any, list, tuple | None]:
      return _keras_layer(
        keras,
        ExportedLayer(
          f'{layer.name}_{name}',
          unfrozen(inner[name]),
          None,
          layer.params.get(name, {}),
          layer.trainable,
        ),
      )

    layer = dataclasses.replace(layer, export_inner=export_inner)
  return layer_spec.keras_export(keras, layer)


def _steps(
  module: nn.Module, variables: Mapping[str, Any]
) -> list[ExportedLayer]:
  """The layers of ``module`` (a sequence or one layer) with their weights."""
  params = variables.get('params', {})
  constants = variables.get(CONSTANTS, {})
  if not isinstance(module, KerasSequential):
    name = module.name or _snake_case(type(module).__name__)
    return [
      ExportedLayer(
        name, unfrozen(module), None, {**params, **constants}, not constants
      )
    ]
  steps = []
  for index, layer in enumerate(module.layers):
    name = module.names[index] if module.names else f'layers_{index}'
    flow = module.mask_flow[index] if module.mask_flow else None
    weights = {**params.get(name, {}), **constants.get(name, {})}
    steps.append(
      ExportedLayer(name, unfrozen(layer), flow, weights, name not in constants)
    )
  return steps


def _functional(
  keras: Any,
  module: nn.Module,
  variables: Mapping[str, Any],
  input_shape: Any,
  name: str | None,
) -> Any:
  """The functional ``keras.Model`` of a ``KerasFunctional``.

  Each module of ``module.layers`` is one Keras layer, called at every node
  that calls it (so shared layers share their weights, as in Keras); merge
  nodes are Keras's merge layers. Keras's layers pass the masks themselves.
  """
  shapes = input_shape
  if (
    shapes is not None
    and module.inputs == 1
    and not (shapes and isinstance(shapes[0], Sequence))
  ):
    shapes = [shapes]
  if (
    not isinstance(shapes, Sequence)
    or len(shapes) != module.inputs
    or not all(isinstance(shape, Sequence) for shape in shapes)
  ):
    raise ValueError(
      'to_keras_model: a KerasFunctional needs input_shape, one shape per'
      f' input ({module.inputs}) without the batch axis, e.g.'
      f' [(5, 3)] * {module.inputs}; got {input_shape!r}.'
    )
  params = variables.get('params', {})
  constants = variables.get(CONSTANTS, {})
  steps = [
    ExportedLayer(
      layer_name,
      unfrozen(layer),
      flow,
      {**params.get(layer_name, {}), **constants.get(layer_name, {})},
      layer_name not in constants,
    )
    for layer, layer_name, flow in zip(
      module.layers, module.names, module.mask_flow, strict=True
    )
  ]
  made = [_keras_layer(keras, step) for step in steps]
  inputs = [keras.Input(tuple(shape)) for shape in shapes]
  tensors = list(inputs)
  for index, node in enumerate(module.nodes):
    value = [tensors[i] for i in node.inputs]
    keywords = {}
    for keyword, count in reversed(node.keywords):  # initial_state=[h, c]
      keywords[keyword] = value[len(value) - count :]
      value = value[: len(value) - count]
    value = value if len(value) > 1 else value[0]
    if dict(node.options).get('operation'):
      value = getattr(keras.ops, node.merge.lower())(*value)
    elif node.merge:
      merge = getattr(keras.layers, node.merge)
      value = merge(**dict(node.options), name=f'merge_{index}')(value)
    for position, step in enumerate(node.steps):
      value = made[step][0](value, **(keywords if position == 0 else {}))
    tensors.extend(value if isinstance(value, list | tuple) else [value])
  outputs = [tensors[i] for i in module.outputs]
  model = keras.Model(
    inputs if len(inputs) > 1 else inputs[0],
    outputs[0] if module.single_output and len(outputs) == 1 else outputs,
    name=name,
  )
  for layer, weights, _ in made:
    if weights:
      layer.set_weights([np.asarray(w) for w in weights])
  return model


def _snake_case(name: str) -> str:
  return ''.join(
    f'_{char.lower()}' if char.isupper() and index else char.lower()
    for index, char in enumerate(name)
  )


def to_keras_model(
  module: nn.Module | nnx.Module,
  variables: Mapping[str, Any] | None = None,
  *,
  input_shape: Sequence[int | None] | None = None,
  name: str | None = None,
) -> Any:
  """The native Keras 3 model of a flax_dense model, weights set.

  The reverse of :func:`~flax_dense.from_keras`: each layer of a
  :class:`~flax_dense.KerasSequential` or :class:`~flax_dense.KerasFunctional`
  (or one flax_dense layer) becomes its Keras layer with the same weights
  and name, so
  ``keras_model.predict(x)`` equals ``module.apply(variables, x)``:
  ``flax.linen.Dense`` as ``Dense``, :class:`~flax_dense.PerPositionDense`
  as ``EinsumDense('abc,bcd->abd')``, :class:`~flax_dense.ConstProduct` as
  the small Keras layer ``flax_dense>ConstProduct`` shipped with the
  package, and ``Activation``, ``ActivityRegularization``, ``Dropout``,
  ``SpatialDropout1D/2D/3D``, ``Flatten``, ``Reshape``, ``Permute``,
  ``RepeatVector``, ``Masking``, ``GlobalAveragePooling1D`` and
  ``GlobalMaxPooling1D`` (without a mask) as Keras's. Masks flow as
  Keras's layers pass them; frozen layers (``constants``) are
  ``trainable=False``. Layers without a Keras counterpart (``Lambda``,
  ``AttentionDecoder``, ``LocallyConnected1D``, ``MultiIODense``, your own
  modules) raise: host those with :func:`to_keras`. A
  ``KerasFunctional`` becomes a functional ``keras.Model``: a layer called
  at several nodes is one Keras layer (shared weights), merges are Keras's
  merge layers, and ``input_shape`` is required, one shape per input.

  Example usage::

    >>> import os; _ = os.environ.setdefault('KERAS_BACKEND', 'jax')
    >>> import keras, jax, jax.numpy as jnp, numpy as np
    >>> import flax_dense as fd
    >>> module = fd.PerPositionDense(3, activation='relu')
    >>> variables = module.init(jax.random.key(0), jnp.ones((1, 5, 4)))
    >>> model = fd.to_keras_model(module, variables, input_shape=(5, 4))
    >>> [type(layer).__name__ for layer in model.layers]
    ['EinsumDense']
    >>> x = np.ones((2, 5, 4), np.float32)
    >>> bool(np.allclose(model.predict(x, verbose=0),
    ...                  module.apply(variables, x), atol=1e-6))
    True

  Args:
    module: a :class:`~flax_dense.KerasSequential` or a single layer
      (linen), or their NNX twins (converted by ``fd.nnx.to_linen``).
    variables: the linen module's variables; ``None`` for NNX.
    input_shape: the shape of one example, to start the model with
      ``keras.Input(input_shape)`` (so it is built and ``summary()`` shows
      shapes); default: none, the layers are built from their weights. For
      a ``KerasFunctional``, required: a list of shapes, one per input.
    name: the Keras model's name.

  Returns:
    A ``keras.Sequential``, or a functional ``keras.Model`` for a
    ``KerasFunctional``.

  Raises:
    ImportError: without Keras 3.
    RuntimeError: if Keras runs on another backend than JAX.
    ValueError: for a layer with no Keras counterpart (naming it and what
      to do), an activation given as a function, mask flows other than
      Keras's, variables missing or given for an NNX module, or a
      ``KerasFunctional`` without one ``input_shape`` per input.
  """
  keras = import_keras('to_keras_model')
  module, variables = linen_form('to_keras_model', module, variables)
  if not isinstance(module, nn.Module):
    raise TypeError(
      'to_keras_model: module must be a flax_dense layer or'
      f' KerasSequential (linen or NNX), got {type(module).__name__}.'
    )
  if not isinstance(variables, Mapping):
    raise ValueError(
      'to_keras_model: a linen module needs its variables, the mapping'
      f' module.init returns; got {type(variables).__name__}.'
    )
  # Imported here: it imports Keras (which import_keras checked above) and
  # registers the package's own Keras layers, which some specs export to.
  from flax_dense._src.keras import objects  # noqa: F401

  unboxed: dict[str, Any] = nn.meta.unbox(dict(variables))
  if isinstance(module, KerasFunctional):
    return _functional(keras, module, unboxed, input_shape, name)
  steps = _steps(module, unboxed)
  _check_mask_flows(steps)
  made = [_keras_layer(keras, step) for step in steps]
  layers = [layer for layer, _, _ in made]
  if input_shape is not None:
    layers = [keras.Input(tuple(input_shape)), *layers]
  model = keras.Sequential(layers, name=name)
  for layer, weights, build_shape in made:
    if not weights:
      continue
    if not layer.built:
      layer.build(build_shape)
    layer.set_weights([np.asarray(w) for w in weights])
  return model
