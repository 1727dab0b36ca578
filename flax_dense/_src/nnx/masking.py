"""Keras ``Masking`` for NNX."""

import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src.ops import masking as masking_ops
from flax_dense._src.ops.masking import compute_mask, masking_layer


class Masking(nnx.Module):
  """Zeroes padded timesteps, exactly as Keras ``Masking`` does.

  The NNX twin of :class:`flax_dense.Masking`; the mask itself comes from
  :func:`flax_dense.compute_mask`.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [-1.0, -1.0]]])
    >>> fd.nnx.Masking(mask_value=-1.0)(x)
    Array([[[1., 2.],
            [0., 0.]]], dtype=float32)

  Args:
    mask_value: the padding value, a real number; ``float('nan')`` masks
      the timesteps whose features are all NaN.
  """

  def __init__(self, mask_value: float = 0.0):
    self.mask_value = masking_ops.check_mask_value(mask_value, 'Masking')

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the mask.

    Args:
      inputs: ``(..., T, F)``.

    Returns:
      ``(..., T, F)`` with masked timesteps zeroed.
    """
    return masking_layer(jnp.asarray(inputs), self.mask_value)

  def compute_mask(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """The Keras mask of ``inputs``: which timesteps are kept.

    Args:
      inputs: ``(..., T, F)``.

    Returns:
      ``(..., T)`` boolean, false where every feature equals ``mask_value``
      (:func:`flax_dense.compute_mask`).
    """
    return compute_mask(inputs, self.mask_value)
