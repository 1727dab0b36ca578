"""What every linen module of the package shares."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src.ops.regularizers import Regularizer, activity_penalty
from flax_dense._src.variables import LOSSES


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


def sow_activity_loss(
  module: nn.Module, regularizer: Regularizer | None, outputs: jax.Array
) -> None:
  """Sows Keras's activity penalty of ``outputs`` into ``losses``.

  The penalty is :func:`~flax_dense._src.ops.regularizers.activity_penalty`.
  Nothing is sown while the model is initialised, so the variables ``init``
  returns hold no stale loss for ``apply`` to append to.

  Args:
    module: the module that sows, under the name ``activity_regularizer``.
    regularizer: the penalty, or ``None`` for none.
    outputs: the module's outputs.
  """
  if regularizer is None or module.is_initializing():
    return
  module.sow(
    LOSSES, 'activity_regularizer', activity_penalty(regularizer, outputs)
  )


def freeze_lists(module: nn.Module, *names: str) -> None:
  """Turns the list fields ``names`` of ``module`` into tuples.

  Called from ``__post_init__``: a module must be hashable to be a static
  argument of ``jax.jit`` (and for ``nn.jit``), and a list is not.
  """
  for name in names:
    value = getattr(module, name)
    if isinstance(value, list):
      object.__setattr__(module, name, tuple(value))
