"""Maps a per-example function over any number of leading batch axes."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp


def vmap_leading(
  fn: Callable[..., jax.Array],
  inputs: jax.Array,
  example_ndim: int,
  *args,
) -> jax.Array:
  """Applies ``fn(example, *args)`` to every example of ``inputs``.

  The trailing ``example_ndim`` axes of ``inputs`` form one example; every
  axis before them is a batch axis (zero or more). They are flattened into
  one axis, ``fn`` is ``jax.vmap``-ped over it (``args`` are shared by all
  examples), and the batch shape is restored on the output.

  Args:
    fn: function of one example, ``fn(x, *args) -> y``.
    inputs: array of shape ``(*batch, *example)``.
    example_ndim: rank of one example.
    *args: arguments shared by all examples (weights).

  Returns:
    Array of shape ``(*batch, *y.shape)``.
  """
  batch_shape = inputs.shape[: inputs.ndim - example_ndim]
  if not batch_shape:
    return fn(inputs, *args)
  # The batch size spelled out: -1 is ambiguous when an example is empty.
  size = math.prod(batch_shape)
  flat = jnp.reshape(inputs, (size, *inputs.shape[len(batch_shape) :]))
  outputs = jax.vmap(fn, in_axes=(0,) + (None,) * len(args))(flat, *args)
  return jnp.reshape(outputs, (*batch_shape, *outputs.shape[1:]))


def vmap_batch_axes(
  fn: Callable[..., Any],
  batch_ndim: int,
  batched: Sequence[jax.Array | None],
  *args,
) -> Any:
  """Applies ``fn(*examples, *args)`` to every example of several inputs.

  The counterpart of :func:`vmap_leading` for layers whose examples come in
  several arrays (inputs and a mask, two operands): the ``batch_ndim``
  leading axes of every array in ``batched`` are batch axes, mapped together
  with nested ``jax.vmap``; a ``None`` entry stays ``None`` for every
  example; ``args`` are shared by all examples (weights).

  Args:
    fn: function of one example, ``fn(*examples, *args)``; it may return a
      pytree.
    batch_ndim: number of leading batch axes (zero or more), the same in
      every array of ``batched``.
    batched: per-example arrays ``(*batch, ...)``, or ``None``.
    *args: arguments shared by all examples.

  Returns:
    ``fn``'s output with ``(*batch,)`` prepended to every leaf.
  """
  in_axes = (0,) * len(batched) + (None,) * len(args)
  for _ in range(batch_ndim):
    fn = jax.vmap(fn, in_axes=in_axes)
  return fn(*batched, *args)
