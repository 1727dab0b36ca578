"""Shared validation helpers for the modules."""

from typing import Any

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


def check_positive_int(value: Any, layer: str, name: str) -> None:
  """Raises our own error unless ``value`` is a positive ``int`` (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(
      f'{layer}: {name} must be a positive integer, got {value!r}.'
    )
