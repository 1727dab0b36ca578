"""Every initializer of the layers, in one place, shared by both front ends.

Initializers follow Flax's signature ``init(key, shape, dtype) -> array``,
so a user's own (including one wrapped by ``nn.with_logical_partitioning``)
takes their place.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.typing import Dtype, Initializer
from jax.nn import initializers

zeros = initializers.zeros

#: Glorot-uniform with the fans of one position (fan_in = D, fan_out = K):
#: axis 0 (positions) is a batch axis of independent matrices, so every
#: position starts like a standalone Dense layer.
per_position_glorot_uniform = initializers.glorot_uniform(batch_axis=(0,))

#: Orthogonal matrices, the default of the attention decoder's recurrent
#: weights.
orthogonal = initializers.orthogonal()


def uniform(minval: float, maxval: float) -> Initializer:
  """Initializer drawing uniformly from ``[minval, maxval)`` (Keras style)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval, maxval)

  return init


#: Keras's default ``RandomUniform``, in [-0.05, 0.05).
keras_uniform = uniform(-0.05, 0.05)


def given(values: Any) -> Initializer:
  """Initializer that returns ``values`` whatever the key."""
  values = np.asarray(values)

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.asarray(values, dtype).reshape(shape)

  return init


def glorot_uniform_any_rank(
  key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32
) -> jax.Array:
  """Glorot-uniform with Keras's fans, so it also initialises a vector.

  A matrix gets Flax's ``glorot_uniform``; a vector of length n gets Keras's
  fans ``fan_in = fan_out = n``, i.e. uniform in ``±sqrt(3 / n)``.
  """
  if len(shape) > 1:
    return initializers.glorot_uniform()(key, shape, dtype)
  limit = math.sqrt(3 / math.prod(shape))  # Keras's fans of a vector or scalar
  return jax.random.uniform(key, shape, dtype, -limit, limit)
