"""Maps a per-example function over any number of leading batch axes."""

from collections.abc import Callable

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
  flat = jnp.reshape(inputs, (-1, *inputs.shape[len(batch_shape) :]))
  outputs = jax.vmap(fn, in_axes=(0,) + (None,) * len(args))(flat, *args)
  return jnp.reshape(outputs, (*batch_shape, *outputs.shape[1:]))
