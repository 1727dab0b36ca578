"""Product of inputs scaled by a weight vector, frozen or trainable."""

from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.typing import Dtype, Initializer

from flax_dense._src.batching import vmap_leading
from flax_dense._src.checks import stored_shape

#: Name of the variable collection that holds frozen (non-trainable) weights.
CONSTANTS = 'constants'


def uniform_init(minval: float, maxval: float) -> Initializer:
  """Initializer drawing uniformly from ``[minval, maxval)`` (Keras style)."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval, maxval)

  return init


def _nested_tuple(values: np.ndarray) -> Any:
  """``values`` as (nested) tuples of Python numbers, or a number."""
  if values.ndim == 0:
    return values.item()
  return tuple(_nested_tuple(row) for row in values)


def _given(values: np.ndarray) -> Initializer:
  """Initializer that returns ``values`` whatever the key."""

  def init(key, shape, dtype=jnp.float32):
    del key
    return jnp.asarray(values, dtype).reshape(shape)

  return init


def const_product(inputs: jax.Array, weights: jax.Array) -> jax.Array:
  """Product of the inputs scaled elementwise by ``weights``, for one example.

  Args:
    inputs: ``(N,)``.
    weights: ``(N,)``.

  Returns:
    ``(1,)``: ``prod(inputs * weights)``.
  """
  chex.assert_equal_shape(
    (inputs, weights),
    custom_message='const_product: inputs and weights must both be (N,).',
  )
  chex.assert_rank(inputs, 1)
  return jnp.prod(inputs * weights, axis=-1, keepdims=True)


class ConstProduct(nn.Module):
  """Multiplies the inputs by a weight vector and takes their product.

  Maps ``(..., N)`` to ``(..., 1)`` with ``y = prod(x * w, axis=-1)``. The
  weights ``w`` are either trainable (collection ``params``) or frozen: held
  in the ``constants`` collection, so gradients and optimizers never touch
  them, yet they are part of the model's variables and are saved and
  restored with them, unlike a constant captured by a lambda.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.ConstProduct(weights=[0.5, 1.0, 2.0])
    >>> variables = layer.init(jax.random.key(0), jnp.ones((4, 3)))
    >>> jax.tree.map(jnp.shape, variables)
    {'constants': {'kernel': (3,)}}
    >>> layer.apply(variables, jnp.full((4, 3), 2.0))[:, 0]
    Array([8., 8., 8., 8.], dtype=float32)

  For sharding, the logical axis name of ``w`` is the class constant
  ``kernel_axes``; it applies to a trainable ``w`` drawn by ``kernel_init``.
  Given or frozen weights carry no names and are replicated, which suits a
  vector of N numbers: see :mod:`flax_dense.sharding`.

  Attributes:
    weights: initial values of ``w``, of shape ``(N,)`` or ``(1, N)``;
      required when frozen, optional when trainable.
    trainable: whether ``w`` is a trainable param (``params``) or a frozen
      constant (``constants``).
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype of ``w``.
    kernel_init: initializer of a trainable ``w`` when ``weights`` is not
      given; Keras's default, uniform in [-0.05, 0.05).
  """

  weights: Any = None
  trainable: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = uniform_init(-0.05, 0.05)

  #: Logical axis name of ``w`` (N,).
  kernel_axes: ClassVar[tuple[str, ...]] = ('embed',)

  def __post_init__(self):
    # Store concrete weights as nested tuples: a module must be hashable for
    # transforms such as `nn.jit`, and lists and arrays are not.
    weights = self.weights
    if isinstance(weights, list | np.ndarray | jax.Array) and not isinstance(
      weights, jax.core.Tracer
    ):
      object.__setattr__(self, 'weights', _nested_tuple(np.asarray(weights)))
    super().__post_init__()

  def _initial_weights(self, size: int) -> np.ndarray | None:
    if self.weights is None:
      if not self.trainable:
        raise ValueError(
          'ConstProduct: frozen weights (trainable=False) need initial'
          ' values; pass weights=<array of shape (N,) or (1, N)> or set'
          ' trainable=True.'
        )
      return None
    weights = np.asarray(self.weights)
    if weights.ndim == 2 and weights.shape[0] == 1:
      weights = weights[0]
    if weights.shape != (size,):
      raise ValueError(
        f'ConstProduct: weights must have shape ({size},) or (1, {size}) to'
        f' match inputs with {size} features, got shape {weights.shape}.'
      )
    return weights

  @nn.compact
  def __call__(self, inputs: Any) -> jax.Array:
    """Applies the scaled product.

    Args:
      inputs: ``(..., N)``.

    Returns:
      ``(..., 1)``.

    Raises:
      ValueError: if frozen without ``weights``, ``weights`` does not have N
        entries, or ``inputs`` is a scalar or has a different N than the
        stored weights.
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 1:
      raise ValueError(
        'ConstProduct: inputs must have shape (..., N) with rank >= 1, got a'
        ' scalar.'
      )
    size = inputs.shape[-1]
    collection = 'params' if self.trainable else CONSTANTS
    built_shape = stored_shape(self, collection, 'kernel')
    if built_shape is not None and built_shape != (size,):
      raise ValueError(
        f'ConstProduct: inputs of shape {inputs.shape} have {size} features'
        f' but the weights were built with shape {built_shape}.'
      )
    # Given weights are checked when the layer is built; once built, the
    # stored (possibly restored) values are the truth.
    initial = None if built_shape else self._initial_weights(size)
    if self.trainable:
      init_fn = self.kernel_init if initial is None else _given(initial)
      weights = self.param('kernel', init_fn, (size,), self.param_dtype)
    else:
      weights = self.variable(
        CONSTANTS, 'kernel', lambda: jnp.asarray(initial, self.param_dtype)
      ).value
    inputs, weights = nn.dtypes.promote_dtype(inputs, weights, dtype=self.dtype)
    return vmap_leading(const_product, inputs, 1, weights)
