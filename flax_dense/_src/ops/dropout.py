"""Dropout, elementwise and of whole feature maps: draws and noise shapes."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from flax_dense._src import validate


def dropout(
  inputs: jax.Array,
  rate: float,
  key: jax.Array | None,
  noise_shape: Sequence[int] | None = None,
) -> jax.Array:
  """Zeroes entries with probability ``rate`` and scales the rest up.

  Kept entries are divided by ``1 - rate`` so that the expected value is
  unchanged (inverted dropout). Draws exactly as Keras 3's JAX backend
  (``keras.random.dropout``) and ``flax.linen.Dropout`` do, so the same key
  drops the same entries. Unlike the other pure functions it needs no batch
  axis removed: the batch axis is one axis of ``inputs`` like any other.

  Args:
    inputs: any shape ``S``.
    rate: fraction of entries to drop, a Python (or NumPy) float in
      [0, 1); ``0`` is the identity. It is static: a traced rate is
      refused.
    key: PRNG key of the drop decisions; may be ``None`` only when
      ``rate`` is 0.
    noise_shape: shape of the drop decisions, broadcast to ``S``: an axis of
      size 1 shares one decision along it; default ``S``.

  Returns:
    ``S``, the dtype of ``inputs``.

  Raises:
    TypeError: if ``rate`` is not a real number, ``noise_shape`` not a
      tuple of integers, or ``inputs`` are integers or booleans (whatever
      the rate).
    ValueError: if ``rate`` is outside [0, 1), ``key`` is ``None`` for a
      positive rate, or ``noise_shape`` does not broadcast to ``S``.
  """
  rate = validate.check_rate(rate, 'dropout')
  inputs = dropout_inputs(inputs, 'dropout')
  if rate == 0.0:
    return inputs
  if key is None:
    raise ValueError(
      f'dropout: key must be a PRNG key (jax.random.key) for rate {rate},'
      ' got None.'
    )
  keep_prob = 1.0 - rate
  shape = inputs.shape
  if noise_shape is not None:
    shape = validate.check_shape(noise_shape, 'dropout', 'noise_shape')
    try:
      fits = jnp.broadcast_shapes(shape, inputs.shape) == inputs.shape
    except ValueError:
      fits = False
    if not fits:
      raise ValueError(
        f'dropout: noise_shape {shape} must broadcast to the shape of the'
        f' inputs {inputs.shape}.'
      )
  keep = jax.random.bernoulli(key, p=keep_prob, shape=shape)
  keep = jnp.broadcast_to(keep, inputs.shape)
  return jax.lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))


def dropout_inputs(inputs: jax.typing.ArrayLike, layer: str) -> jax.Array:
  """``inputs`` as an array of floats (or complex numbers), checked.

  Keras 3 fails deep inside ``lax.select`` on integer or boolean inputs in
  training and passes them through in inference. They are refused here in
  both modes, so that a model does not work in evaluation only to fail once
  training starts.

  Raises:
    TypeError: if ``inputs`` hold integers or booleans.
  """
  inputs = jnp.asarray(inputs)
  validate.check_inexact(
    inputs,
    layer,
    'inputs',
    'dropout scales the kept entries by 1 / (1 - rate), which integers and'
    ' booleans cannot hold',
  )
  return inputs


def resolve_noise_shape(
  noise_shape: Sequence[int | None] | None,
  input_shape: tuple[int, ...],
  layer: str,
) -> tuple[int, ...]:
  """Keras's ``noise_shape`` made concrete for inputs of ``input_shape``.

  Args:
    noise_shape: ``None`` or one entry per input axis, batch axis included:
      ``None`` takes the input's size, ``1`` shares the drop decision along
      that axis, any other integer must equal the input's size.
    input_shape: shape of the inputs.
    layer: name of the calling layer, used in error messages.

  Returns:
    The shape of the drop decisions.

  Raises:
    TypeError: if ``noise_shape`` is not a tuple or list of integers or
      ``None``.
    ValueError: if it does not have one entry per input axis, or an entry
      is neither ``None``, ``1`` nor the input's size.
  """
  if noise_shape is None:
    return input_shape
  if not isinstance(noise_shape, tuple | list) or not all(
    entry is None or validate.is_int(entry) for entry in noise_shape
  ):
    raise TypeError(
      f'{layer}: noise_shape must be None or a tuple of integers or None,'
      f' got {noise_shape!r} of type {type(noise_shape).__name__}.'
    )
  if len(noise_shape) != len(input_shape):
    raise ValueError(
      f'{layer}: noise_shape {tuple(noise_shape)} must have one entry per'
      f' input axis (batch axis included), but inputs have shape'
      f' {input_shape}.'
    )
  resolved = []
  for axis, (entry, size) in enumerate(
    zip(noise_shape, input_shape, strict=True)
  ):
    # A None entry takes the size as is, which may be symbolic.
    if entry is None:
      resolved.append(size)
      continue
    if entry != 1 and entry != size:
      raise ValueError(
        f'{layer}: noise_shape[{axis}] must be None, 1 or the input size'
        f' {size}, got {entry!r} (noise_shape {tuple(noise_shape)}, inputs'
        f' of shape {input_shape}).'
      )
    resolved.append(int(entry))
  return tuple(resolved)


def spatial_noise_shape(
  input_shape: tuple[int, ...],
  spatial_ndim: int,
  data_format: str,
  layer: str,
) -> tuple[int, ...]:
  """The noise shape of Keras's ``SpatialDropout{1,2,3}D``, checked.

  One drop decision per example and channel: the noise shape is 1 along
  every spatial axis.

  Args:
    input_shape: ``(B, *spatial, C)`` or ``(B, C, *spatial)``.
    spatial_ndim: the number of spatial axes (1, 2 or 3).
    data_format: ``'channels_last'`` or ``'channels_first'``.
    layer: name of the calling layer, used in error messages.

  Returns:
    ``(B, 1, ..., 1, C)`` or ``(B, C, 1, ..., 1)``.
  """
  validate.check_data_format(data_format, layer)
  spatial = ', '.join(f'dim{i + 1}' for i in range(spatial_ndim))
  channels_last = data_format == 'channels_last'
  layout = (
    f'(batch, {spatial}, channels)'
    if channels_last
    else f'(batch, channels, {spatial})'
  )
  if len(input_shape) != spatial_ndim + 2:
    raise ValueError(
      f'{layer}: inputs must be {layout} (rank {spatial_ndim + 2}), got shape'
      f' {input_shape}.'
    )
  batch, ones = input_shape[0], (1,) * spatial_ndim
  if channels_last:
    return (batch, *ones, input_shape[-1])
  return (batch, input_shape[1], *ones)
