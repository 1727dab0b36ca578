"""``ConstProduct`` for linen: a product scaled by frozen or trainable weights."""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from flax.typing import Dtype, Initializer

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import stored_shape
from flax_dense._src.ops import product as product_ops
from flax_dense._src.ops.product import const_product_layer
from flax_dense._src.variables import CONSTANTS


def _nested_tuple(values: np.ndarray) -> Any:
  """``values`` as (nested) tuples of Python numbers, or a number."""
  if values.ndim == 0:
    return values.item()
  return tuple(_nested_tuple(row) for row in values)


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
  kernel_init: Initializer = initializers.keras_uniform

  #: Logical axis name of ``w`` (N,).
  kernel_axes: ClassVar[tuple[str, ...]] = ('embed',)

  def __post_init__(self):
    # Store concrete weights as nested tuples: a module must be hashable for
    # transforms such as `nn.jit`, and lists and arrays are not.
    weights = self.weights
    if isinstance(weights, list | np.ndarray | jax.Array) and not isinstance(
      weights, jax.core.Tracer
    ):
      try:
        weights = _nested_tuple(np.asarray(weights))
      except ValueError:  # ragged: left as given for the check to refuse
        pass
      object.__setattr__(self, 'weights', weights)
    super().__post_init__()

  @nn.compact
  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the scaled product.

    Args:
      inputs: ``(..., N)``.

    Returns:
      ``(..., 1)``.

    Raises:
      TypeError: if ``trainable`` is not a bool, ``weights`` not real
        numbers or ``kernel_init`` not callable.
      ValueError: if frozen without ``weights``, ``weights`` does not have N
        entries, or ``inputs`` is a scalar or has a different N than the
        stored weights.
    """
    trainable = validate.check_bool(self.trainable, 'ConstProduct', 'trainable')
    kernel_init = validate.checked_initializer(
      self.kernel_init, 'ConstProduct', 'kernel'
    )
    inputs = jnp.asarray(inputs)
    collection = 'params' if trainable else CONSTANTS
    built_shape = stored_shape(self, collection, 'kernel')
    size = product_ops.const_product_size(inputs.shape, built_shape)
    # Given weights are checked when the layer is built; once built, the
    # stored (possibly restored) values are the truth.
    initial = None
    if built_shape is None:
      initial = product_ops.const_product_weights(self.weights, trainable, size)
    if trainable:
      init_fn = kernel_init if initial is None else initializers.given(initial)
      weights = self.param('kernel', init_fn, (size,), self.param_dtype)
    else:
      weights = self.variable(
        CONSTANTS, 'kernel', lambda: jnp.asarray(initial, self.param_dtype)
      ).value
    return const_product_layer(inputs, weights, self.dtype)
