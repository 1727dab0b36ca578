"""``MultiIODense`` for linen: two inputs and two outputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import stored_shape
from flax_dense._src.ops import multi_io as multi_io_ops
from flax_dense._src.ops.multi_io import multi_io_dense_layer


class MultiIODense(nn.Module):
  """A dense layer with two inputs and two outputs: ``(a, b) -> (a @ W + b, mean(b))``.

  The Flax form of the Keras tutorial's ``MyLayer``: several inputs are
  several arguments of ``__call__``, several outputs a tuple (any pytree
  works), and :func:`flax_dense.summary` lists every output shape. For
  ``a: (..., D)`` and ``b: (..., features)`` it returns
  ``(a @ kernel + b, mean(b, axis=-1))`` of shapes ``(..., features)`` and
  ``(...)``; Keras's ``[(batch, output_dim), (batch,)]``. All leading axes
  are batch axes, the same for ``a`` and ``b``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.MultiIODense(features=4)
    >>> a, b = jnp.ones((8, 3)), jnp.ones((8, 4))
    >>> variables = layer.init(jax.random.key(0), a, b)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'kernel': (3, 4)}}
    >>> projected, mean = layer.apply(variables, a, b)
    >>> projected.shape, mean.shape
    ((8, 4), (8,))
    >>> fd.summary(layer, a, b).rows[0].output_shape
    ((8, 4), (8,))

  Attributes:
    features: size of ``b``'s last axis and of the first output (K).
    dtype: the dtype of the computation (default: inferred from inputs and
      params).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contraction, see
      ``jax.lax.Precision``.
    kernel_init: initializer of the ``(D, features)`` kernel; the tutorial's,
      uniform in [-0.05, 0.05).
  """

  features: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = initializers.keras_uniform

  @nn.compact
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

    Raises:
      TypeError: if ``features`` is not an integer or ``kernel_init`` not
        callable.
      ValueError: for a non-positive ``features``, a scalar input, ``b``
        without ``features`` features, leading axes of ``a`` and ``b`` that
        differ, or D differing from the kernel's.
    """
    validate.check_positive_int(self.features, 'MultiIODense', 'features')
    kernel_init = validate.checked_initializer(
      self.kernel_init, 'MultiIODense', 'kernel'
    )
    a, b = jnp.asarray(a), jnp.asarray(b)
    kernel_shape = multi_io_ops.multi_io_kernel_shape(
      a.shape, b.shape, self.features, stored_shape(self, 'params', 'kernel')
    )
    kernel = self.param('kernel', kernel_init, kernel_shape, self.param_dtype)
    return multi_io_dense_layer(a, b, kernel, self.dtype, self.precision)
