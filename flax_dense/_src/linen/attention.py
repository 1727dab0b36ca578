"""``AttentionDecoder`` for linen: Bahdanau attention, the Keras tutorial's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import stored_shape
from flax_dense._src.ops import attention as attention_ops
from flax_dense._src.ops.attention import (
  attention_decoder_layer,
  attention_decoder_shapes,
  initializer_field,
)


class AttentionDecoder(nn.Module):
  """Attention decoder of Bahdanau et al. (2014), the Keras tutorial's layer.

  Maps encoder states ``(..., T, D)`` to label distributions
  ``(..., T, output_dim)``, or to the attention weights ``(..., T, T)`` with
  ``return_probabilities=True``, by the recurrence of
  :func:`flax_dense.functional.attention_decoder` (a ``jax.lax.scan`` over
  T). All leading axes are batch axes. The params keep the tutorial's names
  and shapes (``V_a``, ``W_a``, ``U_a``, ``b_a``, ``W_s``, ``C_g``, ``U_g``,
  ``W_g``, ``b_g`` for g in r, z, p, o), so its Keras weights port one to
  one, and both modes share them: train with label outputs, then apply the
  same variables with ``return_probabilities=True`` to see where it looks.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.AttentionDecoder(units=16, output_dim=10)
    >>> x = jnp.ones((4, 7, 8))  # (batch, timesteps, features)
    >>> variables = layer.init(jax.random.key(0), x)
    >>> shapes = jax.tree.map(jnp.shape, variables['params'])
    >>> shapes['V_a'], shapes['U_a'], shapes['W_r'], shapes['C_o']
    ((16,), (8, 16), (10, 16), (8, 10))
    >>> layer.apply(variables, x).shape
    (4, 7, 10)
    >>> mask = jnp.arange(7) < 5  # the last two timesteps are padding
    >>> mask = jnp.broadcast_to(mask, (4, 7))
    >>> attention = layer.clone(return_probabilities=True)
    >>> weights = attention.apply(variables, x, mask)
    >>> weights.shape  # (batch, decoder steps, encoder timesteps)
    (4, 7, 7)
    >>> weights[0, 0] > 0
    Array([ True,  True,  True,  True,  True, False, False], dtype=bool)

  Attributes:
    units: size of the decoder state s.
    output_dim: number of labels, the size of each output distribution y.
    return_probabilities: return the ``(..., T, T)`` attention weights instead
      of the label distributions.
    dtype: the dtype of the computation (default: inferred from inputs and
      params).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contractions, see
      ``jax.lax.Precision``.
    kernel_init: initializer of the attention params ``V_a (units,)``,
      ``W_a`` and ``U_a``; it must accept a vector shape. Default:
      Glorot-uniform (Keras's fans for the vector).
    recurrent_init: initializer of ``W_s`` and of the ``C_*``, ``U_*`` and
      ``W_*`` gate matrices. Default: orthogonal.
    bias_init: initializer of the ``b_*`` biases. Default: zeros.
  """

  units: int
  output_dim: int
  return_probabilities: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = initializers.glorot_uniform_any_rank
  recurrent_init: Initializer = initializers.orthogonal
  bias_init: Initializer = initializers.zeros

  def _initializer(self, name: str) -> Initializer:
    field = initializer_field(name)
    return validate.checked_initializer(
      getattr(self, field), 'AttentionDecoder', name, field
    )

  @nn.compact
  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
  ) -> jax.Array:
    """Decodes the encoder states.

    Args:
      inputs: ``(..., T, D)`` encoder states.
      mask: ``(..., T)`` boolean, True = attend to this timestep, e.g. from
        :func:`flax_dense.compute_mask`; or ``None``. Masked timesteps get
        attention weight exactly 0; a fully masked example attends to
        nothing (weights 0, context 0) and still decodes T steps.

    Returns:
      ``(..., T, output_dim)`` label distributions, or ``(..., T, T)``
      attention weights with ``return_probabilities``.

    Raises:
      ValueError: for a non-positive ``units`` or ``output_dim``, inputs of
        rank below 2 or with no timesteps, a mask whose shape is not
        ``inputs.shape[:-1]``, or D, ``units`` or ``output_dim`` differing
        from the shapes the params were built with.
    """
    attention_ops.check_attention_fields(
      self.units, self.output_dim, self.return_probabilities
    )
    inputs = jnp.asarray(inputs)
    mask = attention_ops.attention_decoder_mask(inputs, mask)
    shapes = attention_decoder_shapes(
      inputs.shape[-1], self.units, self.output_dim
    )
    for name, shape in shapes.items():
      validate.check_built_shape(
        stored_shape(self, 'params', name),
        'AttentionDecoder',
        name,
        shape,
        f'inputs of shape {inputs.shape} with units={self.units} and'
        f' output_dim={self.output_dim}',
      )
    params = {
      name: self.param(name, self._initializer(name), shape, self.param_dtype)
      for name, shape in shapes.items()
    }
    return attention_decoder_layer(
      inputs,
      mask,
      params,
      self.return_probabilities,
      self.dtype,
      self.precision,
    )
