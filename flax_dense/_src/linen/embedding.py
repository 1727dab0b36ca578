"""Keras's ``Embedding`` for linen."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype, Initializer

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import stored_shape
from flax_dense._src.ops.embedding import (
  check_embedding_fields,
  check_ids,
  embedding,
  embedding_mask,
)


class Embedding(nn.Module):
  """Maps integer ids ``(..., T)`` to vectors ``(..., T, output_dim)``.

  Keras's ``Embedding``: the weight ``embeddings (input_dim, output_dim)``
  holds one row per id. With ``mask_zero`` the id 0 is padding and
  :meth:`compute_mask` gives the mask the recurrent layers take.

  Ids are checked when they are concrete: outside ``[0, input_dim)`` is a
  ``ValueError``. Under ``jax.jit`` they cannot be, and behave as in Keras
  on JAX (``jnp.take``): an id in ``[-input_dim, 0)`` counts from the end,
  any other out-of-range id gives a row of NaN.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.Embedding(10, 3, mask_zero=True)
    >>> ids = jnp.array([[4, 2, 0, 0]])
    >>> variables = layer.init(jax.random.key(0), ids)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'embeddings': (10, 3)}}
    >>> layer.apply(variables, ids).shape
    (1, 4, 3)
    >>> layer.compute_mask(ids)
    Array([[ True,  True, False, False]], dtype=bool)

  Attributes:
    input_dim: V, the number of ids.
    output_dim: E, the size of each vector.
    mask_zero: whether id 0 is padding, masked by :meth:`compute_mask`.
    dtype: the dtype of the outputs (default: that of ``embeddings``).
    param_dtype: the dtype passed to the initializer.
    embeddings_init: initializer of ``embeddings`` (Keras's default:
      uniform in [-0.05, 0.05)).
  """

  input_dim: int
  output_dim: int
  mask_zero: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  embeddings_init: Initializer = initializers.keras_uniform

  @nn.compact
  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Looks the ids up.

    Args:
      inputs: integer ids of any shape ``S``, usually ``(..., T)``.

    Returns:
      ``(*S, output_dim)``.

    Raises:
      TypeError: for non-integer ids.
      ValueError: for concrete ids outside ``[0, input_dim)``.
    """
    layer = 'Embedding'
    check_embedding_fields(
      layer, self.input_dim, self.output_dim, self.mask_zero
    )
    ids = check_ids(inputs, self.input_dim, layer)
    shape = (self.input_dim, self.output_dim)
    built = stored_shape(self, 'params', 'embeddings')
    if built is not None and tuple(built) != shape:
      raise ValueError(
        f'Embedding: input_dim={self.input_dim} and output_dim='
        f'{self.output_dim} need embeddings of shape {shape}, but it was'
        f' built with shape {tuple(built)}.'
      )
    init = validate.checked_initializer(
      self.embeddings_init, layer, 'embeddings'
    )
    table = self.param('embeddings', init, shape, self.param_dtype)
    (table,) = promote_dtype(table, dtype=self.dtype)
    return embedding(ids, table)

  def compute_mask(self, inputs: jax.typing.ArrayLike) -> jax.Array | None:
    """Keras's mask of ``inputs``: ``inputs != 0`` with ``mask_zero``.

    Args:
      inputs: integer ids ``S``.

    Returns:
      ``S`` boolean, or ``None`` without ``mask_zero``.
    """
    check_embedding_fields(
      'Embedding', self.input_dim, self.output_dim, self.mask_zero
    )
    if not self.mask_zero:
      return None
    return embedding_mask(check_ids(inputs, self.input_dim, 'Embedding'))
