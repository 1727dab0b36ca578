"""Keras regularizers and constraints, the JAX way.

Keras attaches penalties and projections to layers as hidden state. Here
they are values and transforms:

- activity penalties (``ActivityRegularization``, the ``activity_regularizer``
  of ``PerPositionDense``) are computed by :func:`activity_penalty`, sown by
  the layers and summed by ``fd.collect_losses``;
- weight penalties (Keras's ``kernel_regularizer`` / ``bias_regularizer``)
  are a function of the params, :func:`weight_penalty`, added to the loss;
- weight constraints (Keras's ``kernel_constraint`` / ``bias_constraint``)
  are an optax transform, :func:`constrain`, chained after the optimizer.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax.core import meta

from flax_dense._src import validate
from flax_dense._src.ops.reductions import narrow, widen

#: A penalty: a function from an array to a scalar.
Regularizer = Callable[[jax.Array], jax.Array]
#: A projection of a weight onto a constraint set, same shape in and out.
Constraint = Callable[[jax.Array], jax.Array]

# Keras's backend.epsilon(), which its norm constraints add to the norm.
_EPSILON = 1e-7


def l1_l2(l1: float = 0.0, l2: float = 0.0) -> Regularizer:
  """The penalty of Keras ``regularizers.L1L2``.

  ``l1 * sum(|x|) + l2 * sum(x ** 2)`` over every entry of ``x``, in the
  dtype of ``x``. Keras's ``L1(a)`` is ``l1_l2(l1=a)`` and ``L2(a)`` is
  ``l1_l2(l2=a)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.l1_l2(l1=0.1, l2=0.5)(jnp.array([1.0, -2.0]))
    Array(2.8, dtype=float32)

  Args:
    l1: factor of the L1 norm, non-negative.
    l2: factor of the squared L2 norm, non-negative.

  Returns:
    A function from an array to a scalar.

  Raises:
    TypeError: if a factor is not a real number (a bool, a string, ...).
    ValueError: if a factor is negative, infinite or NaN.
  """
  l1 = validate.check_factor(l1, 'l1_l2', 'l1')
  l2 = validate.check_factor(l2, 'l1_l2', 'l2')

  def regularizer(x: jax.Array) -> jax.Array:
    # float16 and bfloat16 weights are summed in float32: the sum over a
    # large kernel would overflow or stall in their own dtype.
    x = jnp.asarray(x)
    wide = widen(x)
    penalty = jnp.zeros((), wide.dtype)
    if l1:
      penalty += jnp.asarray(l1, wide.dtype) * jnp.sum(jnp.abs(wide))
    if l2:
      penalty += jnp.asarray(l2, wide.dtype) * jnp.sum(jnp.square(wide))
    return narrow(penalty, x.dtype)

  return regularizer


def activity_penalty(regularizer: Regularizer, outputs: jax.Array) -> jax.Array:
  """Keras 3's activity penalty of a layer's ``outputs``.

  As Keras 3 does, the penalty is divided by the batch size, the size of
  the leading axis (a scalar output is not divided).

  Args:
    regularizer: the penalty, e.g. :func:`l1_l2`.
    outputs: the layer's outputs, ``(B, ...)``.

  Returns:
    A scalar.
  """
  penalty = regularizer(outputs)
  if outputs.ndim:
    penalty = penalty / max(outputs.shape[0], 1)
  return penalty


def _names(names: Any, caller: str) -> tuple[str, ...]:
  """``names`` as a tuple of strings, checked."""
  if isinstance(names, str):
    return (names,)
  if (
    not isinstance(names, tuple | list)
    or not names
    or not all(isinstance(name, str) for name in names)
  ):
    raise TypeError(
      f'{caller}: names must be a parameter name or a non-empty tuple of'
      f' them (strings), got {names!r} of type {type(names).__name__}.'
    )
  return tuple(names)


def _path(key_path: tuple[Any, ...]) -> str:
  """``'Dense_0/kernel'`` for a linen params path or an NNX state path."""
  names = []
  for key in key_path:
    if isinstance(key, jax.tree_util.GetAttrKey):
      # The array inside an ``nnx.Variable`` is its attribute ``value``.
      if key.name != 'value':
        names.append(key.name)
    else:
      names.append(str(getattr(key, 'key', getattr(key, 'idx', key))))
  return '/'.join(names)


def _selects(path: str, names: tuple[str, ...]) -> bool:
  """Whether ``names`` holds ``path`` or one of its trailing parts."""
  return any(path == name or path.endswith('/' + name) for name in names)


def _check_names(params: Any, names: tuple[str, ...], caller: str) -> None:
  paths = [_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for name in names:
    if not any(_selects(path, (name,)) for path in paths):
      raise ValueError(
        f'{caller}: no parameter is named {name!r} (a name selects the'
        f' parameters whose path ends with it); the paths are: {paths}.'
      )


def weight_penalty(
  params: Any,
  regularizer: Regularizer,
  names: str | Sequence[str] = 'kernel',
) -> jax.Array:
  """Sum of ``regularizer`` over the selected params: Keras's weight losses.

  Keras's ``Dense(..., kernel_regularizer=L2(a))`` adds ``a * sum(w ** 2)``
  of the kernel to the loss (not divided by the batch size); here that is
  ``loss + weight_penalty(params, fd.l1_l2(l2=a), 'kernel')``, and
  ``bias_regularizer`` is ``names='bias'``. A name selects every parameter
  whose path ends with it: ``'kernel'`` is every kernel,
  ``'PerPositionDense_0/kernel'`` one layer's.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> params = {'Dense_0': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)}}
    >>> fd.weight_penalty(params, fd.l1_l2(l2=0.5), 'kernel')
    Array(3., dtype=float32)

  Args:
    params: a pytree of params (e.g. ``variables['params']``).
    regularizer: the penalty of one parameter, e.g. :func:`l1_l2`.
    names: parameter names or path suffixes, ``'/'``-separated.

  Returns:
    A scalar, differentiable with respect to ``params``.

  Raises:
    TypeError: if ``regularizer`` is not callable or ``names`` not strings.
    ValueError: if a name selects no parameter.
  """
  names = _names(names, 'weight_penalty')
  validate.check_callable(
    regularizer,
    'weight_penalty',
    'regularizer',
    'a function from an array to a scalar, e.g. fd.l1_l2(l2=0.01)',
  )
  params = meta.unbox(params)
  _check_names(params, names, 'weight_penalty')
  penalties = [
    regularizer(leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    if _selects(_path(path), names)
  ]
  return sum(penalties[1:], penalties[0])


def min_max_norm(
  min_value: float = 0.0,
  max_value: float = 1.0,
  rate: float = 1.0,
  axis: int | Sequence[int] = 0,
) -> Constraint:
  """Keras ``constraints.MinMaxNorm``: norms along ``axis`` kept in a range.

  ``w * (rate * clip(n, min_value, max_value) + (1 - rate) * n) / (eps + n)``
  with ``n`` the L2 norm of ``w`` along ``axis`` and ``eps = 1e-7``.
  ``axis=0`` constrains each output unit of a ``(D, K)`` Dense kernel; for a
  ``(P, D, K)`` :class:`PerPositionDense` kernel the same is ``axis=1``.

  Args:
    min_value: the smallest norm.
    max_value: the largest norm.
    rate: how far to move towards the range in one projection, in [0, 1].
    axis: axis or axes of the norm.

  Returns:
    A projection ``w -> w'`` for :func:`constrain`.

  Raises:
    TypeError: if a value is not a real number or ``axis`` not an integer
      or a tuple of them.
    ValueError: if a norm is negative or infinite, ``min_value >
      max_value``, or ``rate`` is outside [0, 1].
  """
  return _min_max_norm(min_value, max_value, rate, axis, 'min_max_norm')


def _min_max_norm(
  min_value: Any, max_value: Any, rate: Any, axis: Any, caller: str
) -> Constraint:
  """:func:`min_max_norm`, its arguments checked in the name of ``caller``."""
  min_value = validate.check_factor(min_value, caller, 'min_value')
  max_value = validate.check_factor(max_value, caller, 'max_value')
  if min_value > max_value:
    raise ValueError(
      f'{caller}: min_value must be at most max_value, got min_value='
      f'{min_value} and max_value={max_value}.'
    )
  rate = validate.check_real(
    rate, caller, 'rate', 'a float in [0, 1]', minimum=0.0, maximum=1.0
  )
  axis = validate.check_axes(axis, caller)

  def constraint(w: jax.Array) -> jax.Array:
    w = jnp.asarray(w)
    for a in (axis,) if isinstance(axis, int) else axis:
      if not -w.ndim <= a < w.ndim:
        raise ValueError(
          f'{caller}: axis {axis} is out of range for a weight of shape'
          f' {w.shape}.'
        )
    # The norms of float16 and bfloat16 weights are taken in float32.
    wide = widen(w)
    norms = jnp.sqrt(jnp.sum(jnp.square(wide), axis=axis, keepdims=True))
    desired = rate * jnp.clip(norms, min_value, max_value) + (1 - rate) * norms
    return narrow(wide * (desired / (_EPSILON + norms)), w.dtype)

  return constraint


def max_norm(
  max_value: float = 2.0, axis: int | Sequence[int] = 0
) -> Constraint:
  """Keras ``constraints.MaxNorm``: norms along ``axis`` at most ``max_value``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.max_norm(1.0)(jnp.array([[3.0], [4.0]]))
    Array([[0.6],
           [0.8]], dtype=float32)

  Args:
    max_value: the largest norm.
    axis: axis or axes of the norm, see :func:`min_max_norm`.

  Returns:
    A projection ``w -> w'`` for :func:`constrain`.

  Raises:
    TypeError: if ``max_value`` is not a real number or ``axis`` not an
      integer or a tuple of them.
    ValueError: if ``max_value`` is negative or infinite.
  """
  return _min_max_norm(0.0, max_value, 1.0, axis, 'max_norm')


def unit_norm(axis: int | Sequence[int] = 0) -> Constraint:
  """Keras ``constraints.UnitNorm``: norms along ``axis`` equal to 1.

  Args:
    axis: axis or axes of the norm, see :func:`min_max_norm`.

  Returns:
    A projection ``w -> w'`` for :func:`constrain`.

  Raises:
    TypeError: if ``axis`` is not an integer or a tuple of them.
  """
  return _min_max_norm(1.0, 1.0, 1.0, axis, 'unit_norm')


def non_neg() -> Constraint:
  """Keras ``constraints.NonNeg``: negative weights set to zero.

  Returns:
    A projection ``w -> max(w, 0)`` for :func:`constrain`.
  """
  return lambda w: jnp.maximum(w, 0)


def constrain(
  constraint: Constraint, names: str | Sequence[str] = 'kernel'
) -> optax.GradientTransformation:
  """An optax transform that projects the selected params after each step.

  Keras applies ``kernel_constraint`` to a weight right after the optimizer
  updates it. Chained last, this transform turns the update ``u`` of each
  selected parameter ``w`` into ``constraint(w + u) - w``, so that
  ``optax.apply_updates`` yields the projected weight (up to rounding)::

    optimizer = optax.chain(optax.adam(1e-3), fd.constrain(fd.non_neg()))

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp, optax
    >>> params = {'kernel': jnp.array([0.5, 1.0]), 'bias': jnp.array([0.1])}
    >>> grads = {'kernel': jnp.array([1.0, 1.0]), 'bias': jnp.array([1.0])}
    >>> optimizer = optax.chain(optax.sgd(1.0), fd.constrain(fd.non_neg()))
    >>> updates, _ = optimizer.update(grads, optimizer.init(params), params)
    >>> optax.apply_updates(params, updates)['kernel']
    Array([0., 0.], dtype=float32)

  Args:
    constraint: the projection, e.g. :func:`max_norm`.
    names: parameter names or path suffixes to constrain, see
      :func:`weight_penalty`; the others are left alone.

  Returns:
    A ``GradientTransformation`` whose ``update`` needs ``params``.

  Raises:
    TypeError: if ``constraint`` is not callable or ``names`` not strings.
    ValueError: from ``init`` if a name selects no parameter, from
      ``update`` if ``params`` is not given.
  """
  names = _names(names, 'constrain')
  validate.check_callable(
    constraint,
    'constrain',
    'constraint',
    'a projection w -> w of the same shape, e.g. fd.max_norm(2.0)',
  )

  def init_fn(params):
    _check_names(meta.unbox(params), names, 'constrain')
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
        'constrain: the update needs the params, call'
        ' optimizer.update(grads, state, params).'
      )

    def project(path, update, param):
      if not _selects(_path(path), names):
        return update
      return constraint(param + update) - param

    return jax.tree_util.tree_map_with_path(project, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)
