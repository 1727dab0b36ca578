"""Keras core layers without weights, for linen."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from flax_dense._src import validate
from flax_dense._src.linen.common import freeze_lists
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


class Activation(nn.Module):
  """Applies an activation function, as Keras ``Activation`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.Activation('relu').apply({}, jnp.array([-1.0, 0.5]))
    Array([0. , 0.5], dtype=float32)
    >>> layer = fd.Activation('leaky_relu', {'negative_slope': 0.1})
    >>> layer.apply({}, jnp.array([-1.0, 0.5]))
    Array([-0.1,  0.5], dtype=float32)

  Attributes:
    activation: ``None`` (identity), a callable, or a Keras activation name
      (``'softmax'``, ``'tanh'``, ``'relu'``, ...); ``softmax`` normalises
      over the last axis.
    activation_kwargs: Keras's parameters of a named activation, such as
      ``{'negative_slope': 0.1}`` for ``'leaky_relu'`` or ``{'axis': 1}``
      for ``'softmax'``; those left out take Keras's defaults.
  """

  activation: str | ActivationFunction | None
  activation_kwargs: Mapping[str, Any] | None = None

  def __post_init__(self):
    # A module must be hashable (static jit arguments, nn.jit): a dict is not.
    kwargs = self.activation_kwargs
    if kwargs is not None and not isinstance(kwargs, FrozenDict):
      object.__setattr__(self, 'activation_kwargs', FrozenDict(kwargs))
    super().__post_init__()

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Applies the activation.

    Args:
      inputs: any shape.

    Returns:
      The activation of ``inputs``, same shape.

    Raises:
      ValueError: for an unknown activation name or parameter, or a
        required parameter left out.
      TypeError: for an activation that is neither ``None``, a string nor a
        callable.
    """
    function = resolve_activation(
      self.activation, 'Activation', **(self.activation_kwargs or {})
    )
    return function(jnp.asarray(inputs))


class Reshape(nn.Module):
  """Reshapes every example to ``target_shape``, as Keras ``Reshape`` does.

  The leading axis is the batch axis and is kept; ``target_shape`` gives the
  shape of one example and may hold one ``-1``, inferred from the size.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.Reshape((3, -1)).apply({}, jnp.ones((2, 12))).shape
    (2, 3, 4)

  Attributes:
    target_shape: shape of one output example, without the batch axis.
  """

  target_shape: Sequence[int]

  def __post_init__(self):
    freeze_lists(self, 'target_shape')
    super().__post_init__()

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Reshapes the inputs.

    Args:
      inputs: ``(B, ...)``.

    Returns:
      ``(B, *target_shape)`` with the ``-1`` inferred.

    Raises:
      TypeError: if ``target_shape`` is not a tuple or list of integers.
      ValueError: if ``target_shape`` has more than one ``-1``, a size below
        ``-1``, or a size other than that of one example; or if ``inputs``
        is a scalar.
    """
    return reshape_layer(jnp.asarray(inputs), self.target_shape)


class Permute(nn.Module):
  """Permutes the axes of every example, as Keras ``Permute`` does.

  ``dims`` is 1-based and excludes the batch axis, as in Keras:
  ``Permute((2, 1))`` swaps the two axes of ``(B, T, F)`` inputs.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.Permute((2, 1)).apply({}, jnp.ones((8, 10, 64))).shape
    (8, 64, 10)

  Attributes:
    dims: a permutation of ``1..n`` for inputs of rank ``n + 1``.
  """

  dims: Sequence[int]

  def __post_init__(self):
    freeze_lists(self, 'dims')
    super().__post_init__()

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Permutes the inputs.

    Args:
      inputs: ``(B, S_1, ..., S_n)``.

    Returns:
      ``(B, S_dims[0], ..., S_dims[n-1])``.

    Raises:
      TypeError: if ``dims`` is not a tuple or list of integers.
      ValueError: if ``dims`` is not a permutation of ``1..n``, or
        ``inputs`` does not have rank ``n + 1``.
    """
    return permute_layer(jnp.asarray(inputs), self.dims)


class Flatten(nn.Module):
  """Flattens every example into a vector, as Keras ``Flatten`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)
    >>> fd.Flatten().apply({}, x)
    Array([[0., 1., 2., 3., 4., 5., 6., 7.]], dtype=float32)
    >>> fd.Flatten('channels_first').apply({}, x)
    Array([[0., 4., 1., 5., 2., 6., 3., 7.]], dtype=float32)

  Attributes:
    data_format: ``'channels_last'`` or ``'channels_first'``; with
      ``'channels_first'`` inputs ``(B, C, ...)`` have their channel axis
      moved last before flattening, as Keras does.
  """

  data_format: str = 'channels_last'

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Flattens the inputs.

    Args:
      inputs: ``(B, ...)``.

    Returns:
      ``(B, N)`` with ``N`` the size of one example (1 for ``(B,)`` inputs).

    Raises:
      TypeError: if ``data_format`` is not a string.
      ValueError: for an unknown ``data_format`` or scalar inputs.
    """
    return flatten_layer(jnp.asarray(inputs), self.data_format)


class RepeatVector(nn.Module):
  """Repeats every input vector ``n`` times: ``(B, F)`` to ``(B, n, F)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> fd.RepeatVector(3).apply({}, jnp.ones((8, 32))).shape
    (8, 3, 32)

  Attributes:
    n: number of repetitions, a positive integer.
  """

  n: int

  def __call__(self, inputs: jax.typing.ArrayLike) -> jax.Array:
    """Repeats the inputs.

    Args:
      inputs: ``(B, F)``.

    Returns:
      ``(B, n, F)``.

    Raises:
      TypeError: if ``n`` is not an integer (a bool, float or string).
      ValueError: if ``n`` is not positive or ``inputs`` is not of rank 2.
    """
    return repeat_vector_layer(jnp.asarray(inputs), self.n)


class Lambda(nn.Module):
  """Wraps a function as a layer, as Keras ``Lambda`` does.

  The function must be traceable by JAX (``jax.jit``, ``jax.vmap`` and
  ``jax.grad`` then compose with it); it has no weights. Output shapes need
  no declaring: :func:`flax_dense.summary` finds them with
  ``jax.eval_shape``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> layer = fd.Lambda(lambda x: x[:, ::2] * 2.0)
    >>> layer.apply({}, jnp.arange(4.0)[None])
    Array([[0., 4.]], dtype=float32)

  Attributes:
    function: called as ``function(*inputs, **kwargs)`` with the arguments
      of ``__call__``.
  """

  function: Callable[..., Any]

  def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
    """Applies the function.

    Args:
      *inputs: positional arguments of ``function``.
      **kwargs: keyword arguments of ``function``.

    Returns:
      ``function(*inputs, **kwargs)``.

    Raises:
      TypeError: if ``function`` is not callable.
    """
    validate.check_callable(self.function, 'Lambda', 'function', 'a callable')
    return self.function(*inputs, **kwargs)
