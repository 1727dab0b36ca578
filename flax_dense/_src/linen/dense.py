"""Per-position dense layer: one weight matrix for every position."""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.linen.common import sow_activity_loss, stored_shape
from flax_dense._src.ops import dense as dense_ops
from flax_dense._src.ops.activations import (
  ActivationFunction,
  resolve_activation,
)
from flax_dense._src.ops.dense import per_position_dense_layer
from flax_dense._src.ops.regularizers import Regularizer


class PerPositionDense(nn.Module):
  """A dense layer with its own kernel and bias for every position.

  Maps ``(..., P, D)`` to ``(..., P, features)`` with
  ``y[..., p, :] = activation(x[..., p, :] @ kernel[p] + bias[p])``: the
  layer of Keras ``EinsumDense('abc,bcd->abd', bias_axes='bd')``,
  ``LocallyConnected1D(features, 1)`` and the classic custom ``Dense2D``,
  with the same parameter layout, so their weights port directly. All
  leading axes are batch axes.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.PerPositionDense(features=10, activation='softmax')
    >>> x = jnp.ones((8, 1024, 256))
    >>> variables = layer.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (1024, 10), 'kernel': (1024, 256, 10)}}
    >>> layer.apply(variables, x).shape
    (8, 1024, 10)

  For sharding, the weights' logical axis names are the class constants
  ``kernel_axes`` and ``bias_axes``, positions first: see
  :mod:`flax_dense.sharding`.

  The implementation is chosen by backend and shape, with the same results
  to float32 rounding and the same parameters: see the Performance guide.

  Attributes:
    features: number of output features per position (K).
    use_bias: whether to add a bias per position.
    dtype: the dtype of the computation (default: inferred from inputs and
      params).
    param_dtype: the dtype passed to parameter initializers.
    precision: numerical precision of the contraction, see ``jax.lax.Precision``.
    kernel_init: initializer of the ``(P, D, features)`` kernel; the default
      is Glorot-uniform with the fans of one position.
    bias_init: initializer of the ``(P, features)`` bias.
    activation: ``None``, a callable, or a Keras activation name
      (``'softmax'``, ``'tanh'``, ``'relu'``, ...) applied to the outputs;
      ``softmax`` normalises over the features of each position.
    activity_regularizer: ``None`` or a penalty of the outputs, e.g.
      ``fd.l1_l2(l2=0.01)``; as in Keras 3 it is divided by the batch size
      (the leading axis) and sown into the ``losses`` collection, summed by
      ``fd.collect_losses`` after ``apply(..., mutable=['losses'])``.
  """

  features: int
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = initializers.per_position_glorot_uniform
  bias_init: Initializer = initializers.zeros
  activation: str | ActivationFunction | None = None
  activity_regularizer: Regularizer | None = None

  #: Logical axis names of ``kernel`` (P, D, K) and ``bias`` (P, K).
  kernel_axes: ClassVar[tuple[str, ...]] = ('positions', 'embed', 'classes')
  bias_axes: ClassVar[tuple[str, ...]] = ('positions', 'classes')

  @nn.compact
  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the per-position dense layer.

    Args:
      inputs: ``(..., P, D)``.

    Returns:
      ``(..., P, features)``.

    Raises:
      ValueError: if ``inputs`` has rank below 2, or P or D differ from the
        shape the parameters were built for.
    """
    layer = 'PerPositionDense'
    activation = resolve_activation(self.activation, layer)
    validate.check_regularizer(self.activity_regularizer, layer)
    validate.check_positive_int(self.features, layer, 'features')
    use_bias = validate.check_bool(self.use_bias, layer, 'use_bias')
    kernel_init = validate.checked_initializer(
      self.kernel_init, layer, 'kernel'
    )
    bias_init = validate.checked_initializer(self.bias_init, layer, 'bias')
    inputs = jnp.asarray(inputs)
    kernel_shape = dense_ops.per_position_dense_kernel_shape(
      inputs.shape, self.features, stored_shape(self, 'params', 'kernel')
    )
    kernel = self.param('kernel', kernel_init, kernel_shape, self.param_dtype)
    bias = None
    if use_bias:
      bias = self.param(
        'bias',
        bias_init,
        (kernel_shape[0], self.features),
        self.param_dtype,
      )
    outputs = per_position_dense_layer(
      inputs, kernel, bias, activation, self.dtype, self.precision
    )
    sow_activity_loss(self, self.activity_regularizer, outputs)
    return outputs
