"""Every argument and shape check of the layers, with its message.

The linen and NNX front ends and the pure functions raise their errors from
here, so a mistake reads the same whichever API made it. A message names
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


def _given(value: Any) -> str:
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
      f'{layer}: {name} must be True or False (a bool), got {_given(value)}.'
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
    raise TypeError(f'{layer}: {name} must be {expected}, got {_given(value)}.')
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
    raise TypeError(f'{layer}: {name} must be {expected}, got {_given(value)}.')
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


def check_mask_value(value: Any, layer: str) -> float:
  """``Masking``'s ``mask_value`` as a float: any real number, NaN included.

  Raises:
    TypeError: unless ``value`` is a real number (``None``, a string, a
      complex number and a bool are not).
  """
  return check_real(
    value,
    layer,
    'mask_value',
    'a real number (the padding value; NaN masks all-NaN timesteps)',
    allow_nan=True,
    allow_inf=True,
  )


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


def check_factor(value: Any, name: str, layer: str) -> float:
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
      f'{layer}: {name} must be one of {tuple(choices)}, got {_given(value)}.'
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
    raise TypeError(f'{layer}: {name} must be a string, got {_given(value)}.')
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
    raise TypeError(f'{layer}: {name} must be {expected}, got {_given(value)}.')


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
      f' {_given(regularizer)}.'
    )


def check_int_tuple(value: Any, layer: str, name: str) -> tuple[int, ...]:
  """``value`` as a tuple of ints if it is a sequence of integers.

  Raises:
    TypeError: unless ``value`` is a tuple or list of Python or NumPy
      integers (a single integer, a string or ``None`` is not).
  """
  if not isinstance(value, tuple | list) or not all(map(is_int, value)):
    raise TypeError(
      f'{layer}: {name} must be a tuple of integers, got {_given(value)}.'
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
      f'{layer}: {name} must be a tuple of integers, got {_given(value)}.'
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
      f' {_given(value)}.'
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


def check_rank(inputs: jax.Array, rank: int, layout: str, layer: str) -> None:
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
    raise TypeError(f'{caller}: {name} must be an array, got {_given(value)}.')
  try:
    return jnp.asarray(value)
  except (TypeError, ValueError):
    raise TypeError(
      f'{caller}: {name} must be an array, got {_given(value)}.'
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
  caller: str,
  name: str,
  array: Any,
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
  inputs: jax.Array, rank: int, layout: str, layer: str, name: str = 'inputs'
) -> None:
  """Raises our own error when ``inputs`` has rank below ``rank``."""
  if inputs.ndim < rank:
    raise ValueError(
      f'{layer}: {name} must have shape {layout} with rank >= {rank}, got'
      f' shape {inputs.shape}.'
    )


def check_weight_shape(
  layer: str, name: str, value: Any, shape: Sequence[int]
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
    check_weight_shape(layer, name, value, shape)
    return value

  return checked


# ---------------------------------------------------------------------------
# The input checks of each layer, shared by its linen and NNX classes. Each
# takes the shape a weight was built with (``None`` before it is built) and
# returns the shape the inputs need.


def per_position_dense_kernel_shape(
  inputs_shape: tuple[int, ...],
  features: int,
  built_shape: tuple[int, ...] | None,
) -> tuple[int, int, int]:
  """The ``(P, D, K)`` kernel that inputs ``(..., P, D)`` need."""
  if len(inputs_shape) < 2:
    raise ValueError(
      'PerPositionDense: inputs must have shape (..., positions, features)'
      f' with rank >= 2, got shape {inputs_shape}.'
    )
  positions, in_features = inputs_shape[-2:]
  check_nonempty_axes(
    'PerPositionDense',
    inputs_shape,
    {'positions': positions, 'features': in_features},
  )
  kernel_shape = (positions, in_features, features)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'PerPositionDense: inputs of shape {inputs_shape} have {positions}'
      f' positions of {in_features} features and need a kernel of shape'
      f' {kernel_shape} (positions, in_features, features), but the kernel'
      f' was built with shape {tuple(built_shape)}: the layer is built for'
      f' {built_shape[1]} input features at {built_shape[0]} positions, got'
      f' {in_features} at {positions}; inputs must be'
      ' (..., positions, features).'
    )
  return kernel_shape


def const_product_size(
  inputs_shape: tuple[int, ...], built_shape: tuple[int, ...] | None
) -> int:
  """The N of ``ConstProduct`` inputs ``(..., N)``, checked against ``w``."""
  if len(inputs_shape) < 1:
    raise ValueError(
      'ConstProduct: inputs must have shape (..., N) with rank >= 1, got a'
      ' scalar.'
    )
  size = inputs_shape[-1]
  check_nonempty_axes('ConstProduct', inputs_shape, {'features': size})
  if built_shape is not None and tuple(built_shape) != (size,):
    raise ValueError(
      f'ConstProduct: inputs of shape {inputs_shape} have {size} features'
      f' but the weights were built with shape {tuple(built_shape)}.'
    )
  return size


def _real_array(value: Any, layer: str, name: str) -> Any:
  """``value`` as an array of real numbers: NumPy's, or a traced one.

  Raises:
    TypeError: for strings, bools, complex numbers or other objects.
    ValueError: for NaN or infinite entries of a concrete array.
  """
  traced = isinstance(value, jax.core.Tracer)
  try:
    array = value if traced else np.asarray(value)
  except (TypeError, ValueError):
    array = None
  if array is None or np.dtype(array.dtype).kind not in 'iuf':
    dtype = 'ragged' if array is None else array.dtype
    raise TypeError(
      f'{layer}: {name} must be an array of real numbers, got'
      f' {_given(value)} (dtype {dtype}).'
    )
  if not traced and not np.all(np.isfinite(array)):
    raise ValueError(
      f'{layer}: {name} must be finite, got {value!r} with NaN or infinite'
      ' entries.'
    )
  return array


def const_product_weights(
  weights: Any, trainable: bool, size: int | None
) -> np.ndarray | None:
  """``ConstProduct``'s given weights as an ``(N,)`` array, or ``None``.

  Args:
    weights: the given values, ``(N,)`` or ``(1, N)``, or ``None``.
    trainable: whether ``w`` is trained; frozen weights must be given.
    size: the N they must have, or ``None`` to take theirs.

  Raises:
    TypeError: if ``trainable`` is not a bool or ``weights`` not real
      numbers.
    ValueError: for frozen weights not given, or weights of another shape
      or with NaN or infinite entries.
  """
  trainable = check_bool(trainable, 'ConstProduct', 'trainable')
  if weights is None:
    if not trainable:
      raise ValueError(
        'ConstProduct: frozen weights (trainable=False) need initial'
        ' values; pass weights=<array of shape (N,) or (1, N)> or set'
        ' trainable=True.'
      )
    return None
  weights = _real_array(weights, 'ConstProduct', 'weights')
  if weights.ndim == 2 and weights.shape[0] == 1:
    weights = weights[0]
  if weights.ndim != 1 or (size is not None and weights.shape != (size,)):
    size_text = 'N' if size is None else size
    raise ValueError(
      f'ConstProduct: weights must have shape ({size_text},) or'
      f' (1, {size_text}) to match inputs with {size_text} features, got'
      f' shape {weights.shape}.'
    )
  return weights


def multi_io_kernel_shape(
  a_shape: tuple[int, ...],
  b_shape: tuple[int, ...],
  features: int,
  built_shape: tuple[int, ...] | None,
) -> tuple[int, int]:
  """The ``(D, K)`` kernel ``MultiIODense`` needs for ``a`` and ``b``."""
  if len(a_shape) < 1 or len(b_shape) < 1:
    raise ValueError(
      'MultiIODense: a and b must have shapes (..., D) and (..., features)'
      f' with rank >= 1, got shapes {a_shape} and {b_shape}.'
    )
  if b_shape[-1] != features:
    raise ValueError(
      f'MultiIODense: b must have shape (..., {features}) to be added'
      f' to a @ kernel with features={features}, got shape {b_shape}.'
    )
  if a_shape[:-1] != b_shape[:-1]:
    raise ValueError(
      'MultiIODense: a and b must have the same leading (batch) axes, got'
      f' shapes {a_shape} and {b_shape}.'
    )
  check_nonempty_axes('MultiIODense', a_shape, {'features of a': a_shape[-1]})
  kernel_shape = (a_shape[-1], features)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'MultiIODense: a of shape {a_shape} has {a_shape[-1]} features and'
      f' needs a kernel of shape {kernel_shape} (in_features, features),'
      f' but the kernel was built with shape {tuple(built_shape)}.'
    )
  return kernel_shape


def check_attention_fields(
  units: Any, output_dim: Any, return_probabilities: Any
) -> None:
  """Checks the sizes and the flag of ``AttentionDecoder``."""
  check_positive_int(units, 'AttentionDecoder', 'units')
  check_positive_int(output_dim, 'AttentionDecoder', 'output_dim')
  check_bool(return_probabilities, 'AttentionDecoder', 'return_probabilities')


def attention_decoder_mask(
  inputs: jax.Array, mask: jax.typing.ArrayLike | None
) -> jax.Array | None:
  """``AttentionDecoder``'s mask as booleans, checked against the inputs."""
  if inputs.ndim < 2 or inputs.shape[-2] == 0:
    raise ValueError(
      'AttentionDecoder: inputs must have shape (..., timesteps, features)'
      f' with rank >= 2 and at least one timestep, got shape {inputs.shape}.'
    )
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.shape != inputs.shape[:-1]:
    raise ValueError(
      f'AttentionDecoder: mask must have shape {inputs.shape[:-1]}'
      f' (..., timesteps) to match inputs of shape {inputs.shape}, got'
      f' shape {mask.shape}.'
    )
  return mask.astype(bool)


def check_attention_built(
  inputs_shape: tuple[int, ...],
  units: int,
  output_dim: int,
  name: str,
  shape: tuple[int, ...],
  built_shape: tuple[int, ...] | None,
) -> None:
  """Raises our own error when a param of the decoder has another shape."""
  if built_shape is not None and tuple(built_shape) != tuple(shape):
    raise ValueError(
      f'AttentionDecoder: inputs of shape {inputs_shape} with'
      f' units={units} and output_dim={output_dim} need {name}'
      f' of shape {shape}, but it was built with shape {tuple(built_shape)};'
      ' inputs must be (..., timesteps, features) with the features the'
      ' layer was built for.'
    )


# ---------------------------------------------------------------------------
# LocallyConnected1D, shared by its linen and NNX classes, the pure function
# and the Keras weight converter.

#: Keras 2 ``LocallyConnected1D``'s weight layouts by ``implementation``.
LOCALLY_CONNECTED_1D_IMPLEMENTATIONS = (1, 2, 3)


def valid_output_length(
  input_length: int, kernel_size: int, strides: int
) -> int:
  """Keras's output length with ``'valid'`` padding (0 or less: no window)."""
  return (input_length - kernel_size) // strides + 1


def single_positive_int(value: Any, layer: str, name: str) -> int:
  """A positive int given as Keras accepts it: ``3``, ``(3,)`` or ``[3]``.

  Raises:
    TypeError: unless ``value`` is an integer or a tuple or list of them.
    ValueError: for a tuple or list of another length than one, or an
      integer that is not positive.
  """
  expected = 'a positive integer or a tuple of one'
  if isinstance(value, tuple | list):
    if len(value) != 1:
      raise ValueError(
        f'{layer}: {name} must be {expected} (1D), got {value!r} with'
        f' {len(value)} entries.'
      )
    value = value[0]
  if not is_int(value):
    raise TypeError(f'{layer}: {name} must be {expected}, got {_given(value)}.')
  return check_positive_int(value, layer, name)


def locally_connected_1d_options(
  filters: Any,
  kernel_size: Any,
  strides: Any,
  padding: Any,
  data_format: Any,
  use_bias: Any,
  layer: str = 'LocallyConnected1D',
) -> tuple[int, int]:
  """Checks ``LocallyConnected1D``'s options; ``(kernel_size, strides)``.

  Raises:
    TypeError: for a size that is not an integer (or a tuple of one), a
      ``padding`` or ``data_format`` that is not a string, or a
      ``use_bias`` that is not a bool.
    ValueError: for a size that is not positive, a ``padding`` other than
      ``'valid'``, or an unknown ``data_format``.
  """
  check_positive_int(filters, layer, 'filters')
  kernel_size = single_positive_int(kernel_size, layer, 'kernel_size')
  strides = single_positive_int(strides, layer, 'strides')
  if not isinstance(padding, str):
    raise TypeError(
      f"{layer}: padding must be the string 'valid', got {_given(padding)}."
    )
  if padding.lower() != 'valid':
    raise ValueError(
      f"{layer}: padding must be 'valid' (no padding), the only padding of"
      " Keras 2's LocallyConnected1D with its default implementation=1,"
      f' whose weight layout this layer uses; got {padding!r}.'
    )
  check_data_format(data_format, layer)
  check_bool(use_bias, layer, 'use_bias')
  return kernel_size, strides


def _steps_layout(data_format: str) -> str:
  if data_format == 'channels_last':
    return '(..., steps, features)'
  return '(..., features, steps)'


def locally_connected_1d_kernel_shape(
  inputs_shape: tuple[int, ...],
  filters: int,
  kernel_size: int,
  strides: int,
  data_format: str,
  built_shape: tuple[int, ...] | None,
  layer: str = 'LocallyConnected1D',
) -> tuple[int, int, int]:
  """The ``(L_out, kernel_size * D, filters)`` kernel that inputs need.

  Args:
    inputs_shape: ``(..., L, D)``, or ``(..., D, L)`` for
      ``'channels_first'``.
    filters: output features per step.
    kernel_size: steps per window, checked.
    strides: steps between windows, checked.
    data_format: ``'channels_last'`` or ``'channels_first'``, checked.
    built_shape: the shape the kernel was built with, or ``None``.
    layer: the name in the messages.

  Returns:
    ``(L_out, kernel_size * D, filters)``, ``L_out`` Keras's output length.
  """
  layout = _steps_layout(data_format)
  if len(inputs_shape) < 2:
    raise ValueError(
      f'{layer}: inputs must have shape {layout} with rank >= 2, got shape'
      f' {tuple(inputs_shape)}.'
    )
  input_length, in_features = inputs_shape[-2:]
  if data_format == 'channels_first':
    input_length, in_features = in_features, input_length
  check_nonempty_axes(layer, inputs_shape, {'features': in_features})
  length = valid_output_length(input_length, kernel_size, strides)
  if length < 1:
    raise ValueError(
      f'{layer}: {input_length} input steps are fewer than'
      f' kernel_size={kernel_size}, so no window fits'
      f' (output length (steps - kernel_size) // strides + 1 = {length});'
      f' inputs must be {layout} with at least kernel_size steps.'
    )
  kernel_shape = (length, kernel_size * in_features, filters)
  if built_shape is not None and tuple(built_shape) != kernel_shape:
    raise ValueError(
      f'{layer}: inputs of shape {tuple(inputs_shape)} have {input_length}'
      f' steps of {in_features} features and need a kernel of shape'
      f' {kernel_shape} (output_length, kernel_size * features, filters)'
      f' with kernel_size={kernel_size}, strides={strides}, but the kernel'
      f' was built with shape {tuple(built_shape)}; inputs must be {layout}'
      ' with the steps and features the layer was built for.'
    )
  return kernel_shape
