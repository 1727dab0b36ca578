"""Keras activation names resolved to JAX functions."""

from collections.abc import Callable

import jax
import jax.numpy as jnp

ActivationFunction = Callable[[jax.Array], jax.Array]


def _linear(x: jax.Array) -> jax.Array:
  return x


def _hard_sigmoid(x: jax.Array) -> jax.Array:
  # Keras 3 definition: relu6(x + 3) / 6.
  return jax.nn.relu6(x + 3.0) / 6.0


def _gelu(x: jax.Array) -> jax.Array:
  # Keras 3 default: the exact gelu; JAX's default is the tanh approximation.
  return jax.nn.gelu(x, approximate=False)


def _leaky_relu(x: jax.Array) -> jax.Array:
  # Keras 3 default slope 0.2; JAX's default is 0.01.
  return jax.nn.leaky_relu(x, negative_slope=0.2)


KERAS_ACTIVATIONS: dict[str, ActivationFunction] = {
  'elu': jax.nn.elu,
  'exponential': jnp.exp,
  'gelu': _gelu,
  'hard_sigmoid': _hard_sigmoid,
  'leaky_relu': _leaky_relu,
  'linear': _linear,
  'log_softmax': jax.nn.log_softmax,
  'mish': jax.nn.mish,
  'relu': jax.nn.relu,
  'relu6': jax.nn.relu6,
  'selu': jax.nn.selu,
  'sigmoid': jax.nn.sigmoid,
  'silu': jax.nn.silu,
  'softmax': jax.nn.softmax,
  'softplus': jax.nn.softplus,
  'softsign': jax.nn.soft_sign,
  'swish': jax.nn.silu,
  'tanh': jnp.tanh,
}


def resolve_activation(
  activation: str | ActivationFunction | None, layer: str
) -> ActivationFunction:
  """Returns the function for a Keras activation name or callable.

  Args:
    activation: ``None`` (identity), a callable, or a Keras name such as
      ``'softmax'`` or ``'tanh'``.
    layer: name of the calling layer, used in error messages.

  Returns:
    A function applied elementwise, or over the last axis for ``softmax``
    and ``log_softmax``.

  Raises:
    ValueError: for an unknown name or a value that is neither a string nor a
      callable.
  """
  if activation is None:
    return _linear
  if isinstance(activation, str):
    try:
      return KERAS_ACTIVATIONS[activation.lower()]
    except KeyError:
      known = ', '.join(sorted(KERAS_ACTIVATIONS))
      raise ValueError(
        f'{layer}: unknown activation {activation!r}; expected a callable or'
        f' one of: {known}.'
      ) from None
  if callable(activation):
    return activation
  raise ValueError(
    f'{layer}: activation must be None, a callable or a Keras name, got'
    f' {activation!r} of type {type(activation).__name__}.'
  )
