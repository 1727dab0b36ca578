"""Keras core layers that reshape their inputs: the math of one example and
the checked batched layer both front ends call."""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flax_dense._src import validate
from flax_dense._src.ops.batching import vmap_leading


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
    TypeError: if ``target_shape`` is not a tuple or list of integers.
    ValueError: for more than one ``-1``, a size below ``-1``, or a total
      size that differs from the example's.
  """
  target_shape = validate.check_int_tuple(target_shape, layer, 'target_shape')
  if any(size < -1 for size in target_shape):
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

  Raises:
    TypeError: if ``target_shape`` is not a tuple or list of integers.
    ValueError: if it does not fit the size of ``inputs``.
  """
  inputs = jnp.asarray(inputs)
  target_shape = resolve_target_shape(inputs.shape, target_shape, 'reshape')
  return jnp.reshape(inputs, target_shape)


def permute(inputs: jax.Array, dims: Sequence[int]) -> jax.Array:
  """Permutes the axes of one example with Keras's 1-based ``dims``.

  Args:
    inputs: one example ``(S_1, ..., S_n)``.
    dims: a permutation of ``1..n``; output axis ``i`` is input axis
      ``dims[i]``.

  Returns:
    ``(S_dims[0], ..., S_dims[n-1])``.

  Raises:
    TypeError: if ``dims`` is not a tuple or list of integers.
    ValueError: if ``dims`` is not a permutation of ``1..n`` (0-based dims
      are refused) or ``inputs`` does not have rank ``n``.
  """
  dims = validate.check_permutation(dims, 'permute')
  inputs = jnp.asarray(inputs)
  validate.check_rank(
    inputs,
    'permute',
    len(dims),
    f'one example of rank {len(dims)}, dims={dims}',
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

  Raises:
    TypeError: if ``data_format`` is not a string.
    ValueError: for an unknown ``data_format``.
  """
  validate.check_data_format(data_format, 'flatten')
  inputs = jnp.asarray(inputs)
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

  Raises:
    TypeError: if ``n`` is not an integer.
    ValueError: if ``n`` is not positive or ``inputs`` is not ``(F,)``.
  """
  n = validate.check_positive_int(n, 'repeat_vector', 'n')
  inputs = jnp.asarray(inputs)
  validate.check_rank(inputs, 'repeat_vector', 1, '(features,)')
  return jnp.broadcast_to(inputs, (n, inputs.shape[0]))


def reshape_layer(inputs: jax.Array, target_shape: Sequence[int]) -> jax.Array:
  """The ``Reshape`` layer: ``(B, ...) -> (B, *target_shape)``, checked."""
  validate.check_min_rank(inputs, 'Reshape', 1, '(batch, ...)')
  target_shape = resolve_target_shape(inputs.shape[1:], target_shape, 'Reshape')
  return vmap_leading(reshape, inputs, inputs.ndim - 1, target_shape)


def permute_layer(inputs: jax.Array, dims: Sequence[int]) -> jax.Array:
  """The ``Permute`` layer with Keras's 1-based ``dims``, checked."""
  dims = validate.check_permutation(dims, 'Permute')
  validate.check_rank(
    inputs,
    'Permute',
    len(dims) + 1,
    f'(batch, {len(dims)} axes permuted by dims={dims})',
  )
  return vmap_leading(permute, inputs, len(dims), dims)


def flatten_layer(inputs: jax.Array, data_format: str) -> jax.Array:
  """The ``Flatten`` layer: ``(B, ...) -> (B, N)``, checked."""
  validate.check_data_format(data_format, 'Flatten')
  validate.check_min_rank(inputs, 'Flatten', 1, '(batch, ...)')
  return vmap_leading(flatten, inputs, inputs.ndim - 1, data_format)


def repeat_vector_layer(inputs: jax.Array, n: int) -> jax.Array:
  """The ``RepeatVector`` layer: ``(B, F) -> (B, n, F)``, checked."""
  n = validate.check_positive_int(n, 'RepeatVector', 'n')
  validate.check_rank(inputs, 'RepeatVector', 2, '(batch, features)')
  return vmap_leading(repeat_vector, inputs, 1, n)
