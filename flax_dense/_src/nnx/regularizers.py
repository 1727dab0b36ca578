"""Keras's ``ActivityRegularization`` layer, for NNX."""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.nnx.common import sow_activity_loss
from flax_dense._src.ops.regularizers import l1_l2


class ActivityRegularization(nnx.Module):
  """Identity that adds an activity penalty, as Keras's layer of that name.

  The penalty ``(l1 * sum(|x|) + l2 * sum(x ** 2)) / batch_size`` is sown as
  a ``fd.nnx.Loss`` when the model runs inside
  ``nnx.capture(model, fd.nnx.Loss)``; :func:`flax_dense.collect_losses`
  sums what that returns.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.ActivityRegularization(l2=0.5)
    >>> y, losses = nnx.capture(layer, fd.nnx.Loss)(jnp.full((4, 5), 2.0))
    >>> fd.collect_losses(losses)  # 0.5 * (20 * 2.0 ** 2) / batch size 4
    Array(10., dtype=float32)

  Args:
    l1: factor of the L1 norm, non-negative.
    l2: factor of the squared L2 norm, non-negative.
  """

  def __init__(self, l1: float = 0.0, l2: float = 0.0):
    self.l1 = validate.check_factor(l1, 'ActivityRegularization', 'l1')
    self.l2 = validate.check_factor(l2, 'ActivityRegularization', 'l2')

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Returns ``inputs`` unchanged and sows their penalty."""
    inputs = jnp.asarray(inputs)
    sow_activity_loss(self, l1_l2(self.l1, self.l2), inputs)
    return inputs
