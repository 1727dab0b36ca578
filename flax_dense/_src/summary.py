"""Keras-style model summaries of Flax modules, without allocating weights."""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

#: Collections that hold sown values rather than weights; they are not counted.
NOT_WEIGHTS = frozenset({'intermediates', 'losses', 'perturbations'})


@dataclasses.dataclass(frozen=True)
class LayerSummary:
  """One row of a :class:`Summary`: a module call.

  Attributes:
    path: the module's path in the model, e.g. ``'Dense_0'`` (``''`` is the
      model itself).
    type: the module's class name.
    output_shape: the output's shape; a pytree of shapes for several outputs.
    params: number of weights of the module and its submodules.
    trainable_params: the part of ``params`` in the ``params`` collection.
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
    total_params: number of weights in every weight collection.
    trainable_params: number of weights in the ``params`` collection.
    non_trainable_params: number of weights in the other weight collections
      (``constants``, ``batch_stats``, ...); sown collections such as
      ``intermediates`` and ``losses`` are not weights.
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
  for unit in ('B', 'KB', 'MB', 'GB'):
    if size < 1024 or unit == 'GB':
      return f'{size:.2f} {unit}' if unit != 'B' else f'{size} B'
    size /= 1024
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
  module: nn.Module, *inputs: Any, rngs: dict | None = None, **kwargs: Any
) -> Summary:
  """Summarises ``module`` applied to ``inputs``, without allocating weights.

  The model is initialised under ``jax.eval_shape``: only shapes are
  computed, so a model of billions of parameters is summarised in a moment.

  Example usage::

    >>> import flax.linen as nn, jax.numpy as jnp
    >>> import flax_dense as fd
    >>> info = fd.summary(fd.PerPositionDense(10), jnp.ones((8, 1024, 256)))
    >>> info.total_params, info.trainable_params, info.non_trainable_params
    (2631680, 2631680, 0)

  Args:
    module: the model.
    *inputs: its positional inputs: arrays or ``jax.ShapeDtypeStruct``.
    rngs: rngs for ``module.init``; default: ``params`` and ``dropout``
      streams from fixed keys.
    **kwargs: keyword arguments of the module's ``__call__`` (static values
      such as ``deterministic=True``, or arrays).

  Returns:
    A :class:`Summary`; ``str()`` renders it as a table.
  """
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

  rows, seen = [], set()
  for path, type_name, output_shape in calls:
    if path in seen:
      continue
    seen.add(path)
    params = sum(_count(_subtree(tree, path))[0] for tree in weights.values())
    trainable = _count(_subtree(weights.get('params', {}), path))[0]
    rows.append(
      LayerSummary('/'.join(path), type_name, output_shape, params, trainable)
    )
  total, total_bytes = _count(weights)
  trainable, trainable_bytes = _count(weights.get('params', {}))
  return Summary(
    rows=tuple(rows),
    total_params=total,
    trainable_params=trainable,
    non_trainable_params=total - trainable,
    total_bytes=total_bytes,
    trainable_bytes=trainable_bytes,
  )
