"""``MultiIODense`` for NNX: two inputs and two outputs."""

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.nnx.common import check_rngs, make_param
from flax_dense._src.ops import multi_io as multi_io_ops
from flax_dense._src.ops.multi_io import multi_io_dense_layer


class MultiIODense(nnx.Module):
  """A dense layer with two inputs and two outputs: ``(a, b) -> (a @ W + b, mean(b))``.

  The NNX twin of :class:`flax_dense.MultiIODense`, the Keras tutorial's
  ``MyLayer``.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.MultiIODense(3, 4, rngs=nnx.Rngs(0))
    >>> projected, mean = layer(jnp.ones((8, 3)), jnp.ones((8, 4)))
    >>> projected.shape, mean.shape
    ((8, 4), (8,))

  Args:
    in_features: D, the size of ``a``'s last axis.
    features: K, the size of ``b``'s last axis and of the first output.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype of the kernel.
    precision: numerical precision of the contraction.
    kernel_init: initializer of the ``(D, K)`` kernel; the tutorial's,
      uniform in [-0.05, 0.05).
    rngs: the rng streams; ``params`` draws the kernel.
  """

  def __init__(
    self,
    in_features: int,
    features: int,
    *,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = initializers.keras_uniform,
    rngs: nnx.Rngs,
  ):
    layer = 'MultiIODense'
    validate.check_positive_int(in_features, layer, 'in_features')
    validate.check_positive_int(features, layer, 'features')
    rngs = check_rngs(rngs, layer)
    self.kernel = make_param(
      layer, 'kernel', kernel_init, rngs, (in_features, features), param_dtype
    )
    self.in_features = in_features
    self.features = features
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision

  def __call__(
    self, a: jax.typing.ArrayLike, b: jax.typing.ArrayLike
  ) -> tuple[jax.Array, jax.Array]:
    """Applies the layer.

    Args:
      a: ``(..., D)``.
      b: ``(..., features)``, with the same leading axes as ``a``.

    Returns:
      ``(a @ kernel + b, mean(b, axis=-1))``: ``(..., features)`` and
      ``(...)``.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    kernel = self.kernel[...]
    multi_io_ops.multi_io_kernel_shape(
      a.shape, b.shape, self.features, kernel.shape
    )
    return multi_io_dense_layer(a, b, kernel, self.dtype, self.precision)
