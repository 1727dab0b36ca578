"""Keras core layers that reshape or map their inputs, without weights."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src import activations
from flax_dense._src.batching import vmap_leading
from flax_dense._src.checks import check_positive_int

#: The two layouts of Keras's ``data_format`` argument.
DATA_FORMATS = ('channels_last', 'channels_first')


def check_data_format(data_format: str, layer: str) -> None:
  """Raises our own error for a ``data_format`` Keras would not accept."""
  if data_format not in DATA_FORMATS:
    raise ValueError(
      f'{layer}: data_format must be one of {DATA_FORMATS}, got'
      f' {data_format!r}.'
    )


def check_rank(inputs: jax.Array, rank: int, layout: str, layer: str) -> None:
  """Raises our own error when ``inputs`` is not of rank ``rank``."""
  if inputs.ndim != rank:
    raise ValueError(
      f'{layer}: inputs must be {layout} (rank {rank}), got shape'
      f' {inputs.shape}.'
    )


def resolve_target_shape(
  example_shape: tuple[int, ...], target_shape: Sequence[int], layer: str
) -> tuple[int, ...]:
  """The shape ``target_shape`` stands for, with its ``-1`` inferred.

  Args:
    example_shape: shape of one example (no batch axis).
    target_shape: non-negative sizes and at most one ``-1``.
    layer: name of the calling layer, used in error messages.

  Returns:
    ``target_shape`` with the ``-1`` replaced by the size it must have.

  Raises:
    ValueError: for more than one ``-1``, a size below ``-1`` or not an
      integer, or a total size that differs from the example's.
  """
  target_shape = tuple(target_shape)
  if any(
    isinstance(size, bool) or not isinstance(size, int) or size < -1
    for size in target_shape
  ):
    raise ValueError(
      f'{layer}: target_shape must hold non-negative integers and at most'
      f' one -1, got {target_shape}.'
    )
  if target_shape.count(-1) > 1:
    raise ValueError(
      f'{layer}: target_shape {target_shape} has more than one -1; only one'
      ' size can be inferred.'
    )
  size = math.prod(example_shape)
  known = math.prod(s for s in target_shape if s != -1)
  inferred = -1 in target_shape
  if not ((known and size % known == 0) if inferred else known == size):
    raise ValueError(
      f'{layer}: cannot reshape examples of shape {example_shape}'
      f' ({size} elements) into target_shape {target_shape}'
      f' ({"a multiple of " if inferred else ""}{known} elements); the'
      ' batch axis is not part of target_shape.'
    )
  if inferred:
    target_shape = tuple(size // known if s == -1 else s for s in target_shape)
  return target_shape


def reshape(inputs: jax.Array, target_shape: Sequence[int]) -> jax.Array:
  """Reshapes one example, as Keras ``Reshape`` does each example.

  Args:
    inputs: one example, any shape ``S``.
    target_shape: the new shape, of the same size as ``S``; one entry may be
      ``-1`` and is then inferred.

  Returns:
    ``inputs`` with shape ``target_shape``.
  """
  return jnp.reshape(inputs, tuple(target_shape))


def permute(inputs: jax.Array, dims: Sequence[int]) -> jax.Array:
  """Permutes the axes of one example with Keras's 1-based ``dims``.

  Args:
    inputs: one example ``(S_1, ..., S_n)``.
    dims: a permutation of ``1..n``; output axis ``i`` is input axis
      ``dims[i]``.

  Returns:
    ``(S_dims[0], ..., S_dims[n-1])``.
  """
  chex.assert_rank(
    inputs, len(dims), custom_message='permute: one axis per entry of dims.'
  )
  return jnp.transpose(inputs, [dim - 1 for dim in dims])


def flatten(inputs: jax.Array, data_format: str = 'channels_last') -> jax.Array:
  """Flattens one example into a vector, as Keras ``Flatten`` does.

  Args:
    inputs: one example ``(S_1, ..., S_n)``, rank 0 or more.
    data_format: with ``'channels_first'`` the leading (channel) axis is
      moved last before flattening, so the order of the features is that of
      the same data stored channels-last.

  Returns:
    ``(S_1 * ... * S_n,)``; a scalar example gives ``(1,)``.
  """
  if data_format == 'channels_first' and inputs.ndim > 1:
    inputs = jnp.moveaxis(inputs, 0, -1)
  return jnp.reshape(inputs, (-1,))


def repeat_vector(inputs: jax.Array, n: int) -> jax.Array:
  """Repeats one feature vector ``n`` times.

  Args:
    inputs: ``(F,)``.
    n: number of repetitions.

  Returns:
    ``(n, F)``: every row is ``inputs``.
  """
  chex.assert_rank(inputs, 1, custom_message='repeat_vector: inputs is (F,).')
  return jnp.broadcast_to(inputs, (n, inputs.shape[0]))


class Activation(nn.Module):
  """Applies an activation function, as Keras ``Activation`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.Activation('relu').apply({}, jnp.array([-1.0, 0.5]))
    Array([0. , 0.5], dtype=float32)

  Attributes:
    activation: ``None`` (identity), a callable, or a Keras activation name
      (``'softmax'``, ``'tanh'``, ``'relu'``, ...); ``softmax`` normalises
      over the last axis.
  """

  activation: str | activations.Activation | None

  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the activation.

    Args:
      inputs: any shape.

    Returns:
      The activation of ``inputs``, same shape.

    Raises:
      ValueError: for an unknown activation name or a non-callable.
    """
    function = activations.resolve_activation(self.activation, 'Activation')
    return function(jnp.asarray(inputs))


class Reshape(nn.Module):
  """Reshapes every example to ``target_shape``, as Keras ``Reshape`` does.

  The leading axis is the batch axis and is kept; ``target_shape`` gives the
  shape of one example and may hold one ``-1``, inferred from the size.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.Reshape((3, -1)).apply({}, jnp.ones((2, 12))).shape
    (2, 3, 4)

  Attributes:
    target_shape: shape of one output example, without the batch axis.
  """

  target_shape: Sequence[int]

  def __call__(self, inputs: Any) -> jax.Array:
    """Reshapes the inputs.

    Args:
      inputs: ``(B, ...)``.

    Returns:
      ``(B, *target_shape)`` with the ``-1`` inferred.

    Raises:
      ValueError: if ``target_shape`` has more than one ``-1``, a size below
        ``-1``, or a size other than that of one example; or if ``inputs``
        is a scalar.
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 1:
      raise ValueError(
        'Reshape: inputs must have shape (batch, ...) with rank >= 1, got a'
        ' scalar.'
      )
    target_shape = resolve_target_shape(
      inputs.shape[1:], self.target_shape, 'Reshape'
    )
    return vmap_leading(reshape, inputs, inputs.ndim - 1, target_shape)


class Permute(nn.Module):
  """Permutes the axes of every example, as Keras ``Permute`` does.

  ``dims`` is 1-based and excludes the batch axis, as in Keras:
  ``Permute((2, 1))`` swaps the two axes of ``(B, T, F)`` inputs.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.Permute((2, 1)).apply({}, jnp.ones((8, 10, 64))).shape
    (8, 64, 10)

  Attributes:
    dims: a permutation of ``1..n`` for inputs of rank ``n + 1``.
  """

  dims: Sequence[int]

  def __call__(self, inputs: Any) -> jax.Array:
    """Permutes the inputs.

    Args:
      inputs: ``(B, S_1, ..., S_n)``.

    Returns:
      ``(B, S_dims[0], ..., S_dims[n-1])``.

    Raises:
      ValueError: if ``dims`` is not a permutation of ``1..n``, or
        ``inputs`` does not have rank ``n + 1``.
    """
    dims = tuple(self.dims)
    if sorted(dims) != list(range(1, len(dims) + 1)):
      raise ValueError(
        f'Permute: dims must be a permutation of 1..{len(dims)} (1-based,'
        f' the batch axis excluded), got {dims}.'
      )
    inputs = jnp.asarray(inputs)
    check_rank(
      inputs,
      len(dims) + 1,
      f'(batch, {len(dims)} axes permuted by dims={dims})',
      'Permute',
    )
    return vmap_leading(permute, inputs, len(dims), dims)


class Flatten(nn.Module):
  """Flattens every example into a vector, as Keras ``Flatten`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)
    >>> fd.Flatten().apply({}, x)
    Array([[0., 1., 2., 3., 4., 5., 6., 7.]], dtype=float32)
    >>> fd.Flatten('channels_first').apply({}, x)
    Array([[0., 4., 1., 5., 2., 6., 3., 7.]], dtype=float32)

  Attributes:
    data_format: ``'channels_last'`` or ``'channels_first'``; with
      ``'channels_first'`` inputs ``(B, C, ...)`` have their channel axis
      moved last before flattening, as Keras does.
  """

  data_format: str = 'channels_last'

  def __call__(self, inputs: Any) -> jax.Array:
    """Flattens the inputs.

    Args:
      inputs: ``(B, ...)``.

    Returns:
      ``(B, N)`` with ``N`` the size of one example (1 for ``(B,)`` inputs).

    Raises:
      ValueError: for an unknown ``data_format`` or scalar inputs.
    """
    check_data_format(self.data_format, 'Flatten')
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 1:
      raise ValueError(
        'Flatten: inputs must have shape (batch, ...) with rank >= 1, got a'
        ' scalar.'
      )
    return vmap_leading(flatten, inputs, inputs.ndim - 1, self.data_format)


class RepeatVector(nn.Module):
  """Repeats every input vector ``n`` times: ``(B, F)`` to ``(B, n, F)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.RepeatVector(3).apply({}, jnp.ones((8, 32))).shape
    (8, 3, 32)

  Attributes:
    n: number of repetitions, a positive integer.
  """

  n: int

  def __call__(self, inputs: Any) -> jax.Array:
    """Repeats the inputs.

    Args:
      inputs: ``(B, F)``.

    Returns:
      ``(B, n, F)``.

    Raises:
      ValueError: if ``n`` is not a positive integer or ``inputs`` is not of
        rank 2.
    """
    check_positive_int(self.n, 'RepeatVector', 'n')
    inputs = jnp.asarray(inputs)
    check_rank(inputs, 2, '(batch, features)', 'RepeatVector')
    return vmap_leading(repeat_vector, inputs, 1, self.n)


class Lambda(nn.Module):
  """Wraps a function as a layer, as Keras ``Lambda`` does.

  The function must be traceable by JAX (``jax.jit``, ``jax.vmap`` and
  ``jax.grad`` then compose with it); it has no weights. Output shapes need
  no declaring: :func:`flax_dense.summary` finds them with
  ``jax.eval_shape``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> layer = fd.Lambda(lambda x: x[:, ::2] * 2.0)
    >>> layer.apply({}, jnp.arange(4.0)[None])
    Array([[0., 4.]], dtype=float32)

  Attributes:
    function: called as ``function(*inputs, **kwargs)`` with the arguments
      of ``__call__``.
  """

  function: Callable[..., Any]

  def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
    """Applies the function.

    Args:
      *inputs: positional arguments of ``function``.
      **kwargs: keyword arguments of ``function``.

    Returns:
      ``function(*inputs, **kwargs)``.

    Raises:
      ValueError: if ``function`` is not callable.
    """
    if not callable(self.function):
      raise ValueError(
        'Lambda: function must be a callable, got'
        f' {self.function!r} of type {type(self.function).__name__}.'
      )
    return self.function(*inputs, **kwargs)
