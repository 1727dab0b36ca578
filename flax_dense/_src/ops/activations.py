"""Keras activation names resolved to JAX functions.

Every name ``keras.activations.get`` accepts in Keras 3 maps to a function
with Keras's signature: the input ``x`` first, then Keras's parameters with
Keras's defaults (which are sometimes not JAX's: exact ``gelu``,
``leaky_relu`` slope 0.2). Functions from ``jax.nn`` are used as they are
where they compute what Keras computes with the same parameters.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from flax_dense._src import validate
from flax_dense._src.ops.reductions import narrow, widen

#: An activation: a function from an array to an array of the same shape,
#: e.g. ``jax.nn.relu``; a layer's ``activation`` takes one or a Keras name.
ActivationFunction = Callable[[jax.Array], jax.Array]


def _linear(x: jax.Array) -> jax.Array:
  """Identity: ``x``."""
  return x


def _relu(
  x: jax.Array,
  negative_slope: float = 0.0,
  max_value: float | None = None,
  threshold: float = 0.0,
) -> jax.Array:
  """Keras's general ``relu``.

  ``x`` where ``x > threshold`` and 0 elsewhere, clipped to
  ``[0, max_value]`` when ``max_value`` is given, minus
  ``negative_slope * relu(threshold - x)``.
  """
  if threshold == 0:
    outputs = jax.nn.relu(x)
  else:
    outputs = jnp.where(x > threshold, x, 0.0)
  if max_value is not None:
    outputs = jnp.clip(outputs, 0.0, max_value)
  if negative_slope != 0:
    outputs = outputs - negative_slope * jax.nn.relu(threshold - x)
  return outputs


def _leaky_relu(x: jax.Array, negative_slope: float = 0.2) -> jax.Array:
  """Leaky relu with Keras's default slope 0.2 (JAX's is 0.01)."""
  return jax.nn.leaky_relu(x, negative_slope=negative_slope)


def _gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
  """Gelu, exact by default (JAX's default is the tanh approximation)."""
  return jax.nn.gelu(x, approximate=approximate)


def _softmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax over ``axis`` (float16 and bfloat16 normalised in float32)."""
  x = jnp.asarray(x)
  return narrow(jax.nn.softmax(widen(x), axis=axis), x.dtype)


def _log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
  """Logarithm of the softmax over ``axis``, normalised as :func:`_softmax`."""
  x = jnp.asarray(x)
  return narrow(jax.nn.log_softmax(widen(x), axis=axis), x.dtype)


def _hard_shrink(x: jax.Array, threshold: float = 0.5) -> jax.Array:
  """``x`` where ``|x| > threshold``, else 0."""
  return jnp.where(jnp.abs(x) > threshold, x, 0.0)


def _soft_shrink(x: jax.Array, threshold: float = 0.5) -> jax.Array:
  """``x`` moved ``threshold`` towards 0, and 0 where ``|x| <= threshold``."""
  return jnp.where(
    x > threshold,
    x - threshold,
    jnp.where(x < -threshold, x + threshold, 0.0),
  )


def _tanh_shrink(x: jax.Array) -> jax.Array:
  """``x - tanh(x)``."""
  return x - jnp.tanh(x)


def _threshold(
  x: jax.Array, threshold: float, default_value: float
) -> jax.Array:
  """``x`` where ``x > threshold``, else ``default_value`` (no defaults)."""
  return jnp.where(x > threshold, x, default_value)


def _sparsemax(x: jax.Array, axis: int = -1) -> jax.Array:
  """Projection of ``x`` onto the probability simplex over ``axis``.

  The published algorithm (Martins and Astudillo, 2016).

  Keras 3.15 and earlier compute the threshold from the sum of the
  cumulative sums over the support instead of the last one
  (keras-team/keras#23425); their outputs then do not sum to 1 whenever
  more than one entry is in the support.
  """
  dtype = jnp.asarray(x).dtype
  # The cumulative sums of float16 and bfloat16 are taken in float32.
  x = widen(x)
  descending = -jnp.sort(-x, axis=axis)
  cumulative = jnp.cumsum(descending, axis=axis)
  ranks_shape = [1] * x.ndim
  ranks_shape[axis] = x.shape[axis]
  ranks = jnp.arange(1, x.shape[axis] + 1, dtype=x.dtype).reshape(ranks_shape)
  in_support = 1 + ranks * descending > cumulative
  support_size = jnp.sum(in_support, axis=axis, keepdims=True)
  # The support is a prefix of the sorted entries, so its sum is the
  # cumulative sum at its last entry.
  support_sum = jnp.take_along_axis(cumulative, support_size - 1, axis=axis)
  tau = (support_sum - 1) / support_size.astype(x.dtype)
  return narrow(jnp.maximum(x - tau, 0.0), dtype)


#: Every Keras 3 activation name, mapped to a JAX function with Keras's
#: parameters and defaults (after the array, Keras's keyword parameters,
#: which ``threshold`` requires).
KERAS_ACTIVATIONS: dict[str, Callable[..., jax.Array]] = {
  'celu': jax.nn.celu,
  'elu': jax.nn.elu,
  'exponential': jnp.exp,
  'gelu': _gelu,
  'glu': jax.nn.glu,
  'hard_shrink': _hard_shrink,
  'hard_sigmoid': jax.nn.hard_sigmoid,
  'hard_silu': jax.nn.hard_silu,
  'hard_swish': jax.nn.hard_silu,
  'hard_tanh': jax.nn.hard_tanh,
  'leaky_relu': _leaky_relu,
  'linear': _linear,
  'log_sigmoid': jax.nn.log_sigmoid,
  'log_softmax': _log_softmax,
  'mish': jax.nn.mish,
  'relu': _relu,
  'relu6': jax.nn.relu6,
  'selu': jax.nn.selu,
  'sigmoid': jax.nn.sigmoid,
  'silu': jax.nn.silu,
  'soft_shrink': _soft_shrink,
  'softmax': _softmax,
  'softplus': jax.nn.softplus,
  'softsign': jax.nn.soft_sign,
  'sparse_plus': jax.nn.sparse_plus,
  'sparse_sigmoid': jax.nn.sparse_sigmoid,
  'sparsemax': _sparsemax,
  'squareplus': jax.nn.squareplus,
  'swish': jax.nn.silu,
  'tanh': jnp.tanh,
  'tanh_shrink': _tanh_shrink,
  'threshold': _threshold,
}


def _bind_parameters(
  name: str,
  function: Callable[..., jax.Array],
  params: dict[str, Any],
  layer: str,
) -> ActivationFunction:
  """``function`` with ``params`` bound, checked against its signature."""
  parameters = list(inspect.signature(function).parameters.values())[1:]
  accepted = [parameter.name for parameter in parameters]
  defaults = {parameter.name: parameter.default for parameter in parameters}
  unknown = sorted(set(params) - set(accepted))
  if unknown:
    accepts = (
      'accepts ' + ', '.join(repr(p) for p in accepted)
      if accepted
      else 'takes no parameters'
    )
    raise ValueError(
      f'{layer}: activation {name!r} has no parameter'
      f' {", ".join(repr(p) for p in unknown)}; it {accepts}.'
    )
  missing = [
    parameter.name
    for parameter in parameters
    if parameter.default is inspect.Parameter.empty
    and parameter.name not in params
  ]
  if missing:
    raise ValueError(
      f'{layer}: activation {name!r} needs the parameters'
      f' {", ".join(repr(p) for p in missing)}, which have no default;'
      f' got {", ".join(repr(p) for p in sorted(params)) or "none"}.'
    )
  # A flag such as gelu's approximate must be a bool: the string 'False'
  # would silently switch it on.
  params = {
    key: validate.check_bool(value, layer, f'{key} (of activation {name!r})')
    if isinstance(defaults.get(key), bool)
    else value
    for key, value in params.items()
  }
  if not params:
    return function
  return _partial(function, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=256)
def _partial(function: ActivationFunction, params: tuple) -> ActivationFunction:
  # One object per activation and parameters: the layers' jitted ops take
  # the activation as a static argument, and a new partial at every call
  # would compile them again.
  return functools.partial(function, **dict(params))


def resolve_activation(
  activation: str | ActivationFunction | None, layer: str, /, **params: Any
) -> ActivationFunction:
  """Returns the function for a Keras activation name or callable.

  Args:
    activation: ``None`` (identity), a callable, or a Keras name such as
      ``'softmax'`` or ``'tanh'`` (any case); the names are those of
      :data:`KERAS_ACTIVATIONS`.
    layer: name of the calling layer, used in error messages.
    **params: Keras's parameters of a named activation, such as
      ``negative_slope`` of ``'leaky_relu'`` or ``axis`` of ``'softmax'``;
      those left out take Keras's defaults. ``'threshold'`` needs both of
      its parameters.

  Returns:
    A function of the inputs alone: elementwise, or over ``axis`` for
    ``softmax``, ``log_softmax``, ``sparsemax`` and ``glu`` (which halves
    that axis).

  Raises:
    ValueError: for an unknown name, a parameter the named activation does
      not take, a required parameter left out, or parameters given with
      ``None`` or a callable.
    TypeError: for an ``activation`` that is neither ``None``, a string nor
      a callable, or a flag (``gelu``'s ``approximate``) that is not a
      bool.
  """
  if isinstance(activation, str):
    name = activation.lower()
    if name not in KERAS_ACTIVATIONS:
      known = ', '.join(sorted(KERAS_ACTIVATIONS))
      raise ValueError(
        f'{layer}: unknown activation {activation!r}; expected a callable or'
        f' one of: {known}.'
      )
    return _bind_parameters(name, KERAS_ACTIVATIONS[name], params, layer)
  if activation is not None and not callable(activation):
    raise TypeError(
      f'{layer}: activation must be None, a callable or a Keras name, got'
      f' {activation!r} of type {type(activation).__name__}.'
    )
  if params:
    raise ValueError(
      f'{layer}: activation parameters {sorted(params)} apply to a Keras'
      f' activation name, got activation {activation!r}; bind the'
      ' parameters of your own function with functools.partial.'
    )
  return _linear if activation is None else activation


def keras_activation(name: str, **params: Any) -> ActivationFunction:
  """Returns Keras's activation ``name`` with ``params`` bound.

  The result is a function of the inputs alone, to pass as ``activation=``
  to any layer.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax.numpy as jnp
    >>> leaky = fd.keras_activation('leaky_relu', negative_slope=0.1)
    >>> leaky(jnp.array([-2.0, 3.0]))
    Array([-0.2,  3. ], dtype=float32)
    >>> fd.Activation(leaky).apply({}, jnp.array([-2.0, 3.0]))
    Array([-0.2,  3. ], dtype=float32)

  Args:
    name: a key of :data:`KERAS_ACTIVATIONS` (any case).
    **params: Keras's parameters of that activation; those left out take
      Keras's defaults.

  Returns:
    ``KERAS_ACTIVATIONS[name]`` with ``params`` bound.

  Raises:
    TypeError: if ``name`` is not a string, or a flag (``gelu``'s
      ``approximate``) not a bool.
    ValueError: for an unknown name, a parameter the activation does not
      take, or a required parameter left out.
  """
  if not isinstance(name, str):
    raise TypeError(
      'keras_activation: name must be a Keras activation name (a string),'
      f' got {name!r} of type {type(name).__name__}.'
    )
  return resolve_activation(name, 'keras_activation', **params)
