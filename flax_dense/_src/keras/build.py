"""A Keras model's graph to a flax_dense module: ``fd.from_keras``."""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.convert import from_linen
from flax_dense._src.keras import h5
from flax_dense._src.keras.imports import convert_layer
from flax_dense._src.keras.read import KerasModel, entry_name, read
from flax_dense._src.linen import recurrent as linen_recurrent
from flax_dense._src.linen.embedding import Embedding
from flax_dense._src.models.graph import (
  MERGES,
  OPERATIONS,
  Node,
  apply_steps,
  merge,
)
from flax_dense._src.models.linen import KerasFunctional, KerasSequential
from flax_dense._src.registry.spec import KerasLayer


def _tensors(value: Any) -> list[tuple[str, int, int]]:
  """The ``(layer, node, tensor)`` references in a Keras 3 call's args."""
  if isinstance(value, dict):
    if value.get('class_name') == '__keras_tensor__':
      history = value['config']['keras_history']
      if not h5.is_reference(history):
        raise ValueError(f'has a tensor reference {history!r:.60}')
      return [tuple(history[:3])]
    return [ref for item in value.values() for ref in _tensors(item)]
  if isinstance(value, list | tuple):
    return [ref for item in value for ref in _tensors(item)]
  return []


#: The keyword arguments of a Keras call that may hold tensors, by layer
#: class: the recurrent layers' ``initial_state``.
_KEYWORD_TENSORS = ('initial_state',)
#: The layers whose extra Keras 2 inputs (after the first) are the
#: ``initial_state``: tf.keras records ``lstm(x, initial_state=[h, c])`` as
#: the inputs ``[x, h, c]``.
_STATEFUL = (
  'SimpleRNN',
  'LSTM',
  'GRU',
  'Bidirectional',
  'CuDNNLSTM',
  'CuDNNGRU',
)

Reference = tuple[str, int, int]


def _inbound(
  node: Any,
) -> tuple[list[Reference], tuple[tuple[str, int], ...]]:
  """A node's input references, Keras 2 (lists) or Keras 3 (args) spelling,
  and the keywords among them.

  Keras 3 writes ``{'args': [...], 'kwargs': {...}}`` with tensors as
  ``{'class_name': '__keras_tensor__', 'config': {'keras_history': [layer,
  node, tensor]}}``; its ``mask`` keyword is Keras's own mask, which the
  graph recomputes; tensors of ``initial_state`` follow the positional
  ones, and the keywords say how many (as :class:`Node` keeps them).
  Keras 2 writes ``[[layer, node, tensor, kwargs], ...]``.
  """
  if isinstance(node, dict):
    kwargs = node.get('kwargs', {})
    if not isinstance(kwargs, dict):
      raise ValueError(f'has kwargs {kwargs!r:.60}, not an object')
    refs = _tensors(node.get('args', []))
    keywords = []
    for key, value in kwargs.items():
      given = _tensors(value)
      if key == 'mask' or not given:
        continue
      if key not in _KEYWORD_TENSORS:
        raise ValueError(f'takes tensors as the keyword argument {key!r}')
      refs += given
      keywords.append((key, len(given)))
    return refs, tuple(keywords)
  if not isinstance(node, list | tuple) or not all(map(h5.is_reference, node)):
    raise ValueError(
      f'has an inbound node {node!r:.60}, not a list of [layer, node,'
      ' tensor] references'
    )
  return [(ref[0], ref[1], ref[2]) for ref in node], ()


def _endpoints(value: Any) -> tuple[list[tuple[str, int, int]], bool]:
  """``input_layers`` / ``output_layers``: references, and whether single."""
  if h5.is_reference(value):
    return [tuple(value[:3])], True
  if isinstance(value, dict):
    refs = _tensors(value)
    if refs:
      return refs, False
    value = list(value.values())
  if (
    not isinstance(value, list | tuple)
    or not value
    or not all(map(h5.is_reference, value))
  ):
    raise ValueError(
      f'has inputs or outputs {value!r:.60}, not a non-empty list of'
      ' [layer, node, tensor] references'
    )
  return [tuple(ref[:3]) for ref in value], False


def _input_shape(config: dict[str, Any], where: str) -> tuple[int, ...] | None:
  """The per-example shape an InputLayer (or first layer) config gives.

  Raises:
    ValueError: naming ``where``, for a shape that is not a list of sizes.
  """
  shape = config.get('batch_shape') or config.get('batch_input_shape')
  if not shape:
    return None
  if not isinstance(shape, list | tuple) or not all(
    size is None or (validate.is_int(size) and size > 0) for size in shape
  ):
    raise ValueError(
      f'from_keras: {where} gives the input shape {shape!r:.60}, not a list'
      ' of sizes (null for any).'
    )
  if any(size is None for size in shape[1:]):
    return None
  return tuple(shape[1:])


def _abstract(shape: tuple[int, ...] | None) -> Any:
  """An abstract batch of one of ``shape``, or ``None`` when unknown."""
  if shape is None:
    return None
  return jax.ShapeDtypeStruct((1, *shape), jnp.float32)


def _abstract_outputs(
  layer: KerasLayer, run: Callable[..., Any], given: Sequence[Any]
) -> Any:
  """``jax.eval_shape(run, *given)``, a layer's failure as our own error.

  Weights that do not fit the inputs the config gives fail here, in the
  layer's own checks or in Flax's (``ScopeParamShapeError``).
  """
  try:
    return jax.eval_shape(run, *given)
  except (TypeError, ValueError, flax.errors.FlaxError) as error:
    raise ValueError(
      f'from_keras: {layer.describe()} cannot take inputs of shapes'
      f' {[tuple(x.shape[1:]) for x in given]} (per example) with its'
      f' weights {[tuple(w.shape) for w in layer.weights]}:'
      f' {str(error).splitlines()[0]}'
    ) from None


def _check_weights_used(model: KerasModel, used: set[str]) -> None:
  """Fails unless every layer holding weights gave them to the model."""
  unused = [
    name
    for name, layer in model.layers.items()
    if layer.weights and name not in used
  ]
  if unused:
    raise ValueError(
      f'from_keras: the weights of the layers {unused} of {model.source}'
      ' would be dropped: no output of the model depends on them, or their'
      ' layer class takes no weights; the model is damaged, or register a'
      ' converter for such a layer (fd.register_keras_layer).'
    )


def _build(model: KerasModel) -> tuple[nn.Module, dict[str, Any]]:
  """The linen module of ``model`` and its variables.

  Shapes are followed along the graph (abstractly, with ``jax.eval_shape``)
  where the inputs' are known, since a ``LocallyConnected1D``'s weights do
  not always tell its input's.
  """
  steps_of: dict[str, tuple[int, ...]] = {}
  used: set[str] = set()
  modules, names, flows = [], [], []
  variables: dict[str, dict[str, Any]] = {}

  def steps(layer_name: str, given: list[Any]) -> tuple[int, ...]:
    if layer_name not in steps_of:
      layer = model.layers[layer_name]
      if len(given) == 1 and given[0] is not None:
        layer = dataclasses.replace(
          layer, input_shape=tuple(given[0].shape[1:])
        )
      indices = []
      for step in convert_layer(layer, model.trainable[layer_name]):
        if step.variables:
          used.add(layer_name)
        if step.name in names:
          raise ValueError(
            f'from_keras: two layers of {model.source} would be named'
            f" '{step.name}'; rename the Keras layer of that name."
          )
        for collection, tree in step.variables.items():
          variables.setdefault(collection, {})[step.name] = tree
        indices.append(len(modules))
        modules.append(step.module)
        names.append(step.name)
        flows.append(step.mask_flow)
      steps_of[layer_name] = tuple(indices)
      if layer.weights and layer_name not in used:
        _check_weights_used(model, {*model.layers} - {layer_name})
    return steps_of[layer_name]

  def shapes_after(
    layer_name: str, indices, given: list[Any], keywords=()
  ) -> Any:
    """The abstract outputs of the steps, or ``None`` when unknown."""
    if any(x is None for x in given):
      return None
    # Ids for an Embedding, whatever dtype the input layer declared.
    given = [
      jax.ShapeDtypeStruct(x.shape, jnp.int32)
      if position == 0
      and indices
      and isinstance(modules[indices[0]], Embedding)
      else x
      for position, x in enumerate(given)
    ]

    def call(index, module, inputs, kwargs):
      if getattr(module, 'deterministic', False) is None:
        kwargs['deterministic'] = True
      own = {
        c: tree[names[index]]
        for c, tree in variables.items()
        if names[index] in tree
      }
      inputs = inputs if isinstance(inputs, list) else [inputs]
      return module.apply(own, *inputs, **kwargs)

    def run(*inputs):
      named = {}
      for keyword, count in reversed(keywords):
        named[keyword] = list(inputs[len(inputs) - count :])
        inputs = inputs[: len(inputs) - count]
      outputs, _ = apply_steps(
        modules,
        None,
        indices,
        inputs[0] if len(inputs) == 1 else list(inputs),
        None,
        call,
        named,
      )
      return outputs

    return _abstract_outputs(model.layers[layer_name], run, given)

  config = model.config
  if model.class_name == 'Sequential':
    order = [
      name
      for name in model.layers
      if model.layers[name].class_name != 'InputLayer'
    ]
    entries = list(model.layers.values())
    current = _abstract(
      _input_shape(entries[0].config, entries[0].describe())
      if entries
      else None
    ) or _abstract(
      _input_shape(
        {'batch_shape': config.get('build_input_shape')}, model.source
      )
    )
    for name in order:
      if name in model.operations:
        _operation(model, name, 0)
      _check_no_merge(model, name)
      indices = steps(name, [current])
      current = shapes_after(name, indices, [current])
    _check_weights_used(model, used)
    module = KerasSequential(tuple(modules), tuple(names), tuple(flows))
    return module, variables
  # A functional graph: nodes resolved once their inputs are.
  try:
    inputs, _ = _endpoints(config['input_layers'])
    outputs, single = _endpoints(config['output_layers'])
    pending, keywords_of = [], {}
    for entry in config['layers']:
      if entry.get('class_name') == 'InputLayer':
        continue
      for index, node in enumerate(entry.get('inbound_nodes', [])):
        refs, keywords = _inbound(node)
        if (
          not keywords
          and len(refs) > 1
          and entry.get('class_name') in _STATEFUL
        ):
          keywords = (('initial_state', len(refs) - 1),)
        keywords_of[(entry['name'], index)] = keywords
        pending.append((entry['name'], index, refs))
  except (KeyError, TypeError, ValueError, IndexError) as error:
    raise ValueError(
      f'from_keras: the functional config of {model.source} is not one'
      f' Keras writes ({type(error).__name__}: {error}).'
    ) from None
  # Only the calls the outputs need: Keras 3 also records the ops that make
  # masks (NotEqual, Any), which feed mask= keywords only.
  calls = {(name, index): refs for name, index, refs in pending}
  needed, todo = set(), [ref[:2] for ref in outputs]
  while todo:
    call = todo.pop()
    if call in calls and call not in needed:
      needed.add(call)
      todo += [ref[:2] for ref in calls[call]]
  pending = [entry for entry in pending if entry[:2] in needed]
  if len(outputs) == 1:
    single = True  # Keras 3 and tf.keras return the one output itself
  tensor_of = {
    (name, node, tensor): i for i, (name, node, tensor) in enumerate(inputs)
  }
  count = len(inputs)
  shapes = [
    _abstract(
      _input_shape(model.layers[name].config, model.layers[name].describe())
    )
    for name, _, _ in inputs
  ]
  nodes = []
  while pending:
    ready = [
      entry for entry in pending if all(ref in tensor_of for ref in entry[2])
    ]
    if not ready:
      name, _, refs = pending[0]
      missing = [ref for ref in refs if ref not in tensor_of]
      raise ValueError(
        f"from_keras: layer '{name}' of {model.source} takes"
        f' {missing}, which no input or layer of the model makes.'
      )
    for entry in ready:
      pending.remove(entry)
      name, node_index, refs = entry
      layer = model.layers[name]
      uses = [
        ref[2]
        for ref in [r for e in pending for r in e[2]] + outputs
        if ref[:2] == (name, node_index)
      ]
      made = max([0, *uses]) + 1
      node_inputs = tuple(tensor_of[ref] for ref in refs)
      given = [shapes[t] for t in node_inputs]
      if name in model.operations or layer.class_name in MERGES:
        _check_made(layer, made, 1)
        _check_merge_inputs(layer, len(node_inputs))
        nodes.append(
          Node(
            node_inputs,
            merge=layer.class_name,
            options=_operation(model, name, node_index)
            if name in model.operations
            else _merge(layer, model.keras3),
          )
        )
        options = dict(nodes[-1].options)
        made_shapes = (
          [
            _abstract_outputs(
              layer,
              lambda *x, o=options, k=layer.class_name: merge(k, o, x),
              given,
            )
          ]
          if None not in given
          else [None]
        )
      else:
        keywords = keywords_of[(name, node_index)]
        taken = sum(count for _, count in keywords)
        positional = given[: len(given) - taken]
        indices = steps(name, positional)
        out = shapes_after(name, indices, given, keywords)
        # Every output the layer makes, the model's or not (a decoder's
        # states), so that the graph numbers them as the layer returns them.
        made_shapes = []
        makes = _outputs_of(modules[indices[-1]]) if indices else None
        if out is not None:
          made_shapes = list(out) if isinstance(out, list | tuple) else [out]
          makes = len(made_shapes)
        made = _check_made(
          layer, made, _MAX_OUTPUTS if makes is None else makes
        )
        made = made if makes is None else makes
        nodes.append(Node(node_inputs, made, indices, keywords=keywords))
      shapes += (made_shapes + [None] * made)[:made]
      for tensor in range(made):
        tensor_of[(name, node_index, tensor)] = count + tensor
      count += made
  missing = [ref for ref in outputs if ref not in tensor_of]
  if missing:
    raise ValueError(
      f'from_keras: the outputs {missing} of {model.source} are made by no'
      ' layer of the model.'
    )
  _check_weights_used(model, used)
  output_ids = tuple(tensor_of[ref] for ref in outputs)
  chain = (
    len(inputs) == 1
    and single
    and all(
      n.inputs == (k,) and n.outputs == 1 and not n.merge
      for k, n in enumerate(nodes)
    )
    and output_ids == (count - 1,)
    and len({n.steps for n in nodes}) == len(nodes)
  )
  if chain:
    module = KerasSequential(tuple(modules), tuple(names), tuple(flows))
  else:
    module = KerasFunctional(
      tuple(modules),
      tuple(names),
      tuple(flows),
      tuple(nodes),
      len(inputs),
      output_ids,
      single,
    )
  return module, variables


def _outputs_of(module: nn.Module) -> int | None:
  """How many outputs a recurrent layer returns, else ``None``."""
  if isinstance(module, linen_recurrent.Bidirectional):
    count = _outputs_of(module.layer) or 1
    merged = 1 if module.merge_mode is not None else 2
    return merged + 2 * (count - 1)
  if isinstance(module, linen_recurrent.RECURRENT_LAYERS):
    states = 2 if isinstance(module, linen_recurrent.LSTM) else 1
    return 1 + states if module.return_state else 1
  return None


#: The most outputs a layer is taken to make when its inputs' shapes are
#: unknown (so its outputs' too): a reference beyond is a damaged config.
_MAX_OUTPUTS = 64


def _check_made(layer: KerasLayer, used: int, makes: int) -> int:
  """``used``, or our error when the model takes more outputs than made."""
  if used > makes:
    raise ValueError(
      f'from_keras: the model takes output {used - 1} of {layer.describe()},'
      f' which makes {makes}.'
    )
  return used


def _check_merge_inputs(layer: KerasLayer, count: int) -> None:
  """Our error for a merge called on a number of tensors it cannot take."""
  two = layer.class_name in ('Subtract', 'Dot')
  if count == 0 or (two and count != 2):
    raise ValueError(
      f'from_keras: {layer.describe()} is called on {count} tensors; it'
      f' takes {"exactly 2" if two else "at least 1"}.'
    )


def _operation(model: KerasModel, name: str, node_index: int) -> tuple:
  """The merge options of a covered ``keras.ops`` call, else our error.

  Covered: ``keras.ops.add``, ``subtract``, ``multiply``, ``maximum`` and
  ``minimum`` of two tensors, called with nothing else.
  """
  operation = model.operations[name]
  class_name = operation.rpartition('.')[2]
  entry = next(e for e in model.config['layers'] if entry_name(e) == name)
  nodes = entry.get('inbound_nodes')
  node = (
    nodes[node_index]
    if isinstance(nodes, list | tuple) and node_index < len(nodes)
    else {}
  )
  node = node if isinstance(node, dict) else {}
  args = node.get('args')
  if (
    model.class_name != 'Sequential'
    and class_name in OPERATIONS
    and isinstance(args, list | tuple)
    and len(args) == 2
    and all(
      isinstance(arg, dict) and arg.get('class_name') == '__keras_tensor__'
      for arg in args
    )
    and not node.get('kwargs')
  ):
    return (('operation', True),)
  raise ValueError(
    f"from_keras: {model.source} calls the Keras operation '{name}'"
    f' ({operation}) directly; flax_dense imports only'
    ' keras.ops.add, subtract, multiply, maximum and minimum of two'
    ' tensors. Use a Keras layer for it (keras.layers.Add and the like),'
    ' or rebuild that part of the model in Flax.'
  )


def _check_no_merge(model: KerasModel, name: str) -> None:
  if model.layers[name].class_name in MERGES:
    raise ValueError(
      f'from_keras: {model.layers[name].describe()} is a merge layer in a'
      ' Sequential model, which passes it a single tensor.'
    )


def _merge(layer: KerasLayer, keras3: bool) -> tuple[tuple[str, Any], ...]:
  """The options of a merge node; tf.keras combines masks otherwise."""
  config = layer.config
  options = () if keras3 else (('keras2', True),)
  if layer.class_name == 'Concatenate':
    axis = config.get('axis', -1)
    if not validate.is_int(axis):
      raise layer.error(f'has axis {axis!r:.60}, not an integer.')
    return (('axis', axis), *options)
  if layer.class_name == 'Dot':
    axes = config.get('axes')
    axes = tuple(axes) if isinstance(axes, list) else axes
    if not validate.is_int(axes) and not (
      isinstance(axes, tuple)
      and len(axes) == 2
      and all(map(validate.is_int, axes))
    ):
      raise layer.error(f'has axes {axes!r:.60}, not an integer or two.')
    normalize = validate.check_bool(
      config.get('normalize', False), layer.describe(), 'normalize'
    )
    return (('axes', axes), ('normalize', normalize))
  return options


#: The front ends :func:`from_keras` builds for.
APIS = ('linen', 'nnx')


def _check_api(api: str, rngs: Any) -> None:
  if api not in APIS:
    raise ValueError(
      f'from_keras: api must be one of {APIS} (the front end of the model it'
      f' returns), got {api!r}.'
    )
  if api == 'nnx' and rngs is not None and not isinstance(rngs, nnx.Rngs):
    raise TypeError(
      'from_keras: rngs must be an nnx.Rngs (the streams of the dropout'
      f' layers) or None, got {rngs!r}.'
    )
  if api == 'linen' and rngs is not None:
    raise ValueError(
      "from_keras: rngs is for api='nnx', whose dropout layers keep their"
      ' streams; a linen module takes rngs= when applied, got'
      f' rngs={rngs!r} with api={api!r}.'
    )


def from_keras(
  model_or_path: Any,
  *,
  api: str = 'linen',
  rngs: nnx.Rngs | None = None,
) -> tuple[nn.Module, dict[str, Any]] | nnx.Module:
  """A Keras model as a Flax module and its variables, same outputs.

  Reads a built ``keras.Sequential`` or functional ``keras.Model``, the
  path of a ``.keras`` file (loaded with Keras 3), or the path of a Keras 2
  / tf.keras ``.h5`` file written by ``model.save('model.h5')`` (read with
  h5py alone: neither TensorFlow nor Keras is imported). Each layer becomes
  its flax_dense or Flax counterpart, named as in Keras; the table of every
  covered layer and activation and what it becomes is in
  ``docs/keras_import.md`` ("Coming from Keras"), and a layer class of your
  own imports once you :func:`register_keras_layer` a converter for it.

  A chain (one input, one output, each layer called once on the one
  before) becomes a :class:`KerasSequential`; any other functional graph
  (several inputs and outputs, branches, shared layers, merges) a
  :class:`KerasFunctional`, called as ``module.apply(variables, *inputs)``
  and returning what Keras's ``model(inputs)`` returns: one array, or a
  list. Masks flow as in Keras. Weights of layers set ``trainable = False``
  go to the ``constants`` collection, so :func:`flax_dense.summary` reports
  Keras's trainable and non-trainable counts. Weight regularizers and
  constraints, which only act in training, are not carried: see
  ``fd.weight_penalty`` and ``fd.constrain``.

  With ``api='nnx'`` the model is the NNX twin
  (:class:`flax_dense.nnx.KerasSequential` or
  :class:`flax_dense.nnx.KerasFunctional`, built by
  :func:`flax_dense.nnx.from_linen`) with the weights, frozen ones as
  ``fd.nnx.Constant``. It is returned in eval mode, so ``model(x)`` equals
  Keras's ``model(x)``; ``model.train()`` turns dropout on, drawing from
  ``rngs``.

  Example usage::

    >>> import os; _ = os.environ.setdefault('KERAS_BACKEND', 'jax')
    >>> import keras, jax, jax.numpy as jnp, numpy as np
    >>> import flax_dense as fd
    >>> model = keras.Sequential([
    ...     keras.Input((5, 3)), keras.layers.Masking(),
    ...     keras.layers.Dense(4, activation='relu', name='dense'),
    ...     keras.layers.GlobalAveragePooling1D()])
    >>> module, variables = fd.from_keras(model)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'dense': {'bias': (4,), 'kernel': (3, 4)}}}
    >>> x = np.ones((2, 5, 3), np.float32)
    >>> module.apply(variables, x).shape
    (2, 4)
    >>> nnx_model = fd.from_keras(model, api='nnx')
    >>> bool(jnp.allclose(nnx_model(x), module.apply(variables, x)))
    True

  Args:
    model_or_path: a built ``keras.Model``, or the path of a ``.keras`` or
      ``.h5`` file.
    api: ``'linen'`` for a linen module and its variables, ``'nnx'`` for an
      NNX model.
    rngs: with ``api='nnx'``, the ``nnx.Rngs`` the dropout layers draw from
      in training (``None``: pass ``rngs=`` when calling the model).

  Returns:
    With ``api='linen'``, ``(module, variables)``: a
    :class:`KerasSequential` or :class:`KerasFunctional` and
    ``{'params': ..., 'constants': ...}`` (collections without weights left
    out), keyed by the Keras layer names. With ``api='nnx'``, the NNX twin.

  Raises:
    ImportError: if Keras 3 is needed (a live model, a ``.keras`` file) and
      not installed.
    FileNotFoundError: for a path with no file.
    ValueError: for an unknown ``api``, ``rngs`` given with
      ``api='linen'``, a layer, activation, regularizer or EinsumDense
      equation that is not covered (naming the layer and its class, and how
      to register a converter), a subclassed or unbuilt model, a nested
      model, a file that is not a Keras model (corrupt, truncated,
      weights-only, written by Keras 1) or whose weights disagree with its
      config, or anything other than a Keras model or a path.
    TypeError: for ``rngs`` that is not an ``nnx.Rngs``.
  """
  _check_api(api, rngs)
  module, variables = _build(read(model_or_path))
  variables = jax.tree.map(jnp.asarray, variables)
  if api == 'linen':
    return module, variables
  return from_linen(module, variables, rngs=rngs)
