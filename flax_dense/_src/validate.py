"""The generic argument checks, with their messages.

The linen and NNX front ends and the pure functions raise their errors from
here (a layer's own shape rules live in its op file), so a mistake reads
the same whichever API made it. Every check takes ``(value, layer, name)``. A message names
the layer (or function), the argument, what was expected and what was
given. These checks run on static values (Python numbers, shapes) before
any math; invariants of the pure core use ``chex`` asserts instead.

The typed checks follow Python's convention: an argument of the wrong type
raises ``TypeError``, one of the right type with a bad value ``ValueError``.

- A flag is ``bool`` or a NumPy bool only: a string such as ``'False'`` is
  truthy, so taking it would silently flip the flag.
- An integer is a Python or NumPy integer, never a bool, a float (even
  ``3.0``), a string or a list.
- A real number is a Python or NumPy integer or float, never a bool (a rate
  of ``True`` is a mistake, not 1.0), a complex number, a string or ``None``.
"""

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from flax.core import meta
from flax.typing import Initializer

#: The two layouts of Keras's ``data_format`` argument.
DATA_FORMATS = ('channels_last', 'channels_first')


def describe_given(value: Any) -> str:
  """``value`` and its type, as the messages show what was given."""
  return f'{value!r} of type {type(value).__name__}'


def is_bool(value: Any) -> bool:
  """Whether ``value`` is a Python or NumPy bool."""
  return isinstance(value, bool | np.bool_)


def is_int(value: Any) -> bool:
  """Whether ``value`` is a Python or NumPy integer (not a bool)."""
  return isinstance(value, numbers.Integral | np.integer) and not is_bool(value)


def is_real(value: Any) -> bool:
  """Whether ``value`` is a Python or NumPy integer or float (not a bool)."""
  return isinstance(value, numbers.Real | np.integer | np.floating) and not (
    is_bool(value)
  )


def check_bool(value: Any, layer: str, name: str) -> bool:
  """``value`` as a ``bool`` if it is ``True``/``False`` or a NumPy bool.

  Raises:
    TypeError: for anything else, e.g. the truthy string ``'False'`` or 1.
  """
  if not is_bool(value):
    raise TypeError(
      f'{layer}: {name} must be True or False (a bool), got {describe_given(value)}.'
    )
  return bool(value)


def check_int(
  value: Any, layer: str, name: str, minimum: int | None = None
) -> int:
  """``value`` as an ``int`` if it is an integer of at least ``minimum``.

  Raises:
    TypeError: unless ``value`` is a Python or NumPy integer (not a bool).
    ValueError: if it is below ``minimum``.
  """
  expected = {None: 'an integer', 0: 'a non-negative integer'}.get(
    minimum,
    'a positive integer' if minimum == 1 else f'an integer >= {minimum}',
  )
  if not is_int(value):
    raise TypeError(
      f'{layer}: {name} must be {expected}, got {describe_given(value)}.'
    )
  if minimum is not None and value < minimum:
    raise ValueError(f'{layer}: {name} must be {expected}, got {value!r}.')
  return int(value)


def check_positive_int(value: Any, layer: str, name: str) -> int:
  """``value`` as an ``int`` if it is a positive integer.

  Raises:
    TypeError: unless ``value`` is a Python or NumPy integer (not a bool).
    ValueError: if it is 0 or negative.
  """
  return check_int(value, layer, name, minimum=1)


def check_real(
  value: Any,
  layer: str,
  name: str,
  expected: str = 'a real number',
  *,
  minimum: float | None = None,
  maximum: float | None = None,
  below_maximum: bool = False,
  allow_nan: bool = False,
  allow_inf: bool = False,
) -> float:
  """``value`` as a ``float`` if it is a real number in the given range.

  Args:
    value: the argument.
    layer: the layer or function, named in the message.
    name: the argument's name.
    expected: what the message says is expected.
    minimum: the smallest value allowed, or ``None``.
    maximum: the largest value allowed (excluded with ``below_maximum``),
      or ``None``.
    below_maximum: whether ``maximum`` itself is excluded.
    allow_nan: whether NaN is allowed.
    allow_inf: whether infinities are allowed.

  Raises:
    TypeError: unless ``value`` is a Python or NumPy integer or float (a
      bool, a complex number, a string and ``None`` are not).
    ValueError: for NaN, an infinity or a value out of range, unless
      allowed.
  """
  if not is_real(value):
    raise TypeError(
      f'{layer}: {name} must be {expected}, got {describe_given(value)}.'
    )
  number = float(value)
  bad = (math.isnan(number) and not allow_nan) or (
    math.isinf(number) and not allow_inf
  )
  if not math.isnan(number):
    bad = bad or (minimum is not None and number < minimum)
    if maximum is not None:
      bad = bad or number > maximum or (below_maximum and number == maximum)
  if bad:
    raise ValueError(f'{layer}: {name} must be {expected}, got {value!r}.')
  return number


def check_rate(rate: Any, layer: str, name: str = 'rate') -> float:
  """``rate`` as a float if it is a real number in [0, 1).

  A rate of 1 would drop everything (and cannot be rescaled by
  ``1 / (1 - rate)``), so it is refused like a rate outside [0, 1].

  Raises:
    TypeError: unless ``rate`` is a real number (not a bool).
    ValueError: unless ``0 <= rate < 1``.
  """
  return check_real(
    rate,
    layer,
    name,
    'a float in [0, 1) (the fraction of inputs to drop)',
    minimum=0.0,
    maximum=1.0,
    below_maximum=True,
  )


def check_factor(value: Any, layer: str, name: str) -> float:
  """``value`` as a float, if it is a non-negative finite real number.

  Raises:
    TypeError: unless ``value`` is a real number (not a bool).
    ValueError: if it is negative, infinite or NaN.
  """
  return check_real(
    value, layer, name, 'a non-negative finite float', minimum=0.0
  )


def check_string(
  value: Any, layer: str, name: str, choices: Sequence[str]
) -> str:
  """``value`` if it is one of the strings ``choices``.

  Raises:
    TypeError: unless ``value`` is a string.
    ValueError: for a string not among ``choices``.
  """
  if not isinstance(value, str):
    raise TypeError(
      f'{layer}: {name} must be one of {tuple(choices)}, got {describe_given(value)}.'
    )
  if value not in choices:
    raise ValueError(
      f'{layer}: {name} must be one of {tuple(choices)}, got {value!r}.'
    )
  return value


def check_str(value: Any, layer: str, name: str) -> str:
  """``value`` if it is a string (e.g. the name of an rng stream).

  Raises:
    TypeError: unless ``value`` is a string.
  """
  if not isinstance(value, str):
    raise TypeError(
      f'{layer}: {name} must be a string, got {describe_given(value)}.'
    )
  return value


def check_data_format(data_format: Any, layer: str) -> str:
  """``data_format`` if Keras would accept it.

  Raises:
    TypeError: unless ``data_format`` is a string.
    ValueError: for a string other than ``'channels_last'`` and
      ``'channels_first'``.
  """
  return check_string(data_format, layer, 'data_format', DATA_FORMATS)


def check_callable(value: Any, layer: str, name: str, expected: str) -> None:
  """Raises ``TypeError`` unless ``value`` is callable."""
  if not callable(value):
    raise TypeError(
      f'{layer}: {name} must be {expected}, got {describe_given(value)}.'
    )


def check_initializer(value: Any, layer: str, name: str) -> None:
  """Raises ``TypeError`` unless ``value`` is an initializer (a callable).

  Names such as ``'glorot_uniform'`` are Keras's; here an initializer is a
  function ``init(key, shape, dtype)``, e.g. from ``jax.nn.initializers``.
  """
  check_callable(
    value,
    layer,
    name,
    'an initializer, a function init(key, shape, dtype) such as'
    ' jax.nn.initializers.glorot_uniform() (not a name)',
  )


def check_regularizer(regularizer: Any, layer: str) -> None:
  """Raises ``TypeError`` for an ``activity_regularizer`` we cannot call."""
  if regularizer is not None and not callable(regularizer):
    raise TypeError(
      f'{layer}: activity_regularizer must be None or a function from the'
      f' outputs to a scalar (e.g. fd.l1_l2(l2=0.01)), got'
      f' {describe_given(regularizer)}.'
    )


def check_int_tuple(value: Any, layer: str, name: str) -> tuple[int, ...]:
  """``value`` as a tuple of ints if it is a sequence of integers.

  Raises:
    TypeError: unless ``value`` is a tuple or list of Python or NumPy
      integers (a single integer, a string or ``None`` is not).
  """
  if not isinstance(value, tuple | list) or not all(map(is_int, value)):
    raise TypeError(
      f'{layer}: {name} must be a tuple of integers, got {describe_given(value)}.'
    )
  return tuple(int(entry) for entry in value)


def is_dim(value: Any) -> bool:
  """Whether ``value`` is a shape entry: an integer or a symbolic size.

  A symbolic size comes from ``jax.export.symbolic_shape``; it is never
  compared or converted with ``int()`` here.
  """
  return is_int(value) or jax.export.is_symbolic_dim(value)


def check_shape(value: Any, layer: str, name: str) -> tuple[Any, ...]:
  """``value`` as a tuple if it is a shape: integers or symbolic sizes.

  Raises:
    TypeError: unless ``value`` is a tuple or list of shape entries.
  """
  if not isinstance(value, tuple | list) or not all(map(is_dim, value)):
    raise TypeError(
      f'{layer}: {name} must be a tuple of integers, got {describe_given(value)}.'
    )
  return tuple(value)


def check_axes(value: Any, layer: str, name: str = 'axis') -> int | tuple:
  """``value`` as an int or a tuple of ints, an axis or axes.

  Raises:
    TypeError: unless ``value`` is an integer or a tuple or list of them.
  """
  if is_int(value):
    return int(value)
  if not isinstance(value, tuple | list) or not all(map(is_int, value)):
    raise TypeError(
      f'{layer}: {name} must be an integer or a tuple of integers, got'
      f' {describe_given(value)}.'
    )
  return tuple(int(entry) for entry in value)


def check_permutation(dims: Any, layer: str) -> tuple[int, ...]:
  """Keras's 1-based ``dims`` of ``Permute``: a permutation of ``1..n``.

  Raises:
    TypeError: unless ``dims`` is a tuple or list of integers.
    ValueError: unless it is a permutation of ``1..len(dims)`` (0-based
      dims such as ``(0, 1)`` are refused, not taken as another transpose).
  """
  dims = check_int_tuple(dims, layer, 'dims')
  if sorted(dims) != list(range(1, len(dims) + 1)):
    raise ValueError(
      f'{layer}: dims must be a permutation of 1..{len(dims)} (1-based,'
      f' the batch axis excluded), got {dims}.'
    )
  return dims


def is_empty_dim(size: Any) -> bool:
  """Whether the dimension ``size`` is 0; a symbolic dimension never is.

  Shape checks go through this instead of comparing a dimension with 0, so
  that ``jax.export`` with a symbolic size traces them.
  """
  return is_int(size) and size == 0


def check_nonempty_axes(
  layer: str, inputs_shape: tuple[Any, ...], axes: dict[str, Any]
) -> None:
  """Raises our own ``ValueError`` when one of the named sizes is 0.

  A layer cannot build weights for 0 positions or features (its
  initializer would divide by the fan); batch axes may be empty.

  Args:
    layer: the layer, named in the message.
    inputs_shape: the shape of the inputs, shown in the message.
    axes: the sizes by the names the layout gives them.
  """
  for name, size in axes.items():
    if is_empty_dim(size):
      raise ValueError(
        f'{layer}: inputs of shape {tuple(inputs_shape)} have 0 {name}; the'
        f' layer needs at least one.'
      )


def check_rank(inputs: jax.Array, layer: str, rank: int, layout: str) -> None:
  """Raises our own error when ``inputs`` is not of rank ``rank``."""
  if inputs.ndim != rank:
    raise ValueError(
      f'{layer}: inputs must be {layout} (rank {rank}), got shape'
      f' {inputs.shape}.'
    )


def as_array(value: Any, caller: str, name: str) -> jax.Array:
  """``value`` as a JAX array, or our own error naming ``caller``.

  Raises:
    TypeError: for a value that is not an array or nested numbers
      (``None``, a string, a dict, a ragged list).
  """
  if isinstance(value, str | bytes | dict) or value is None:
    raise TypeError(
      f'{caller}: {name} must be an array, got {describe_given(value)}.'
    )
  try:
    return jnp.asarray(value)
  except (TypeError, ValueError):
    raise TypeError(
      f'{caller}: {name} must be an array, got {describe_given(value)}.'
    ) from None


def check_inexact(value: jax.Array, layer: str, name: str, why: str) -> None:
  """Raises ``TypeError`` unless ``value`` holds floats or complex numbers.

  Args:
    value: the array.
    layer: the layer or function, named in the message.
    name: the argument's name.
    why: why integers and booleans cannot do, for the message.
  """
  if not jnp.issubdtype(value.dtype, jnp.inexact):
    raise TypeError(
      f'{layer}: {name} must be a floating-point (or complex) array, got'
      f' dtype {value.dtype}: {why}; cast it first, e.g.'
      f' {name}.astype(jnp.float32).'
    )


def check_array_shape(
  array: Any,
  caller: str,
  name: str,
  expected: Sequence[Any],
  layout: str,
) -> None:
  """Raises our own error unless ``array`` has the shape ``expected``.

  The one shape check of the public per-example functions, whose users
  pass the arrays themselves.

  Args:
    caller: the function, named in the message.
    name: the argument.
    array: its value.
    expected: the shape it must have; a ``None`` entry matches any size.
    layout: the shape in words, e.g. ``'(P, D)'``.

  Raises:
    ValueError: if the rank or a size differs.
  """
  shape = tuple(np.shape(array))
  if len(shape) != len(expected) or any(
    want is not None and size != want
    for size, want in zip(shape, expected, strict=False)
  ):
    wanted = tuple('any' if want is None else want for want in expected)
    raise ValueError(
      f'{caller}: {name} must have shape {layout}, here {wanted}, got shape'
      f' {shape}.'
    )


def check_min_rank(
  inputs: jax.Array, layer: str, rank: int, layout: str, name: str = 'inputs'
) -> None:
  """Raises our own error when ``inputs`` has rank below ``rank``."""
  if inputs.ndim < rank:
    raise ValueError(
      f'{layer}: {name} must have shape {layout} with rank >= {rank}, got'
      f' shape {inputs.shape}.'
    )


def check_built_shape(
  built_shape: Sequence[int] | None,
  layer: str,
  name: str,
  shape: Sequence[int],
  inputs: str,
) -> None:
  """Raises our own error when weight ``name`` was built with a shape other
  than the ``shape`` the inputs ``(..., timesteps, features)`` need.

  Args:
    built_shape: the weight's shape, or ``None`` before it is built.
    layer: named in the message.
    name: the weight.
    shape: the shape the inputs need.
    inputs: the inputs in words, e.g. ``'inputs of shape (2, 5, 3)'``.
  """
  if built_shape is not None and tuple(built_shape) != tuple(shape):
    raise ValueError(
      f'{layer}: {inputs} need {name} of shape {tuple(shape)}, but it was'
      f' built with shape {tuple(built_shape)}; inputs must be (...,'
      ' timesteps, features) with the features the layer was built for.'
    )


def check_weight_shape(
  value: Any, layer: str, name: str, shape: Sequence[int]
) -> None:
  """Raises our own error when an initializer gave the wrong shape.

  ``value`` may be boxed by ``nn.with_logical_partitioning`` or
  ``nnx.with_partitioning``; the array inside is checked.
  """
  if isinstance(value, meta.AxisMetadata):
    value = value.unbox()
  value = getattr(value, 'raw_value', value)
  if tuple(np.shape(value)) != tuple(shape):
    raise ValueError(
      f'{layer}: the initializer of {name} must return shape {tuple(shape)},'
      f' got shape {tuple(np.shape(value))}.'
    )


def checked_initializer(
  init: Any, layer: str, name: str, field: str | None = None
) -> Initializer:
  """``init``, checked to be callable and to return the shape asked for.

  The one place both front ends make a parameter through: linen passes the
  result to ``self.param``, NNX calls it in ``make_param``. A box from
  ``nn.with_logical_partitioning`` or ``nnx.with_partitioning`` is returned
  as the initializer gave it.

  Args:
    init: the initializer, ``init(key, shape, dtype) -> array``.
    layer: the layer, named in the messages.
    name: the parameter, e.g. ``'kernel'``.
    field: the argument that gave ``init``; default ``name + '_init'``.

  Raises:
    TypeError: at once, if ``init`` is not callable.
    ValueError: when called, if ``init`` returns another shape.
  """
  check_initializer(init, layer, f'{name}_init' if field is None else field)

  def checked(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32):
    value = init(key, shape, dtype)
    check_weight_shape(value, layer, name, shape)
    return value

  return checked


# ---------------------------------------------------------------------------
# The input checks of each layer, shared by its linen and NNX classes. Each
# takes the shape a weight was built with (``None`` before it is built) and
# returns the shape the inputs need.
