"""Keras's ``ActivityRegularization`` layer, for linen."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src import validate
from flax_dense._src.linen.common import sow_activity_loss
from flax_dense._src.ops.regularizers import l1_l2


class ActivityRegularization(nn.Module):
  """Identity that adds an activity penalty, as Keras's layer of that name.

  The outputs are the inputs. The penalty
  ``(l1 * sum(|x|) + l2 * sum(x ** 2)) / batch_size`` (the batch size is
  the size of the leading axis, as in Keras 3) is sown into the ``losses``
  collection when the model is applied with ``mutable=['losses']``;
  :func:`collect_losses` sums every such loss of a model.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> layer = fd.ActivityRegularization(l2=0.5)
    >>> y, state = layer.apply({}, jnp.full((4, 5), 2.0), mutable=['losses'])
    >>> fd.collect_losses(state)  # 0.5 * (20 * 2.0 ** 2) / batch size 4
    Array(10., dtype=float32)

  Attributes:
    l1: factor of the L1 norm, non-negative.
    l2: factor of the squared L2 norm, non-negative.
  """

  l1: float = 0.0
  l2: float = 0.0

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Returns the inputs and sows their penalty.

    Args:
      inputs: any shape; the leading axis is the batch axis.

    Returns:
      ``inputs``, unchanged.

    Raises:
      TypeError: if ``l1`` or ``l2`` is not a real number.
      ValueError: if ``l1`` or ``l2`` is negative, infinite or NaN.
    """
    validate.check_factor(self.l1, 'ActivityRegularization', 'l1')
    validate.check_factor(self.l2, 'ActivityRegularization', 'l2')
    inputs = jnp.asarray(inputs)
    sow_activity_loss(self, l1_l2(self.l1, self.l2), inputs)
    return inputs
