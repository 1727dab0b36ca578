"""``AttentionDecoder`` for NNX: Bahdanau attention, the Keras tutorial's."""

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.nnx.common import check_rngs, make_param
from flax_dense._src.ops import attention as attention_ops
from flax_dense._src.ops.attention import (
  attention_decoder_layer,
  attention_decoder_shapes,
  initializer_field,
)


class AttentionDecoder(nnx.Module):
  """Attention decoder of Bahdanau et al. (2014), the Keras tutorial's layer.

  The NNX twin of :class:`flax_dense.AttentionDecoder`: encoder states
  ``(..., T, in_features)`` to label distributions ``(..., T, output_dim)``,
  or the attention weights ``(..., T, T)`` with ``return_probabilities``.
  The params are attributes with the tutorial's names (``V_a``, ``W_a``,
  ``U_a``, ``b_a``, ``W_s``, ``C_g``, ``U_g``, ``W_g``, ``b_g`` for g in
  r, z, p, o).

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.AttentionDecoder(8, 16, 10, rngs=nnx.Rngs(0))
    >>> layer.V_a.shape, layer.U_a.shape, layer.C_o.shape
    ((16,), (8, 16), (8, 10))
    >>> layer(jnp.ones((4, 7, 8))).shape
    (4, 7, 10)

  Args:
    in_features: D, the features of one encoder timestep.
    units: size of the decoder state s.
    output_dim: number of labels.
    return_probabilities: return the attention weights instead of the label
      distributions.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype of the params.
    precision: numerical precision of the contractions.
    kernel_init: initializer of ``V_a (units,)``, ``W_a`` and ``U_a``.
    recurrent_init: initializer of ``W_s`` and the gate matrices.
    bias_init: initializer of the ``b_*`` biases.
    rngs: the rng streams; ``params`` draws the params.
  """

  def __init__(
    self,
    in_features: int,
    units: int,
    output_dim: int,
    *,
    return_probabilities: bool = False,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = initializers.glorot_uniform_any_rank,
    recurrent_init: Initializer = initializers.orthogonal,
    bias_init: Initializer = initializers.zeros,
    rngs: nnx.Rngs,
  ):
    layer = 'AttentionDecoder'
    attention_ops.check_attention_fields(
      units, output_dim, return_probabilities
    )
    validate.check_positive_int(in_features, layer, 'in_features')
    rngs = check_rngs(rngs, layer)
    inits = {
      'kernel_init': kernel_init,
      'recurrent_init': recurrent_init,
      'bias_init': bias_init,
    }
    for name, shape in attention_decoder_shapes(
      in_features, units, output_dim
    ).items():
      field = initializer_field(name)
      param = make_param(
        layer, name, inits[field], rngs, shape, param_dtype, field=field
      )
      setattr(self, name, param)
    self.units = units
    self.output_dim = output_dim
    self.in_features = in_features
    self.return_probabilities = return_probabilities
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
  ) -> jax.Array:
    """Decodes the encoder states.

    Args:
      inputs: ``(..., T, in_features)`` encoder states.
      mask: ``(..., T)`` boolean, True = attend to this timestep, or
        ``None``.

    Returns:
      ``(..., T, output_dim)``, or ``(..., T, T)`` with
      ``return_probabilities``.
    """
    inputs = jnp.asarray(inputs)
    mask = attention_ops.attention_decoder_mask(inputs, mask)
    shapes = attention_decoder_shapes(
      inputs.shape[-1], self.units, self.output_dim
    )
    params = {name: getattr(self, name)[...] for name in shapes}
    for name, shape in shapes.items():
      validate.check_built_shape(
        params[name].shape,
        'AttentionDecoder',
        name,
        shape,
        f'inputs of shape {inputs.shape} with units={self.units} and'
        f' output_dim={self.output_dim}',
      )
    return attention_decoder_layer(
      inputs,
      mask,
      params,
      self.return_probabilities,
      self.dtype,
      self.precision,
    )
