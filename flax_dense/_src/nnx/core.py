"""Keras core layers without weights, for NNX."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.ops.activations import (
  ActivationFunction,
  resolve_activation,
)
from flax_dense._src.ops.core import (
  flatten_layer,
  permute_layer,
  repeat_vector_layer,
  reshape_layer,
)


class Activation(nnx.Module):
  """Applies an activation function, as Keras ``Activation`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.nnx.Activation('relu')(jnp.array([-1.0, 0.5]))
    Array([0. , 0.5], dtype=float32)
    >>> fd.nnx.Activation('leaky_relu', {'negative_slope': 0.1})(
    ...   jnp.array([-1.0, 0.5]))
    Array([-0.1,  0.5], dtype=float32)

  Args:
    activation: ``None`` (identity), a callable, or a Keras activation name;
      ``softmax`` normalises over the last axis.
    activation_kwargs: Keras's parameters of a named activation, such as
      ``{'negative_slope': 0.1}`` for ``'leaky_relu'``; those left out take
      Keras's defaults.
  """

  def __init__(
    self,
    activation: str | ActivationFunction | None,
    activation_kwargs: Mapping[str, Any] | None = None,
  ):
    if activation_kwargs is not None and not isinstance(
      activation_kwargs, Mapping
    ):
      raise TypeError(
        'Activation: activation_kwargs must be a mapping of parameter names'
        f' to values, or None, got {activation_kwargs!r}.'
      )
    kwargs = dict(activation_kwargs or {})
    resolve_activation(activation, 'Activation', **kwargs)
    self.activation = activation
    self.activation_kwargs = kwargs

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the activation to ``inputs`` of any shape."""
    function = resolve_activation(
      self.activation, 'Activation', **self.activation_kwargs
    )
    return function(jnp.asarray(inputs))


class Reshape(nnx.Module):
  """Reshapes every example to ``target_shape``, as Keras ``Reshape`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.nnx.Reshape((3, -1))(jnp.ones((2, 12))).shape
    (2, 3, 4)

  Args:
    target_shape: shape of one output example, without the batch axis; one
      entry may be ``-1``.
  """

  def __init__(self, target_shape: Sequence[int]):
    self.target_shape = validate.check_int_tuple(
      target_shape, 'Reshape', 'target_shape'
    )

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Reshapes ``(B, ...)`` inputs to ``(B, *target_shape)``."""
    return reshape_layer(jnp.asarray(inputs), self.target_shape)


class Permute(nnx.Module):
  """Permutes the axes of every example, as Keras ``Permute`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.nnx.Permute((2, 1))(jnp.ones((8, 10, 64))).shape
    (8, 64, 10)

  Args:
    dims: a permutation of ``1..n`` (1-based, the batch axis excluded) for
      inputs of rank ``n + 1``.
  """

  def __init__(self, dims: Sequence[int]):
    self.dims = validate.check_permutation(dims, 'Permute')

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Permutes ``(B, S_1, ..., S_n)`` to ``(B, S_dims[0], ...)``."""
    return permute_layer(jnp.asarray(inputs), self.dims)


class Flatten(nnx.Module):
  """Flattens every example into a vector, as Keras ``Flatten`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.nnx.Flatten()(jnp.ones((2, 3, 4))).shape
    (2, 12)

  Args:
    data_format: ``'channels_last'`` or ``'channels_first'`` (the channel
      axis is moved last before flattening, as Keras does).
  """

  def __init__(self, data_format: str = 'channels_last'):
    validate.check_data_format(data_format, 'Flatten')
    self.data_format = data_format

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Flattens ``(B, ...)`` inputs to ``(B, N)``."""
    return flatten_layer(jnp.asarray(inputs), self.data_format)


class RepeatVector(nnx.Module):
  """Repeats every input vector ``n`` times: ``(B, F)`` to ``(B, n, F)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.nnx.RepeatVector(3)(jnp.ones((8, 32))).shape
    (8, 3, 32)

  Args:
    n: number of repetitions, a positive integer.
  """

  def __init__(self, n: int):
    self.n = validate.check_positive_int(n, 'RepeatVector', 'n')

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Repeats ``(B, F)`` inputs to ``(B, n, F)``."""
    return repeat_vector_layer(jnp.asarray(inputs), self.n)


class Lambda(nnx.Module):
  """Wraps a function as a layer, as Keras ``Lambda`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.nnx.Lambda(lambda x: x * 2.0)(jnp.arange(3.0))
    Array([0., 2., 4.], dtype=float32)

  Args:
    function: a JAX-traceable function, called with the layer's arguments.
  """

  def __init__(self, function: Callable[..., Any]):
    validate.check_callable(function, 'Lambda', 'function', 'a callable')
    self.function = function

  def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
    """Returns ``function(*inputs, **kwargs)``."""
    return self.function(*inputs, **kwargs)
