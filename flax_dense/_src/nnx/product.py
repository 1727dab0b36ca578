"""``ConstProduct`` for NNX: a product scaled by frozen or trainable weights."""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer

from flax_dense._src import initializers, validate
from flax_dense._src.nnx.common import check_rngs, make_param
from flax_dense._src.ops import product as product_ops
from flax_dense._src.ops.product import const_product_layer
from flax_dense._src.variables import Constant


class ConstProduct(nnx.Module):
  """Multiplies the inputs by a weight vector and takes their product.

  The NNX twin of :class:`flax_dense.ConstProduct`: ``(..., N) -> (..., 1)``
  with ``y = prod(x * w, axis=-1)``. A frozen ``w`` is a
  :class:`~flax_dense.nnx.Constant`, never an ``nnx.Param``: optimizers and
  ``nnx.grad`` over ``nnx.Param`` leave it alone, while ``nnx.state`` and
  checkpoints carry it.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.ConstProduct(3, weights=[0.5, 1.0, 2.0])
    >>> layer.kernel
    Constant( # 3 (12 B)
      value=Array([0.5, 1. , 2. ], dtype=float32)
    )
    >>> layer(jnp.full((4, 3), 2.0))[:, 0]
    Array([8., 8., 8., 8.], dtype=float32)
    >>> len(nnx.state(layer, nnx.Param))  # nothing to train
    0

  Args:
    in_features: N, the size of the inputs' last axis.
    weights: initial values of ``w``, ``(N,)`` or ``(1, N)``; required when
      frozen, optional when trainable.
    trainable: whether ``w`` is an ``nnx.Param`` or a frozen ``Constant``.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype of ``w``.
    kernel_init: initializer of a trainable ``w`` when ``weights`` is not
      given; Keras's default, uniform in [-0.05, 0.05).
    rngs: the rng streams; needed only to draw a trainable ``w``.
  """

  #: Logical axis name of ``w`` (N,).
  kernel_axes = ('embed',)

  def __init__(
    self,
    in_features: int,
    *,
    weights: Any = None,
    trainable: bool = False,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    kernel_init: Initializer = initializers.keras_uniform,
    rngs: nnx.Rngs | None = None,
  ):
    layer = 'ConstProduct'
    validate.check_positive_int(in_features, layer, 'in_features')
    trainable = validate.check_bool(trainable, layer, 'trainable')
    validate.check_initializer(kernel_init, layer, 'kernel_init')
    if isinstance(weights, nnx.Variable):
      raise TypeError(
        f'ConstProduct: weights must be the initial values (an array or a'
        f' list), got an {type(weights).__name__}; the layer makes w an'
        ' nnx.Param (trainable=True) or a fd.nnx.Constant itself.'
      )
    initial = product_ops.const_product_weights(weights, trainable, in_features)
    if not trainable:
      self.kernel: nnx.Variable = Constant(jnp.asarray(initial, param_dtype))
    elif initial is not None:
      self.kernel = nnx.Param(jnp.asarray(initial, param_dtype))
    else:
      rngs = check_rngs(rngs, layer)
      self.kernel = make_param(
        layer, 'kernel', kernel_init, rngs, (in_features,), param_dtype
      )
    self.in_features = in_features
    self.trainable = trainable
    self.dtype = dtype
    self.param_dtype = param_dtype

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the scaled product.

    Args:
      inputs: ``(..., N)``.

    Returns:
      ``(..., 1)``.

    Raises:
      ValueError: if ``inputs`` is a scalar or its N differs from ``w``'s.
    """
    inputs = jnp.asarray(inputs)
    weights = self.kernel[...]
    product_ops.const_product_size(inputs.shape, weights.shape)
    return const_product_layer(inputs, weights, self.dtype)
