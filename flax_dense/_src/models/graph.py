"""The graph of an imported Keras model, run alike by linen and NNX.

A graph is a list of *nodes*, each one call of a Keras layer (a layer
called at several nodes shares one set of weights) or of a weightless merge
(``Add``, ``Concatenate``, ``Dot``, ...). Tensors are numbered in order:
first the model's inputs, then each node's outputs. Both front ends store
the same hashable description and run it with :func:`apply_graph`, so the
graph and its masks flow the same in linen and NNX.
"""

import dataclasses
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from flax_dense._src import validate
from flax_dense._src.ops.masking import MASK_FLOWS

#: Keras's merge layers, imported as weightless nodes of a graph.
MERGES = (
  'Add',
  'Average',
  'Concatenate',
  'Dot',
  'Maximum',
  'Minimum',
  'Multiply',
  'Subtract',
)

#: The ``keras.ops`` functions a functional model may call directly
#: (Keras 3 records them as operations of the graph), imported as merge
#: nodes with the option ``operation``: they broadcast, ignore masks and
#: give none.
OPERATIONS = ('Add', 'Maximum', 'Minimum', 'Multiply', 'Subtract')

#: The lower bound of the norm in ``Dot(normalize=True)``, Keras's epsilon.
_KERAS_EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class Node:
  """One call in a graph.

  Attributes:
    inputs: the numbers of the tensors it takes.
    outputs: how many tensors it makes (numbered after all before it).
    steps: for a layer, the indices of the modules applied in turn (a Keras
      ``Dense`` with an activation is ``nn.Dense`` then ``Activation``).
    merge: for a merge, the Keras class name; ``''`` for a layer.
    options: the merge's options, ``(('axis', -1),)`` and the like.
    keywords: for a layer given tensors as keyword arguments, as Keras's
      ``lstm(x, initial_state=[h, c])``: each keyword and how many of the
      last ``inputs`` it takes, as a list (``(('initial_state', 2),)``).
  """

  inputs: tuple[int, ...]
  outputs: int = 1
  steps: tuple[int, ...] = ()
  merge: str = ''
  options: tuple[tuple[str, Any], ...] = ()
  keywords: tuple[tuple[str, int], ...] = ()


def _check_flow(container: str, layers: Sequence[Any], index: int, flow: Any):
  """Raises our own error unless ``flow`` is one ``layers[index]`` can do."""
  if flow not in MASK_FLOWS:
    raise ValueError(
      f'{container}: mask_flow[{index}] must be one of {MASK_FLOWS}, got'
      f' {flow!r}.'
    )
  if flow == 'compute' and not hasattr(layers[index], 'compute_mask'):
    raise ValueError(
      f"{container}: mask_flow[{index}] is 'compute', which only a Masking"
      ' layer does (or another layer with a compute_mask method, such as'
      f' Embedding), but layer {index} is a {type(layers[index]).__name__}.'
    )


def apply_steps(
  layers: Sequence[Any],
  mask_flow: Sequence[str] | None,
  indices: Sequence[int],
  inputs: Any,
  mask: Any,
  call: Callable[[int, Any, Any, dict[str, Any]], Any],
  keywords: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
  """Runs ``layers[i]`` for ``i`` in ``indices`` in turn, passing the mask.

  A ``'compute'`` layer makes the mask from its inputs
  (``layer.compute_mask(inputs)``), ``'propagate'`` passes it on,
  ``'consume'`` gets it as ``mask=`` and ends it, ``'use'`` gets it and
  passes it on (to the first of several outputs), ``'drop'`` ends it.

  Args:
    layers: all the modules of the container.
    mask_flow: one of :data:`MASK_FLOWS` per module, or ``None`` (no mask).
    indices: the modules to run, in order.
    inputs: the first one's inputs.
    mask: the Keras mask of ``inputs``, or ``None``.
    call: ``call(index, layer, inputs, kwargs)`` applies one module, with
      ``kwargs`` holding the mask for a consuming one.
    keywords: keyword arguments of the first module (tensors Keras passes
      as keywords, such as ``initial_state``).

  Returns:
    ``(outputs, mask)`` of the last module.
  """
  keywords = keywords or {}
  for index in indices:
    layer = layers[index]
    flow = mask_flow[index] if mask_flow is not None else 'drop'
    kwargs = dict(keywords) if index == indices[0] else {}
    if flow in ('consume', 'use') and mask is not None:
      kwargs['mask'] = mask
    outputs = call(index, layer, inputs, kwargs)
    if flow == 'compute':
      mask = layer.compute_mask(inputs)
    elif flow not in ('propagate', 'use'):
      mask = None
    inputs = outputs
  return inputs, mask


def _batch_dot(x: jax.Array, y: jax.Array, axes: tuple[int, int]) -> jax.Array:
  """Keras's ``batch_dot``: per example, contracts ``axes`` (batch is 0)."""
  out = jax.vmap(
    lambda a, b: jnp.tensordot(a, b, axes=(axes[0] - 1, axes[1] - 1))
  )(x, y)
  return out[:, None] if out.ndim == 1 else out


def _dot(inputs: Sequence[jax.Array], axes: Any, normalize: bool) -> jax.Array:
  x, y = inputs
  if isinstance(axes, int):
    axes = (axes, axes)
  axes = tuple(a % t.ndim for a, t in zip(axes, (x, y), strict=True))
  if normalize:
    x, y = (
      t
      * jnp.minimum(
        jax.lax.rsqrt(jnp.sum(jnp.square(t), axis=a, keepdims=True)),
        1.0 / _KERAS_EPSILON,
      )
      for t, a in zip((x, y), axes, strict=True)
    )
  return _batch_dot(x, y, axes)


def _masked_merge(
  kind: str, inputs: Sequence[jax.Array], masks: Sequence[Any]
) -> jax.Array:
  """Keras 3's ``Multiply``, ``Maximum`` and ``Minimum`` of masked inputs.

  As ``keras/src/layers/merging/multiply.py`` and ``base_merge.py``'s
  ``_apply_merge_op_and_or_mask``: a masked step does not take part (it
  counts as 1 in a product, as the other inputs' value in a maximum or
  minimum), and a product is 0 where every input is masked.
  """
  full = [
    None if mask is None else jnp.broadcast_to(mask[..., None], x.shape)
    for x, mask in zip(inputs, masks, strict=True)
  ]
  if kind == 'Multiply':
    factors = [
      x if mask is None else jnp.where(mask, x, jnp.ones((), x.dtype))
      for x, mask in zip(inputs, full, strict=True)
    ]
    output = functools.reduce(operator.mul, factors)
    given = [mask for mask in full if mask is not None]
    if len(given) == len(full):
      kept = functools.reduce(jnp.logical_or, given)
      output = jnp.where(kept, output, jnp.zeros((), output.dtype))
    return output
  reduce = jnp.maximum if kind == 'Maximum' else jnp.minimum
  output, output_mask = inputs[0], full[0]
  for x, mask in zip(inputs[1:], full[1:], strict=True):
    if mask is not None:
      x = jnp.where(mask, x, output)
    if output_mask is not None:
      output = jnp.where(output_mask, output, x)
    output_mask = (
      jnp.logical_or(output_mask, mask)
      if mask is not None and output_mask is not None
      else None
    )
    output = reduce(output, x)
  return output


def merge(
  kind: str,
  options: dict[str, Any],
  inputs: Sequence[jax.Array],
  masks: Sequence[Any] | None = None,
) -> jax.Array:
  """The outputs of the Keras merge layer ``kind`` on batched ``inputs``.

  Args:
    kind: one of :data:`MERGES`.
    options: ``axis`` for ``Concatenate``, ``axes`` and ``normalize`` for
      ``Dot``; ``keras2`` for a model of Keras 2 / tf.keras, whose merges
      ignore the masks; ``operation`` for a ``keras.ops`` call (one of
      :data:`OPERATIONS`), which ignores them too.
    inputs: the tensors, ``(batch, ...)`` each, of one shape except along
      ``Concatenate``'s axis and ``Dot``'s axes.
    masks: the inputs' Keras masks (``None`` for none); Keras 3's
      ``Multiply``, ``Maximum`` and ``Minimum`` leave masked steps out.

  Returns:
    The merged tensor: elementwise sum, difference (exactly two inputs),
    product, mean, maximum or minimum; the concatenation along ``axis``;
    for ``Dot``, Keras's ``batch_dot`` (an output of rank 1 becomes
    ``(batch, 1)``).
  """
  if kind == 'Concatenate':
    return jnp.concatenate(inputs, axis=options.get('axis', -1))
  if kind == 'Dot':
    return _dot(inputs, options['axes'], options.get('normalize', False))
  if kind == 'Subtract':
    first, second = inputs
    return first - second
  if (
    kind in ('Multiply', 'Maximum', 'Minimum')
    and not options.get('keras2', False)
    and not options.get('operation', False)
    and masks is not None
    and any(mask is not None for mask in masks)
  ):
    return _masked_merge(kind, inputs, masks)
  reduce = {
    'Add': jnp.add,
    'Average': jnp.add,
    'Maximum': jnp.maximum,
    'Minimum': jnp.minimum,
    'Multiply': jnp.multiply,
  }[kind]
  output = inputs[0]
  for tensor in inputs[1:]:
    output = reduce(output, tensor)
  return output / len(inputs) if kind == 'Average' else output


def merge_mask(
  kind: str,
  options: dict[str, Any],
  inputs: Sequence[jax.Array],
  masks: Sequence[Any],
) -> Any:
  """The Keras mask of a merge's output, as the Keras that wrote it did.

  Keras 3 (``keras/src/layers/merging``): the elementwise merges OR their
  inputs' masks, and give none when any input has none; ``Concatenate``
  joins the masks along its axis (an input without one counts as all kept)
  and keeps a step where any of its features is kept. Keras 2 / tf.keras
  (``options['keras2']``): the elementwise merges AND the masks there are;
  ``Concatenate`` keeps a step where all are kept. ``Dot`` gives none.
  """
  if (
    kind == 'Dot'
    or options.get('operation', False)
    or all(mask is None for mask in masks)
  ):
    return None
  keras2 = options.get('keras2', False)
  if kind == 'Concatenate':
    full = [
      jnp.ones(tensor.shape, bool)
      if mask is None
      else jnp.broadcast_to(mask[..., None], tensor.shape)
      if mask.ndim < tensor.ndim
      else mask
      for tensor, mask in zip(inputs, masks, strict=True)
    ]
    joined = jnp.concatenate(full, axis=options.get('axis', -1))
    return (jnp.all if keras2 else jnp.any)(joined, axis=-1)
  if keras2:
    masks = [mask for mask in masks if mask is not None]
  elif any(mask is None for mask in masks):
    return None
  combine = jnp.logical_and if keras2 else jnp.logical_or
  output = masks[0]
  for mask in masks[1:]:
    output = combine(output, mask)
  return output


def _check_entries(
  container: str,
  field: str,
  value: Any,
  entries: str,
  accepts: Callable[[Any], bool],
  entry: str,
  count: int | None = None,
  optional: bool = False,
) -> None:
  """Raises our own error unless ``value`` is a tuple or list of entries.

  Args:
    container: the class name, for the messages.
    field: the argument's name.
    value: the argument.
    entries: what the entries are, plural, for the messages (``'str'``).
    accepts: whether an entry is of the right type.
    entry: what one entry must be (``'a str'``).
    count: the number of entries there must be (one per layer), or
      ``None`` for any number.
    optional: whether the message says that ``None`` is allowed too (the
      caller lets it through).

  Raises:
    TypeError: for a ``value`` other than a tuple or list (a string is not
      a sequence of strings here), or an entry that ``accepts`` refuses.
    ValueError: for a number of entries other than ``count``.
  """
  expected = f'{"None or " if optional else ""}a tuple or list of {entries}'
  if count is not None:
    expected += ', one per layer'
  if not isinstance(value, tuple | list):
    raise TypeError(
      f'{container}: {field} must be {expected}, got'
      f' {validate.describe_given(value)}.'
    )
  for index, item in enumerate(value):
    if not accepts(item):
      raise TypeError(
        f'{container}: {field}[{index}] must be {entry}, got'
        f' {validate.describe_given(item)}.'
      )
  if count is not None and len(value) != count:
    raise ValueError(
      f'{container}: {field} must have one entry per layer ({count}), got'
      f' {len(value)}: {tuple(value)}.'
    )


def _is_str(value: Any) -> bool:
  return isinstance(value, str)


def _check_layers(
  container: str,
  layers: Any,
  names: Any,
  mask_flow: Any,
  optional: bool,
) -> None:
  """The checks both containers make of ``layers``, ``names`` and
  ``mask_flow`` (each of the last two may be ``None`` if ``optional``)."""
  _check_entries(
    container, 'layers', layers, 'modules', callable, 'a module (callable)'
  )
  count = len(layers)
  for field, value, entries in (
    ('names', names, 'str'),
    ('mask_flow', mask_flow, f'str among {MASK_FLOWS}'),
  ):
    if value is not None or not optional:
      _check_entries(
        container, field, value, entries, _is_str, 'a str', count, optional
      )
  for index, flow in enumerate(mask_flow or ()):
    _check_flow(container, layers, index, flow)


def _is_keyword(value: Any) -> bool:
  return (
    isinstance(value, tuple | list)
    and len(value) == 2
    and isinstance(value[0], str)
    and validate.is_int(value[1])
  )


def _check_node(container: str, index: int, node: Node) -> None:
  """Raises ``TypeError`` unless the fields of ``node`` have their types,
  ``ValueError`` for a node that is neither a merge nor a layer's call."""
  field = f'nodes[{index}]'
  for name in ('inputs', 'steps'):
    _check_entries(
      container,
      f'{field}.{name}',
      getattr(node, name),
      'int',
      validate.is_int,
      'an int',
    )
  validate.check_int(node.outputs, container, f'{field}.outputs', minimum=1)
  validate.check_str(node.merge, container, f'{field}.merge')
  _check_entries(
    container,
    f'{field}.keywords',
    node.keywords,
    '(keyword, count) pairs',
    _is_keyword,
    'a (str, int) pair',
  )
  if not node.inputs or bool(node.merge) == bool(node.steps):
    raise ValueError(
      f'{container}: {field} must take one tensor or more and be either a'
      f" merge (no steps) or the call of one layer or more (merge ''),"
      f' got inputs {node.inputs}, steps {node.steps} and merge'
      f' {node.merge!r}.'
    )


def check_graph(
  container: str,
  layers: Sequence[Any],
  names: Sequence[str],
  mask_flow: Sequence[str],
  nodes: Sequence[Node],
  inputs: int,
  outputs: Sequence[int],
  single_output: bool,
) -> None:
  """Raises our own error unless the graph's parts fit together.

  Shared by the linen and NNX ``KerasFunctional``.

  Args:
    container: the class name, for the messages.
    layers: the modules, a tuple or list.
    names: one str per module, a tuple or list.
    mask_flow: one of :data:`MASK_FLOWS` per module, a tuple or list.
    nodes: the calls (:class:`Node`), a tuple or list.
    inputs: the number of inputs, a positive int.
    outputs: the numbers of the output tensors, a non-empty tuple or list
      of ints.
    single_output: a bool; ``True`` needs one output.

  Raises:
    TypeError: for an argument (or a node's field) of the wrong type: a str
      where a tuple or list of str is expected, a non-int where an int is,
      a node that is not a :class:`Node`.
    ValueError: for counts that differ from the layers', an unknown mask
      flow, a node that takes tensors or layers that do not exist before
      it, or outputs that are none of the tensors.
  """
  _check_layers(container, layers, names, mask_flow, optional=False)
  count = len(layers)
  _check_entries(
    container, 'nodes', nodes, 'Node', lambda v: isinstance(v, Node), 'a Node'
  )
  tensors = validate.check_int(inputs, container, 'inputs', minimum=1)
  for index, node in enumerate(nodes):
    _check_node(container, index, node)
    bad = [t for t in node.inputs if not 0 <= t < tensors]
    steps = [s for s in node.steps if not 0 <= s < count]
    if bad or steps or (node.merge not in ('', *MERGES)):
      raise ValueError(
        f'{container}: nodes[{index}] takes tensors {node.inputs} and layers'
        f' {node.steps} (merge {node.merge!r}), but only tensors 0 to'
        f' {tensors - 1}, layers 0 to {count - 1} and the merges {MERGES}'
        ' exist there.'
      )
    tensors += node.outputs
  _check_entries(
    container, 'outputs', outputs, 'int', validate.is_int, 'an int'
  )
  bad = [t for t in outputs if not 0 <= t < tensors]
  if bad or not outputs:
    raise ValueError(
      f'{container}: outputs {tuple(outputs)} must name tensors 0 to'
      f' {tensors - 1} of {inputs} inputs and the nodes (one at least).'
    )
  if validate.check_bool(single_output, container, 'single_output') and (
    len(outputs) != 1
  ):
    raise ValueError(
      f'{container}: single_output is True, which returns one output, but'
      f' outputs names {len(outputs)}: {tuple(outputs)}.'
    )


def apply_graph(
  layers: Sequence[Any],
  mask_flow: Sequence[str],
  nodes: Sequence[Node],
  outputs: Sequence[int],
  single_output: bool,
  inputs: Sequence[Any],
  call: Callable[[int, Any, Any, dict[str, Any]], Any],
) -> Any:
  """Runs a graph on ``inputs``, masks flowing as in Keras.

  Args:
    layers: the modules.
    mask_flow: one of :data:`MASK_FLOWS` per module.
    nodes: the calls, in an order where each takes earlier tensors only.
    outputs: the numbers of the output tensors.
    single_output: return the one output itself rather than a list.
    inputs: the model's inputs.
    call: ``call(index, layer, inputs, kwargs)`` applies one module; a
      module taking several tensors gets them as a list.

  Returns:
    The output, or the list of outputs.
  """
  tensors = [jnp.asarray(x) for x in inputs]
  masks: list[Any] = [None] * len(tensors)

  for node in nodes:
    given = [tensors[t] for t in node.inputs]
    given_masks = [masks[t] for t in node.inputs]
    if node.merge:
      options = dict(node.options)
      made = [merge(node.merge, options, given, given_masks)]
      made_masks = [merge_mask(node.merge, options, given, given_masks)]
    else:
      keywords = {}
      for keyword, count in reversed(node.keywords):
        keywords[keyword] = given[len(given) - count :]
        given, given_masks = given[:-count], given_masks[:-count]
      single = len(given) == 1
      value, mask = apply_steps(
        layers,
        mask_flow,
        node.steps,
        given[0] if single else given,
        given_masks[0] if single else None,
        call,
        keywords,
      )
      made = [value] if node.outputs == 1 else list(value)
      # A layer of several outputs (a recurrent one's outputs and states)
      # masks its first only, as Keras does; Bidirectional without a merge
      # masks both of its sequences.
      unmerged = getattr(layers[node.steps[-1]], 'merge_mode', '') is None
      first = [mask, mask] if unmerged and node.outputs > 1 else [mask]
      made_masks = (first + [None] * node.outputs)[: node.outputs]
    if len(made) != node.outputs:
      raise ValueError(
        f'KerasFunctional: a node of layers {node.steps} gave {len(made)}'
        f' outputs, its Keras layer {node.outputs}.'
      )
    tensors += made
    masks += made_masks
  results = [tensors[t] for t in outputs]
  return results[0] if single_output else results


def freeze(value: Any) -> Any:
  """A list as a tuple (a module must hash), anything else unchanged."""
  return tuple(value) if isinstance(value, list) else value


def check_inputs(container: str, expected: int, inputs: Sequence[Any]) -> None:
  if len(inputs) != expected:
    raise ValueError(
      f'{container}: the model takes {expected} inputs, as positional'
      f" arguments in the Keras model's order, got {len(inputs)}."
    )


def check_sequential(
  container: str,
  layers: Sequence[Any],
  names: Sequence[str] | None,
  mask_flow: Sequence[str] | None,
) -> None:
  """Raises our own error unless ``names`` and ``mask_flow`` fit ``layers``.

  Shared by the linen and NNX ``KerasSequential``.

  Args:
    container: the class name, for the messages.
    layers: the layers, in order, a tuple or list.
    names: one name per layer, or ``None``.
    mask_flow: one of :data:`MASK_FLOWS` per layer, or ``None``; only a
      layer with a ``compute_mask`` method may be ``'compute'``.

  Raises:
    TypeError: if ``layers`` is not a tuple or list of modules, or
      ``names`` or ``mask_flow`` is neither ``None`` nor a tuple or list of
      str (a str is not).
    ValueError: for a count that differs from the layers' or an unknown
      flow.
  """
  _check_layers(container, layers, names, mask_flow, optional=True)


def chain(count: int) -> tuple[Node, ...]:
  """The nodes of a sequential model of ``count`` layers: each layer takes
  the tensor before it."""
  return tuple(Node((index,), steps=(index,)) for index in range(count))


def apply_sequential(
  layers: Sequence[Any],
  mask_flow: Sequence[str] | None,
  inputs: Any,
  call: Callable[[int, Any, Any, dict[str, Any]], Any],
) -> Any:
  """Runs ``layers`` in order on ``inputs``, passing the Keras mask along.

  A sequential model is the graph :func:`chain`, run by
  :func:`apply_graph`; shared by the linen and NNX ``KerasSequential``.

  Returns:
    The last layer's outputs.
  """
  count = len(layers)
  flows = mask_flow if mask_flow is not None else ('drop',) * count
  return apply_graph(
    layers, flows, chain(count), (count,), True, [inputs], call
  )
