"""Product of inputs scaled by a weight vector."""

import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype

from flax_dense._src import checks
from flax_dense._src.ops.batching import vmap_leading


def const_product(inputs: jax.Array, weights: jax.Array) -> jax.Array:
  """Product of the inputs scaled elementwise by ``weights``, for one example.

  Args:
    inputs: ``(N,)``.
    weights: ``(N,)``.

  Returns:
    ``(1,)``: ``prod(inputs * weights)``.

  Raises:
    ValueError: unless both are ``(N,)`` with the same N.
  """
  checks.check_array_shape('const_product', 'weights', weights, (None,), '(N,)')
  checks.check_array_shape(
    'const_product', 'inputs', inputs, np.shape(weights), '(N,)'
  )
  return jnp.prod(inputs * weights, axis=-1, keepdims=True)


def const_product_layer(
  inputs: jax.Array, weights: jax.Array, dtype: Dtype | None = None
) -> jax.Array:
  """The ``ConstProduct`` layer of both front ends: ``(..., N) -> (..., 1)``."""
  inputs, weights = promote_dtype(inputs, weights, dtype=dtype)
  return vmap_leading(const_product, inputs, 1, weights)
