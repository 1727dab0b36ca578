"""Shared validation helpers for the modules."""

import flax.linen as nn
import jax.numpy as jnp


def stored_shape(
  module: nn.Module, collection: str, name: str
) -> tuple[int, ...] | None:
  """Shape of an existing variable of ``module``, or ``None`` if absent.

  Modules call this before ``self.param`` so that applying them to inputs of
  the wrong shape raises our own error naming the layer, instead of Flax's
  generic initializer-shape error.
  """
  if not module.has_variable(collection, name):
    return None
  return jnp.shape(nn.meta.unbox(module.get_variable(collection, name)))
