"""Keras's ``TimeDistributed`` for NNX."""

from typing import Any

import jax
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.callables import call_keywords
from flax_dense._src.ops.wrappers import (
  check_wrapped_layer,
  merge_steps,
  split_steps,
)


class TimeDistributed(nnx.Module):
  """Runs ``layer`` on every step of ``(batch, steps, ...)`` inputs.

  The NNX twin of :class:`flax_dense.TimeDistributed`: the steps are folded
  into the batch, ``layer`` runs once on ``(batch * steps, ...)``, and its
  outputs are unfolded. ``layer`` keeps its own mode (``model.train()`` /
  ``model.eval()`` reach it).

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.TimeDistributed(
    ...     fd.nnx.PerPositionDense(5, 6, 3, rngs=nnx.Rngs(0)))
    >>> layer(jnp.ones((2, 4, 5, 6))).shape
    (2, 4, 5, 3)

  Args:
    layer: the NNX module run on each step; it takes one input.
  """

  def __init__(self, layer: nnx.Module):
    check_wrapped_layer(layer, nnx.Module, 'an NNX Module')
    self.layer = layer

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    deterministic: bool | None = None,
    *,
    rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
  ) -> Any:
    """Runs ``layer`` on each step.

    Args:
      inputs: ``(batch, steps, ...)``, where ``(batch, ...)`` is what
        ``layer`` takes.
      deterministic: given to ``layer`` if its call takes it.
      rngs: given to ``layer`` if its call takes it.

    Returns:
      ``layer``'s outputs as ``(batch, steps, ...)`` (each of them, if it
      returns several).
    """
    if deterministic is not None:
      validate.check_bool(deterministic, 'TimeDistributed', 'deterministic')
    kwargs = call_keywords(self.layer, deterministic=deterministic, rngs=rngs)
    merged, batch_steps = merge_steps(inputs)
    return split_steps(self.layer(merged, **kwargs), batch_steps)
