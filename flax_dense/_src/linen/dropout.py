"""Keras dropout layers for linen: elementwise and whole feature maps."""

from collections.abc import Sequence
from typing import ClassVar

import flax.linen as nn
import jax

from flax_dense._src import validate
from flax_dense._src.linen.common import freeze_lists
from flax_dense._src.ops.dropout import (
  dropout,
  dropout_inputs,
  resolve_noise_shape,
  spatial_noise_shape,
)


def _drop(
  module: nn.Module,
  inputs: jax.Array,
  noise_shape: tuple[int, ...],
  deterministic: bool | None,
  rng: jax.Array | None,
) -> jax.Array:
  """The dropout of ``module``, honouring its ``deterministic`` and rng."""
  layer = type(module).__name__
  for given in (module.deterministic, deterministic):
    if given is not None:
      validate.check_bool(given, layer, 'deterministic')
  validate.check_str(module.rng_collection, layer, 'rng_collection')
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
  if rng is None and module.rate > 0.0:
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
    rate: fraction of the inputs to drop, a float in [0, 1).
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

  def __post_init__(self):
    freeze_lists(self, 'noise_shape')
    super().__post_init__()

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
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
      TypeError: if ``rate`` is not a real number, ``noise_shape`` not a
        tuple of integers or ``None``, ``deterministic`` not a bool, or the
        inputs are integers or booleans (in either mode).
      ValueError: if ``rate`` is outside [0, 1), ``noise_shape`` does not
        fit the inputs, or ``deterministic`` is given twice or never.
    """
    validate.check_rate(self.rate, 'Dropout')
    inputs = dropout_inputs(inputs, 'Dropout')
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
    inputs: jax.typing.ArrayLike,
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
      TypeError: if ``rate`` is not a real number, ``data_format`` not a
        string, ``deterministic`` not a bool, or the inputs are integers or
        booleans (in either mode).
      ValueError: if ``rate`` is outside [0, 1), ``data_format`` is unknown,
        the inputs do not have rank ``spatial_ndim + 2``, or
        ``deterministic`` is given twice or never.
    """
    layer = type(self).__name__
    validate.check_rate(self.rate, layer)
    inputs = dropout_inputs(inputs, layer)
    noise_shape = spatial_noise_shape(
      inputs.shape, self.spatial_ndim, self.data_format, layer
    )
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
    rate: fraction of the feature maps to drop, a float in [0, 1).
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
    rate: fraction of the feature maps to drop, a float in [0, 1).
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
    rate: fraction of the feature maps to drop, a float in [0, 1).
    data_format: ``'channels_last'`` for ``(B, D1, D2, D3, C)`` inputs or
      ``'channels_first'`` for ``(B, C, D1, D2, D3)``.
    deterministic: if true the layer is the identity; give it here or when
      calling the layer.
    rng_collection: the rng stream of the drop decisions.
  """

  spatial_ndim = 3
