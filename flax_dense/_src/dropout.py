"""Keras dropout layers: elementwise and whole feature maps."""

import numbers
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_dense._src.core import check_data_format, check_rank


def dropout(
  inputs: jax.Array,
  rate: float,
  key: jax.Array,
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
    rate: fraction of entries to drop, a Python float in [0, 1]; ``0`` is
      the identity and ``1`` gives zeros (no ``0 / 0``).
    key: PRNG key of the drop decisions.
    noise_shape: shape of the drop decisions, broadcast to ``S``: an axis of
      size 1 shares one decision along it; default ``S``.

  Returns:
    ``S``, the dtype of ``inputs``.
  """
  if rate == 0.0:
    return inputs
  if rate == 1.0:
    return jnp.zeros_like(inputs)
  keep_prob = 1.0 - rate
  shape = inputs.shape if noise_shape is None else tuple(noise_shape)
  keep = jax.random.bernoulli(key, p=keep_prob, shape=shape)
  keep = jnp.broadcast_to(keep, inputs.shape)
  return jax.lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))


def _check_rate(rate: Any, layer: str) -> None:
  if (
    isinstance(rate, bool)
    or not isinstance(rate, numbers.Real)
    or not 0 <= rate <= 1
  ):
    raise ValueError(
      f'{layer}: rate must be a float in [0, 1] (the fraction of inputs to'
      f' drop), got {rate!r}.'
    )


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
    ValueError: if ``noise_shape`` is not a sequence with one entry per
      input axis, or an entry is neither ``None``, ``1`` nor the input's
      size.
  """
  if noise_shape is None:
    return input_shape
  if isinstance(noise_shape, str) or not isinstance(noise_shape, Sequence):
    raise ValueError(
      f'{layer}: noise_shape must be None or a tuple of integers or None,'
      f' got {noise_shape!r}.'
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
    if entry is None:
      entry = size
    if isinstance(entry, bool) or entry not in (1, size):
      raise ValueError(
        f'{layer}: noise_shape[{axis}] must be None, 1 or the input size'
        f' {size}, got {entry!r} (noise_shape {tuple(noise_shape)}, inputs'
        f' of shape {input_shape}).'
      )
    resolved.append(int(entry))
  return tuple(resolved)


def _drop(
  module: nn.Module,
  inputs: jax.Array,
  noise_shape: tuple[int, ...],
  deterministic: bool | None,
  rng: jax.Array | None,
) -> jax.Array:
  """The dropout of ``module``, honouring its ``deterministic`` and rng."""
  layer = type(module).__name__
  if (module.deterministic is None) == (deterministic is None):
    raise ValueError(
      f'{layer}: deterministic must be given exactly once, as a field'
      f' ({layer}(..., deterministic=...)) or when calling the layer; got'
      f' {module.deterministic!r} on the layer and {deterministic!r} in the'
      ' call.'
    )
  deterministic = nn.merge_param(
    'deterministic', module.deterministic, deterministic
  )
  if deterministic:
    return inputs
  if rng is None and 0.0 < module.rate < 1.0:
    rng = module.make_rng(module.rng_collection)
  return dropout(inputs, module.rate, rng, noise_shape)


class Dropout(nn.Module):
  """Randomly zeroes inputs during training, as Keras ``Dropout`` does.

  Each entry is dropped with probability ``rate`` and the kept ones are
  scaled by ``1 / (1 - rate)``; when ``deterministic`` (inference) the layer
  is the identity. Randomness comes from the ``dropout`` rng stream, as for
  ``flax.linen.Dropout``. ``noise_shape`` has Keras's meaning: one entry per
  input axis, ``None`` for the input's size, ``1`` to share the decision
  along that axis (the ``broadcast_dims`` of ``flax.linen.Dropout``).

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> layer = fd.Dropout(0.5, noise_shape=(None, 1, None))
    >>> x = jnp.ones((2, 3, 4))
    >>> y = layer.apply({}, x, deterministic=False,
    ...                 rngs={'dropout': jax.random.key(0)})
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 2.0]
    >>> bool((y == y[:, :1]).all())  # one decision along axis 1
    True
    >>> bool((layer.apply({}, x, deterministic=True) == x).all())
    True

  Attributes:
    rate: fraction of the inputs to drop, a float in [0, 1].
    noise_shape: ``None`` or the shape of the drop decisions, one entry per
      input axis (batch included), each ``None``, ``1`` or the input's size.
    deterministic: if true the layer is the identity; give it here or when
      calling the layer.
    rng_collection: the rng stream of the drop decisions.
  """

  rate: float
  noise_shape: Sequence[int | None] | None = None
  deterministic: bool | None = None
  rng_collection: str = 'dropout'

  def __call__(
    self,
    inputs: Any,
    deterministic: bool | None = None,
    rng: jax.Array | None = None,
  ) -> jax.Array:
    """Applies dropout.

    Args:
      inputs: any shape.
      deterministic: if true the layer is the identity; give it here when
        the field is ``None``.
      rng: a key to use instead of one from the ``rng_collection`` stream.

    Returns:
      The inputs with dropped entries zeroed and the others scaled, same
      shape and dtype.

    Raises:
      ValueError: if ``rate`` is outside [0, 1], ``noise_shape`` does not
        fit the inputs, or ``deterministic`` is given twice or never.
    """
    _check_rate(self.rate, 'Dropout')
    inputs = jnp.asarray(inputs)
    noise_shape = resolve_noise_shape(self.noise_shape, inputs.shape, 'Dropout')
    return _drop(self, inputs, noise_shape, deterministic, rng)


class _SpatialDropout(nn.Module):
  """Dropout of whole feature maps: one decision per example and channel."""

  rate: float
  data_format: str = 'channels_last'
  deterministic: bool | None = None
  rng_collection: str = 'dropout'

  spatial_ndim: ClassVar[int]

  def __call__(
    self,
    inputs: Any,
    deterministic: bool | None = None,
    rng: jax.Array | None = None,
  ) -> jax.Array:
    """Applies dropout to whole feature maps.

    Args:
      inputs: ``(B, *spatial, C)`` for ``'channels_last'`` or
        ``(B, C, *spatial)`` for ``'channels_first'``.
      deterministic: if true the layer is the identity; give it here when
        the field is ``None``.
      rng: a key to use instead of one from the ``rng_collection`` stream.

    Returns:
      The inputs with dropped feature maps zeroed and the others scaled.

    Raises:
      ValueError: if ``rate`` is outside [0, 1], ``data_format`` is unknown,
        the inputs do not have rank ``spatial_ndim + 2``, or
        ``deterministic`` is given twice or never.
    """
    layer = type(self).__name__
    _check_rate(self.rate, layer)
    check_data_format(self.data_format, layer)
    inputs = jnp.asarray(inputs)
    spatial = ', '.join(f'dim{i + 1}' for i in range(self.spatial_ndim))
    layout = (
      f'(batch, {spatial}, channels)'
      if self.data_format == 'channels_last'
      else f'(batch, channels, {spatial})'
    )
    check_rank(inputs, self.spatial_ndim + 2, layout, layer)
    batch, ones = inputs.shape[0], (1,) * self.spatial_ndim
    if self.data_format == 'channels_last':
      noise_shape = (batch, *ones, inputs.shape[-1])
    else:
      noise_shape = (batch, inputs.shape[1], *ones)
    return _drop(self, inputs, noise_shape, deterministic, rng)


class SpatialDropout1D(_SpatialDropout):
  """Drops whole 1D feature maps, as Keras ``SpatialDropout1D`` does.

  Each channel of each example is kept or dropped for all timesteps at once
  (the noise shape is 1 along the timesteps); kept ones are scaled by
  ``1 / (1 - rate)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> y = fd.SpatialDropout1D(0.5).apply(
    ...     {}, jnp.ones((2, 5, 3)), deterministic=False,
    ...     rngs={'dropout': jax.random.key(0)})
    >>> bool((y == y[:, :1, :]).all())
    True

  Attributes:
    rate: fraction of the feature maps to drop, a float in [0, 1].
    data_format: ``'channels_last'`` for ``(B, T, C)`` inputs (Keras's only
      layout for this layer) or ``'channels_first'`` for ``(B, C, T)``.
    deterministic: if true the layer is the identity; give it here or when
      calling the layer.
    rng_collection: the rng stream of the drop decisions.
  """

  spatial_ndim = 1


class SpatialDropout2D(_SpatialDropout):
  """Drops whole 2D feature maps, as Keras ``SpatialDropout2D`` does.

  Each channel of each example is kept or dropped for all rows and columns
  at once; kept ones are scaled by ``1 / (1 - rate)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> y = fd.SpatialDropout2D(0.5, data_format='channels_first').apply(
    ...     {}, jnp.ones((2, 3, 4, 4)), deterministic=False,
    ...     rngs={'dropout': jax.random.key(0)})
    >>> bool((y == y[:, :, :1, :1]).all())
    True

  Attributes:
    rate: fraction of the feature maps to drop, a float in [0, 1].
    data_format: ``'channels_last'`` for ``(B, H, W, C)`` inputs or
      ``'channels_first'`` for ``(B, C, H, W)``.
    deterministic: if true the layer is the identity; give it here or when
      calling the layer.
    rng_collection: the rng stream of the drop decisions.
  """

  spatial_ndim = 2


class SpatialDropout3D(_SpatialDropout):
  """Drops whole 3D feature maps, as Keras ``SpatialDropout3D`` does.

  Each channel of each example is kept or dropped for the whole volume at
  once; kept ones are scaled by ``1 / (1 - rate)``.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp
    >>> y = fd.SpatialDropout3D(0.5).apply(
    ...     {}, jnp.ones((2, 3, 3, 3, 4)), deterministic=False,
    ...     rngs={'dropout': jax.random.key(0)})
    >>> bool((y == y[:, :1, :1, :1, :]).all())
    True

  Attributes:
    rate: fraction of the feature maps to drop, a float in [0, 1].
    data_format: ``'channels_last'`` for ``(B, D1, D2, D3, C)`` inputs or
      ``'channels_first'`` for ``(B, C, D1, D2, D3)``.
    deterministic: if true the layer is the identity; give it here or when
      calling the layer.
    rng_collection: the rng stream of the drop decisions.
  """

  spatial_ndim = 3
