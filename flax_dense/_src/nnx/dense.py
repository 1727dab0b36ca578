"""``PerPositionDense`` for NNX: one weight matrix for every position."""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, Initializer, PrecisionLike

from flax_dense._src import initializers, validate
from flax_dense._src.nnx.common import check_rngs, make_param, sow_activity_loss
from flax_dense._src.ops import dense as dense_ops
from flax_dense._src.ops.activations import (
  ActivationFunction,
  resolve_activation,
)
from flax_dense._src.ops.dense import per_position_dense_layer
from flax_dense._src.ops.regularizers import Regularizer


class PerPositionDense(nnx.Module):
  """A dense layer with its own kernel and bias for every position.

  The NNX twin of :class:`flax_dense.PerPositionDense`: maps
  ``(..., positions, in_features)`` to ``(..., positions, features)`` with
  ``y[..., p, :] = activation(x[..., p, :] @ kernel[p] + bias[p])``, by the
  same pure function.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.nnx.PerPositionDense(1024, 256, 10, activation='softmax',
    ...                                 rngs=nnx.Rngs(0))
    >>> jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer)))
    {'bias': (1024, 10), 'kernel': (1024, 256, 10)}
    >>> layer(jnp.ones((8, 1024, 256))).shape
    (8, 1024, 10)

  Args:
    positions: number of positions (P).
    in_features: number of input features per position (D).
    features: number of output features per position (K).
    use_bias: whether to add a bias per position.
    activation: ``None``, a callable, or a Keras activation name applied to
      the outputs; ``softmax`` normalises over the features of each position.
    activity_regularizer: ``None`` or a penalty of the outputs, e.g.
      ``fd.l1_l2(l2=0.01)``, divided by the batch size and sown as a
      ``fd.nnx.Loss`` inside ``nnx.capture(model, fd.nnx.Loss)``.
    dtype: the dtype of the computation (default: inferred).
    param_dtype: the dtype of the weights.
    precision: numerical precision of the contraction.
    kernel_init: initializer of the ``(P, D, K)`` kernel; default
      Glorot-uniform with the fans of one position.
    bias_init: initializer of the ``(P, K)`` bias.
    rngs: the rng streams; ``params`` draws the weights.
    kernel_metadata: metadata of the kernel variable, e.g. sharding names.
    bias_metadata: metadata of the bias variable.
  """

  #: Logical axis names of ``kernel`` (P, D, K) and ``bias`` (P, K).
  kernel_axes = ('positions', 'embed', 'classes')
  bias_axes = ('positions', 'classes')

  def __init__(
    self,
    positions: int,
    in_features: int,
    features: int,
    *,
    use_bias: bool = True,
    activation: str | ActivationFunction | None = None,
    activity_regularizer: Regularizer | None = None,
    dtype: Dtype | None = None,
    param_dtype: Dtype = jnp.float32,
    precision: PrecisionLike = None,
    kernel_init: Initializer = initializers.per_position_glorot_uniform,
    bias_init: Initializer = initializers.zeros,
    rngs: nnx.Rngs,
    kernel_metadata: Mapping[str, Any] = MappingProxyType({}),
    bias_metadata: Mapping[str, Any] = MappingProxyType({}),
  ):
    layer = 'PerPositionDense'
    for name, value in (
      ('positions', positions),
      ('in_features', in_features),
      ('features', features),
    ):
      validate.check_positive_int(value, layer, name)
    validate.check_bool(use_bias, layer, 'use_bias')
    resolve_activation(activation, layer)
    validate.check_regularizer(activity_regularizer, layer)
    rngs = check_rngs(rngs, layer)
    self.kernel = make_param(
      layer,
      'kernel',
      kernel_init,
      rngs,
      (positions, in_features, features),
      param_dtype,
      kernel_metadata,
    )
    self.bias: nnx.Param | None = nnx.data(None)
    if use_bias:
      self.bias = make_param(
        layer,
        'bias',
        bias_init,
        rngs,
        (positions, features),
        param_dtype,
        bias_metadata,
      )
    self.positions = positions
    self.in_features = in_features
    self.features = features
    self.use_bias = use_bias
    self.activation = activation
    self.activity_regularizer = activity_regularizer
    self.dtype = dtype
    self.param_dtype = param_dtype
    self.precision = precision

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the per-position dense layer.

    Args:
      inputs: ``(..., positions, in_features)``.

    Returns:
      ``(..., positions, features)``.

    Raises:
      ValueError: if ``inputs`` has rank below 2, or other positions or
        input features than the layer was built for.
    """
    inputs = jnp.asarray(inputs)
    kernel = self.kernel[...]
    dense_ops.per_position_dense_kernel_shape(
      inputs.shape, self.features, kernel.shape
    )
    bias = None if self.bias is None else self.bias[...]
    outputs = per_position_dense_layer(
      inputs,
      kernel,
      bias,
      resolve_activation(self.activation, 'PerPositionDense'),
      self.dtype,
      self.precision,
    )
    sow_activity_loss(self, self.activity_regularizer, outputs)
    return outputs
