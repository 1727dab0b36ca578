"""Keras ``Masking`` for linen."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src.ops.masking import masking_layer


class Masking(nn.Module):
  """Zeroes padded timesteps, exactly as Keras ``Masking`` does.

  A timestep whose features all equal ``mask_value`` is set to zero. The
  boolean mask itself is a value in JAX, not hidden state: compute it with
  :func:`compute_mask` and hand it to the layers and losses that consume it.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.array([[[1.0, 2.0], [-1.0, -1.0], [3.0, -1.0]]])
    >>> fd.Masking(mask_value=-1.0).apply({}, x)
    Array([[[ 1.,  2.],
            [ 0.,  0.],
            [ 3., -1.]]], dtype=float32)
    >>> fd.compute_mask(x, mask_value=-1.0)
    Array([[ True, False,  True]], dtype=bool)

  Attributes:
    mask_value: the padding value.
  """

  mask_value: float = 0.0

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the mask.

    Args:
      inputs: ``(..., T, F)``.

    Returns:
      ``(..., T, F)`` with masked timesteps zeroed.
    """
    return masking_layer(jnp.asarray(inputs), self.mask_value)
