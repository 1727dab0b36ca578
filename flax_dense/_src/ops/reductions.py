"""Sums of narrow floats accumulated in float32, as ``jnp.mean`` does.

A float16 sum overflows at 65504 (3000 steps of 30 already do) and a
bfloat16 sum stops growing once the total dwarfs each term (8 bits of
mantissa). Every reduction over a possibly long axis therefore widens
float16 and bfloat16 to float32, reduces, and rounds the result back to the
input's dtype once, at the end.
"""

import jax
import jax.numpy as jnp


def accumulation_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """float32 for a floating dtype narrower than it, else ``dtype`` itself."""
  dtype = jnp.dtype(dtype)
  if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
    return jnp.dtype(jnp.float32)
  return dtype


def widen(x: jax.Array) -> jax.Array:
  """``x`` in its :func:`accumulation_dtype` (unchanged unless narrower)."""
  x = jnp.asarray(x)
  return x.astype(accumulation_dtype(x.dtype))


def narrow(result: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """``result`` rounded back to ``dtype`` if :func:`widen` widened it."""
  if accumulation_dtype(dtype) != jnp.dtype(dtype):
    return result.astype(dtype)
  return result
