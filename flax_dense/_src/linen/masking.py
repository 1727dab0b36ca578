"""Keras ``Masking`` for linen."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src.ops.masking import compute_mask, masking_layer


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

  With ``mask_value=float('nan')`` the timesteps whose features are all
  NaN are masked, a padding Keras cannot express (NaN equals nothing)::

    >>> nan = float('nan')
    >>> fd.Masking(mask_value=nan).apply({}, jnp.array([[[nan, nan], [1.0, nan]]]))
    Array([[[ 0.,  0.],
            [ 1., nan]]], dtype=float32)

  Attributes:
    mask_value: the padding value, a real number (NaN and infinities
      allowed).
  """

  mask_value: float = 0.0

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the mask.

    Args:
      inputs: ``(..., T, F)``.

    Returns:
      ``(..., T, F)`` with masked timesteps zeroed.

    Raises:
      TypeError: if ``mask_value`` is not a real number.
      ValueError: if ``inputs`` is a scalar.
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
