"""Keras's ``Embedding`` for NNX."""

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, Initializer

from flax_dense._src import initializers
from flax_dense._src.nnx.common import check_rngs, make_param
from flax_dense._src.ops.embedding import (
  check_embedding_fields,
  check_ids,
  embedding,
  embedding_mask,
)


class Embedding(nnx.Module):
  """Maps integer ids ``(..., T)`` to vectors ``(..., T, output_dim)``.

  The NNX twin of :class:`flax_dense.Embedding`, with the same checks and
  the same behaviour of out-of-range ids under ``jit``.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.Embedding(10, 3, mask_zero=True, rngs=nnx.Rngs(0))
    >>> layer.embeddings.shape
    (10, 3)
    >>> ids = jnp.array([[4, 2, 0]])
    >>> layer(ids).shape
    (1, 3, 3)
    >>> layer.compute_mask(ids)
    Array([[ True,  True, False]], dtype=bool)

  Args:
    input_dim: V, the number of ids.
    output_dim: E, the size of each vector.
    mask_zero: whether id 0 is padding.
    dtype: the dtype of the outputs (default: that of ``embeddings``).
    param_dtype: the dtype of ``embeddings``.
    embeddings_init: initializer of ``embeddings``.
    rngs: draws ``embeddings``.
  """

  def __init__(
    self,
    input_dim: int,
    output_dim: int,
    *,
    mask_zero: bool = False,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    embeddings_init: Initializer = initializers.keras_uniform,
    rngs: nnx.Rngs,
  ):
    check_embedding_fields('Embedding', input_dim, output_dim, mask_zero)
    rngs = check_rngs(rngs, 'Embedding')
    self.embeddings = make_param(
      'Embedding',
      'embeddings',
      embeddings_init,
      rngs,
      (input_dim, output_dim),
      param_dtype,
    )
    self.input_dim = input_dim
    self.output_dim = output_dim
    self.mask_zero = mask_zero
    self.dtype = dtype
    self.param_dtype = param_dtype

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Looks the ids up: ``S`` integer ids to ``(*S, output_dim)``."""
    ids = check_ids(inputs, self.input_dim, 'Embedding')
    (table,) = promote_dtype(self.embeddings[...], dtype=self.dtype)
    return embedding(ids, table)

  def compute_mask(self, inputs: jax.typing.ArrayLike) -> jax.Array | None:
    """``inputs != 0`` with ``mask_zero``, else ``None``."""
    if not self.mask_zero:
      return None
    return embedding_mask(check_ids(inputs, self.input_dim, 'Embedding'))
