"""A layer with two inputs and two outputs, the Keras tutorial's ``MyLayer``."""

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src.batching import vmap_batch_axes
from flax_dense._src.checks import check_positive_int, stored_shape
from flax_dense._src.product import uniform_init


def multi_io_dense(
  a: jax.Array,
  b: jax.Array,
  kernel: jax.Array,
  precision: PrecisionLike = None,
) -> tuple[jax.Array, jax.Array]:
  """Projects ``a`` and adds ``b``; also averages ``b``. For one example.

  Args:
    a: ``(D,)``.
    b: ``(K,)``.
    kernel: ``(D, K)``.
    precision: passed to the contraction.

  Returns:
    ``(a @ kernel + b, mean(b))`` of shapes ``(K,)`` and ``()``.
  """
  chex.assert_shape(
    [a, b],
    [kernel.shape[:1], kernel.shape[1:]],
    custom_message='multi_io_dense: a must be (D,) and b (K,) for a (D, K)'
    ' kernel.',
  )
  return jnp.dot(a, kernel, precision=precision) + b, jnp.mean(b)


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
  kernel_init: Initializer = uniform_init(-0.05, 0.05)

  @nn.compact
  def __call__(self, a: Any, b: Any) -> tuple[jax.Array, jax.Array]:
    """Applies the layer.

    Args:
      a: ``(..., D)``.
      b: ``(..., features)``, with the same leading axes as ``a``.

    Returns:
      ``(a @ kernel + b, mean(b, axis=-1))``: ``(..., features)`` and
      ``(...)``.

    Raises:
      ValueError: for a non-positive ``features``, a scalar input, ``b``
        without ``features`` features, leading axes of ``a`` and ``b`` that
        differ, or D differing from the kernel's.
    """
    check_positive_int(self.features, 'MultiIODense', 'features')
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.ndim < 1 or b.ndim < 1:
      raise ValueError(
        'MultiIODense: a and b must have shapes (..., D) and (..., features)'
        f' with rank >= 1, got shapes {a.shape} and {b.shape}.'
      )
    if b.shape[-1] != self.features:
      raise ValueError(
        f'MultiIODense: b must have shape (..., {self.features}) to be added'
        f' to a @ kernel with features={self.features}, got shape {b.shape}.'
      )
    if a.shape[:-1] != b.shape[:-1]:
      raise ValueError(
        'MultiIODense: a and b must have the same leading (batch) axes, got'
        f' shapes {a.shape} and {b.shape}.'
      )
    kernel_shape = (a.shape[-1], self.features)
    built_shape = stored_shape(self, 'params', 'kernel')
    if built_shape is not None and built_shape != kernel_shape:
      raise ValueError(
        f'MultiIODense: a of shape {a.shape} has {a.shape[-1]} features and'
        f' needs a kernel of shape {kernel_shape} (in_features, features),'
        f' but the kernel was built with shape {built_shape}.'
      )
    kernel = self.param(
      'kernel', self.kernel_init, kernel_shape, self.param_dtype
    )
    a, b, kernel = nn.dtypes.promote_dtype(a, b, kernel, dtype=self.dtype)
    return vmap_batch_axes(
      functools.partial(multi_io_dense, precision=self.precision),
      a.ndim - 1,
      (a, b),
      kernel,
    )
