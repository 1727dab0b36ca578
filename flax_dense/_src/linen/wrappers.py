"""Keras's ``TimeDistributed`` for linen."""

from typing import Any

import flax.linen as nn
import jax

from flax_dense._src import validate
from flax_dense._src.callables import call_keywords
from flax_dense._src.ops.wrappers import (
  check_wrapped_layer,
  merge_steps,
  split_steps,
)


class TimeDistributed(nn.Module):
  """Runs ``layer`` on every step of ``(batch, steps, ...)`` inputs.

  Keras's ``TimeDistributed``: the steps are folded into the batch,
  ``layer`` runs once on ``(batch * steps, ...)`` and its outputs are
  unfolded to ``(batch, steps, ...)``, so every step shares its weights.
  They live under ``layer``. Any single-input layer works, including those
  that fix their positions, such as :class:`PerPositionDense`.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.TimeDistributed(fd.PerPositionDense(features=3))
    >>> x = jnp.ones((2, 4, 5, 6))  # (batch, steps, positions, features)
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables['params'])
    {'layer': {'bias': (5, 3), 'kernel': (5, 6, 3)}}
    >>> layer.apply(variables, x).shape
    (2, 4, 5, 3)

  Attributes:
    layer: the linen module run on each step; it takes one input.
    deterministic: given to ``layer`` (if its call takes it, as the dropout
      layers' do) when the call gives none.
  """

  layer: nn.Module
  deterministic: bool | None = None

  @nn.compact
  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    deterministic: bool | None = None,
    rng: jax.Array | None = None,
  ) -> Any:
    """Runs ``layer`` on each step.

    Args:
      inputs: ``(batch, steps, ...)``, where ``(batch, ...)`` is what
        ``layer`` takes.
      deterministic: given to ``layer`` if its call takes it; overrides
        this module's field.
      rng: given to ``layer`` if its call takes it (the dropout layers'
        key, instead of their rng stream).

    Returns:
      ``layer``'s outputs with the steps axis after the batch axis:
      ``(batch, steps, ...)`` (each of them, if it returns several).
    """
    check_wrapped_layer(self.layer, nn.Module, 'a linen Module')
    if deterministic is None:
      deterministic = self.deterministic
    if deterministic is not None:
      validate.check_bool(deterministic, 'TimeDistributed', 'deterministic')
    kwargs = call_keywords(self.layer, deterministic=deterministic, rng=rng)
    merged, batch_steps = merge_steps(inputs)
    return split_steps(self.layer(merged, **kwargs), batch_steps)
