"""Product of inputs scaled by a weight vector."""

from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from flax.typing import Dtype

from flax_dense._src import validate
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
  validate.check_array_shape(
    weights, 'const_product', 'weights', (None,), '(N,)'
  )
  validate.check_array_shape(
    inputs, 'const_product', 'inputs', np.shape(weights), '(N,)'
  )
  return jnp.prod(inputs * weights, axis=-1, keepdims=True)


def const_product_layer(
  inputs: jax.Array, weights: jax.Array, dtype: Dtype | None = None
) -> jax.Array:
  """The ``ConstProduct`` layer of both front ends: ``(..., N) -> (..., 1)``."""
  inputs, weights = promote_dtype(inputs, weights, dtype=dtype)
  return vmap_leading(const_product, inputs, 1, weights)


def const_product_size(
  inputs_shape: tuple[int, ...], built_shape: tuple[int, ...] | None
) -> int:
  """The N of ``ConstProduct`` inputs ``(..., N)``, checked against ``w``."""
  if len(inputs_shape) < 1:
    raise ValueError(
      'ConstProduct: inputs must have shape (..., N) with rank >= 1, got a'
      ' scalar.'
    )
  size = inputs_shape[-1]
  validate.check_nonempty_axes('ConstProduct', inputs_shape, {'features': size})
  if built_shape is not None and tuple(built_shape) != (size,):
    raise ValueError(
      f'ConstProduct: inputs of shape {inputs_shape} have {size} features'
      f' but the weights were built with shape {tuple(built_shape)}.'
    )
  return size


def _real_array(value: Any, layer: str, name: str) -> Any:
  """``value`` as an array of real numbers: NumPy's, or a traced one.

  Raises:
    TypeError: for strings, bools, complex numbers or other objects.
    ValueError: for NaN or infinite entries of a concrete array.
  """
  traced = isinstance(value, jax.core.Tracer)
  try:
    array = value if traced else np.asarray(value)
  except (TypeError, ValueError):
    array = None
  if array is None or np.dtype(array.dtype).kind not in 'iuf':
    dtype = 'ragged' if array is None else array.dtype
    raise TypeError(
      f'{layer}: {name} must be an array of real numbers, got'
      f' {validate.describe_given(value)} (dtype {dtype}).'
    )
  if not traced and not np.all(np.isfinite(array)):
    raise ValueError(
      f'{layer}: {name} must be finite, got {value!r} with NaN or infinite'
      ' entries.'
    )
  return array


def const_product_weights(
  weights: Any, trainable: bool, size: int | None
) -> np.ndarray | None:
  """``ConstProduct``'s given weights as an ``(N,)`` array, or ``None``.

  Args:
    weights: the given values, ``(N,)`` or ``(1, N)``, or ``None``.
    trainable: whether ``w`` is trained; frozen weights must be given.
    size: the N they must have, or ``None`` to take theirs.

  Raises:
    TypeError: if ``trainable`` is not a bool or ``weights`` not real
      numbers.
    ValueError: for frozen weights not given, or weights of another shape
      or with NaN or infinite entries.
  """
  trainable = validate.check_bool(trainable, 'ConstProduct', 'trainable')
  if weights is None:
    if not trainable:
      raise ValueError(
        'ConstProduct: frozen weights (trainable=False) need initial'
        ' values; pass weights=<array of shape (N,) or (1, N)> or set'
        ' trainable=True.'
      )
    return None
  weights = _real_array(weights, 'ConstProduct', 'weights')
  if weights.ndim == 2 and weights.shape[0] == 1:
    weights = weights[0]
  if weights.ndim != 1 or (size is not None and weights.shape != (size,)):
    size_text = 'N' if size is None else size
    raise ValueError(
      f'ConstProduct: weights must have shape ({size_text},) or'
      f' (1, {size_text}) to match inputs with {size_text} features, got'
      f' shape {weights.shape}.'
    )
  return weights
