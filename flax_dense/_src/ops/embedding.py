"""Keras's ``Embedding``: integer ids to rows of a table, and their mask."""

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from flax_dense._src import validate


def integer_ids(ids: jax.typing.ArrayLike, caller: str, name: str) -> jax.Array:
  """``ids`` as an array, checked to hold integers.

  Raises:
    TypeError: for ids that are not an array of integers (floats and bools
      are refused, not cast as Keras casts them).
  """
  ids = validate.as_array(ids, caller, name)
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise TypeError(
      f'{caller}: {name} must be integer ids, got dtype {ids.dtype}; cast'
      ' them with .astype(jnp.int32).'
    )
  return ids


def check_ids(
  ids: jax.typing.ArrayLike, input_dim: int, caller: str
) -> jax.Array:
  """``ids`` as an integer array, its range checked when it is concrete.

  Raises:
    TypeError: for ids that are not an array of integers (floats and bools
      are refused, not cast as Keras casts them).
    ValueError: for concrete ids outside ``[0, input_dim)``.
  """
  ids = integer_ids(ids, caller, 'inputs')
  if not isinstance(ids, jax.core.Tracer) and ids.size:
    # On the host: inside a traced function a jnp reduction of a closed-over
    # array would be traced too.
    values = np.asarray(ids)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= input_dim:
      bad = low if low < 0 else high
      raise ValueError(
        f'{caller}: inputs must be ids in [0, {input_dim}) (input_dim='
        f'{input_dim}), got {bad}.'
      )
  return ids


def embedding(ids: jax.Array, embeddings: jax.Array) -> jax.Array:
  """The rows of ``embeddings`` that ``ids`` name: Keras's ``Embedding``.

  Ids are not checked here (under ``jit`` they cannot be): as in Keras on
  JAX (``jnp.take``), an id in ``[-V, 0)`` counts from the end and any other
  id outside ``[0, V)`` gives a row of NaN.

  Args:
    ids: integer array of any shape ``S``.
    embeddings: ``(V, E)``, one row per id.

  Returns:
    ``(*S, E)``.

  Raises:
    TypeError: for ids that are not integers.
    ValueError: for ``embeddings`` that is not a matrix.
  """
  ids = integer_ids(ids, 'embedding', 'ids')
  embeddings = validate.as_array(embeddings, 'embedding', 'embeddings')
  if embeddings.ndim != 2:
    raise ValueError(
      'embedding: embeddings must be (input_dim, output_dim), rank 2, got'
      f' shape {embeddings.shape}.'
    )
  return jnp.take(embeddings, ids, axis=0)


def embedding_mask(ids: jax.typing.ArrayLike) -> jax.Array:
  """Keras's ``mask_zero`` mask: True where the id is not the padding 0.

  Args:
    ids: integer array of any shape ``S``.

  Returns:
    ``S`` boolean.

  Raises:
    TypeError: for ids that are not integers.
  """
  return jnp.not_equal(integer_ids(ids, 'embedding_mask', 'ids'), 0)


def check_embedding_fields(
  layer: str, input_dim: object, output_dim: object, mask_zero: object
) -> None:
  """Checks the sizes and the flag of ``Embedding``."""
  validate.check_positive_int(input_dim, layer, 'input_dim')
  validate.check_positive_int(output_dim, layer, 'output_dim')
  validate.check_bool(mask_zero, layer, 'mask_zero')
