"""Keras-style model summaries of Flax modules, without running the model."""

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

from flax_dense._src.variables import Loss

#: Linen collections that hold sown values rather than weights; not counted.
NOT_WEIGHTS = frozenset({'intermediates', 'losses', 'perturbations'})

#: NNX variable types that are not weights, so not counted: sown values (the
#: twins of :data:`NOT_WEIGHTS`) and rng state, which linen keeps outside its
#: variables.
NNX_NOT_WEIGHTS: tuple[type[nnx.Variable], ...] = (
  Loss,
  nnx.Intermediate,
  nnx.Perturbation,
  nnx.RngState,
)


@dataclasses.dataclass(frozen=True)
class LayerSummary:
  """One row of a :class:`Summary`: a module call.

  Attributes:
    path: the module's path in the model, e.g. ``'Dense_0'`` for linen or
      ``'dense1'``, ``'layers/0'`` for NNX attributes (``''`` is the model
      itself).
    type: the module's class name.
    output_shape: the output's shape; a pytree of shapes for several outputs.
    params: number of weights of the module and its submodules.
    trainable_params: the part of ``params`` that is trained: the ``params``
      collection of linen, ``nnx.Param`` variables of NNX.
  """

  path: str
  type: str
  output_shape: Any
  params: int
  trainable_params: int


@dataclasses.dataclass(frozen=True)
class Summary:
  """Parameter counts and per-layer output shapes of a model.

  Attributes:
    rows: one :class:`LayerSummary` per module, in call order, the model
      first.
    total_params: number of weights in every weight collection (linen) or
      variable type (NNX).
    trainable_params: number of weights in the ``params`` collection, or in
      ``nnx.Param`` variables.
    non_trainable_params: number of the other weights: the ``constants`` and
      ``batch_stats`` collections, ``fd.nnx.Constant`` and
      ``nnx.BatchStat`` variables, ... Sown values (linen's
      ``intermediates`` and ``losses``, NNX's ``nnx.Intermediate`` and
      ``fd.nnx.Loss``) and NNX rng state are not weights.
    total_bytes: memory the weights take.
    trainable_bytes: memory the trainable weights take.
  """

  rows: tuple[LayerSummary, ...]
  total_params: int
  trainable_params: int
  non_trainable_params: int
  total_bytes: int
  trainable_bytes: int

  def __str__(self) -> str:
    header = ('Layer (type)', 'Output Shape', 'Param #')
    body = [
      (
        f'{row.path or "(model)"} ({row.type})',
        _format_shape(row.output_shape),
        f'{row.params:,}',
      )
      for row in self.rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(3)]

    def line(cells):
      return (
        f'{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}'
        f'  {cells[2]:>{widths[2]}}'
      )

    rule = '-' * len(line(header))
    non_trainable_bytes = self.total_bytes - self.trainable_bytes
    return '\n'.join(
      [
        rule,
        line(header),
        rule.replace('-', '='),
        *map(line, body),
        rule,
        f'Total params: {self.total_params:,}'
        f' ({_format_bytes(self.total_bytes)})',
        f'Trainable params: {self.trainable_params:,}'
        f' ({_format_bytes(self.trainable_bytes)})',
        f'Non-trainable params: {self.non_trainable_params:,}'
        f' ({_format_bytes(non_trainable_bytes)})',
        rule,
      ]
    )


def _is_shape(value: Any) -> bool:
  return isinstance(value, tuple) and all(isinstance(d, int) for d in value)


def _format_shape(shape: Any) -> str:
  if _is_shape(shape):
    return str(shape)
  return ', '.join(map(str, jax.tree.leaves(shape, is_leaf=_is_shape)))


def _format_bytes(size: int) -> str:
  scaled = float(size)
  for unit in ('B', 'KB', 'MB', 'GB'):
    if scaled < 1024 or unit == 'GB':
      return f'{scaled:.2f} {unit}' if unit != 'B' else f'{size} B'
    scaled /= 1024
  raise AssertionError('unreachable')


def _count(tree: Any) -> tuple[int, int]:
  """Number of elements and bytes in a pytree of shaped arrays."""
  leaves = jax.tree.leaves(nn.meta.unbox(tree))
  count = sum(math.prod(leaf.shape) for leaf in leaves)
  size = sum(
    math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves
  )
  return count, size


def _subtree(tree: Any, path: tuple[str, ...]) -> Any:
  for name in path:
    if not isinstance(tree, dict) or name not in tree:
      return {}
    tree = tree[name]
  return tree


def summary(
  module: nn.Module | nnx.Module,
  *inputs: Any,
  rngs: Any = None,
  **kwargs: Any,
) -> Summary:
  """Summarises ``module`` applied to ``inputs``, without running it.

  Only shapes are computed (``jax.eval_shape``), so a model of billions of
  parameters applied to a large batch is summarised in a moment:

  * a linen module is initialised abstractly, so no weight is allocated;
  * an NNX module is already built: its weights are counted from its
    variables (``nnx.state``), and its call is traced abstractly over a
    copy (``nnx.split`` / ``nnx.merge``), so the model itself is left as it
    was (no dropout draw, no batch-statistics update). Build it with
    ``nnx.eval_shape(lambda: Model(..., rngs=nnx.Rngs(0)))`` to summarise a
    model too big to allocate.

  The rows are the ``__call__`` s of the model and its submodules, in call
  order, the first call of each; a submodule never called has no row.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> info = fd.summary(fd.PerPositionDense(10), jnp.ones((8, 1024, 256)))
    >>> info.total_params, info.trainable_params, info.non_trainable_params
    (2631680, 2631680, 0)
    >>> layer = nnx.eval_shape(  # NNX, abstract: no weight allocated
    ...   lambda: fd.nnx.PerPositionDense(1024, 256, 10, rngs=nnx.Rngs(0)))
    >>> info = fd.summary(layer, jnp.ones((8, 1024, 256)))
    >>> info.total_params, info.rows[0].output_shape
    (2631680, (8, 1024, 10))
    >>> print(fd.summary(fd.nnx.ConstProduct(3, weights=[1.0, 2.0, 3.0]),
    ...                  jnp.ones((2, 3))))
    ---------------------------------------------
    Layer (type)            Output Shape  Param #
    =============================================
    (model) (ConstProduct)  (2, 1)              3
    ---------------------------------------------
    Total params: 3 (12 B)
    Trainable params: 0 (0 B)
    Non-trainable params: 3 (12 B)
    ---------------------------------------------

  Args:
    module: the model: a linen module, or an NNX module instance (concrete
      or abstract).
    *inputs: its positional inputs: arrays or ``jax.ShapeDtypeStruct``,
      e.g. ``(batch, positions, features)``.
    rngs: for a linen module, the rngs of ``module.init``; default:
      ``params`` and ``dropout`` streams from fixed keys. For an NNX module,
      whose weights exist already, passed on to its call as ``rngs=`` when
      given (e.g. an ``nnx.Rngs``).
    **kwargs: keyword arguments of the module's ``__call__``: static values
      such as ``deterministic=True``, concrete arrays, or NNX objects such as
      an ``nnx.Rngs``.

  Returns:
    A :class:`Summary`; ``str()`` renders it as a table.

  Raises:
    TypeError: if ``module`` is neither a linen module nor an NNX module
      instance (e.g. an NNX class not yet built).
  """
  if isinstance(module, nnx.Module):
    if rngs is not None:
      kwargs = {**kwargs, 'rngs': rngs}
    return _summary_nnx(module, inputs, kwargs)
  if isinstance(module, nn.Module):
    return _summary_linen(module, inputs, rngs, kwargs)
  hint = ''
  if isinstance(module, type) and issubclass(module, nnx.Module):
    hint = (
      f' {module.__name__} is an NNX class: build the model first, e.g.'
      f' nnx.eval_shape(lambda: {module.__name__}(..., rngs=nnx.Rngs(0)))'
      ' to summarise it without allocating its weights.'
    )
  raise TypeError(
    'summary: module must be a flax.linen Module or an NNX Module instance,'
    f' got {module!r}.{hint}'
  )


def _summary_linen(
  module: nn.Module, inputs: tuple[Any, ...], rngs: Any, kwargs: dict
) -> Summary:
  """:func:`summary` of a linen module, initialised under ``eval_shape``."""
  calls: list[list[Any]] = []

  def record(next_fun, args, call_kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **call_kwargs)
    row = [context.module.path, type(context.module).__name__, None]
    calls.append(row)
    outputs = next_fun(*args, **call_kwargs)
    row[2] = jax.tree.map(np.shape, outputs)
    return outputs

  def init(*inputs):
    keys = rngs
    if keys is None:
      keys = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}
    with nn.intercept_methods(record):
      return module.init(keys, *inputs, **kwargs)

  variables = jax.eval_shape(init, *inputs)
  weights = {k: v for k, v in variables.items() if k not in NOT_WEIGHTS}

  def weights_at(path):
    return (
      [_subtree(tree, path) for tree in weights.values()],
      _subtree(weights.get('params', {}), path),
    )

  return _assemble(calls, weights_at)


def _summary_nnx(
  model: nnx.Module, inputs: tuple[Any, ...], kwargs: dict
) -> Summary:
  """:func:`summary` of an NNX module: its variables, and a traced call."""
  # NNX objects among the keyword arguments (an nnx.Rngs) are traced with
  # the model, as their state changes in the call; the rest is closed over.
  nodes = {k: v for k, v in kwargs.items() if isinstance(v, nnx.Pytree)}
  static = {k: v for k, v in kwargs.items() if k not in nodes}
  graphdef, state = nnx.split((model, nodes))
  calls: list[list[Any]] = []

  def forward(state, *inputs):
    copy, copied_nodes = nnx.merge(graphdef, state)
    paths = {id(sub): path for path, sub in nnx.iter_modules(copy)}
    with _recording_calls(copy) as recorded:
      copy(*inputs, **copied_nodes, **static)
    calls.extend(
      [paths[id(sub)], type(sub).__name__, shape]
      for sub, shape in recorded
      if id(sub) in paths
    )

  jax.eval_shape(forward, state, *inputs)
  submodules = dict(nnx.iter_modules(model))

  def weights_at(path):
    variables = jax.tree.leaves(
      nnx.state(submodules[path]),
      is_leaf=lambda leaf: isinstance(leaf, nnx.Variable),
    )
    weights = [v for v in variables if not isinstance(v, NNX_NOT_WEIGHTS)]
    return weights, [v for v in weights if isinstance(v, nnx.Param)]

  return _assemble(calls, weights_at)


@contextlib.contextmanager
def _recording_calls(model: nnx.Module) -> Iterator[list[list[Any]]]:
  """Records ``[module, output shapes]`` of every ``__call__`` in ``model``.

  The classes of the model's modules get a recording ``__call__`` for the
  duration, as ``nnx.capture(..., method_outputs=...)`` instruments them,
  and the rows come in call order, each appended as its call starts (the
  model before its layers).
  """
  calls: list[list[Any]] = []
  originals: dict[type, tuple[Any, Callable]] = {}
  for _, sub in nnx.iter_modules(model):
    cls = type(sub)
    call = next(
      (
        vars(base)['__call__']
        for base in cls.__mro__
        if '__call__' in vars(base)
      ),
      None,
    )
    if call is not None and cls not in originals:
      originals[cls] = (vars(cls).get('__call__'), call)

  def recording(cls, call):
    @functools.wraps(call)
    def recorded(self, *args, **kwargs):
      if type(self) is not cls:  # a subclass's super().__call__
        return call(self, *args, **kwargs)
      row = [self, None]
      calls.append(row)
      outputs = call(self, *args, **kwargs)
      row[1] = jax.tree.map(np.shape, outputs)
      return outputs

    return recorded

  for cls, (_, call) in originals.items():
    cls.__call__ = recording(cls, call)
  try:
    yield calls
  finally:
    for cls, (own, _) in originals.items():
      if own is None:
        del cls.__call__
      else:
        cls.__call__ = own


def _assemble(
  calls: list[list[Any]], weights_at: Callable[[tuple], tuple[Any, Any]]
) -> Summary:
  """The :class:`Summary` of ``[path, type, output shape]`` calls.

  ``weights_at(path)`` gives the weights and the trainable weights of the
  module at ``path`` (``()`` for the model), as pytrees of shaped arrays.
  """
  rows, seen = [], set()
  for path, type_name, output_shape in calls:
    if path in seen:
      continue
    seen.add(path)
    weights, trainable = weights_at(path)
    rows.append(
      LayerSummary(
        '/'.join(map(str, path)),
        type_name,
        output_shape,
        _count(weights)[0],
        _count(trainable)[0],
      )
    )
  weights, trainable = weights_at(())
  total, total_bytes = _count(weights)
  trainable, trainable_bytes = _count(trainable)
  return Summary(
    rows=tuple(rows),
    total_params=total,
    trainable_params=trainable,
    non_trainable_params=total - trainable,
    total_bytes=total_bytes,
    trainable_bytes=trainable_bytes,
  )
