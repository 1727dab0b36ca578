"""Keras dropout layers for NNX: elementwise and whole feature maps."""

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
from flax import nnx

from flax_dense._src import validate
from flax_dense._src.ops.dropout import (
  dropout,
  dropout_inputs,
  resolve_noise_shape,
  spatial_noise_shape,
)


def _stream(rngs: Any, rng_collection: str, layer: str) -> Any:
  """The layer's own rng stream, forked from ``rngs`` as ``nnx.Dropout`` does."""
  if isinstance(rngs, nnx.Rngs):
    return rngs[rng_collection].fork()
  if isinstance(rngs, nnx.RngStream):
    return rngs.fork()
  if rngs is None:
    return nnx.data(None)
  raise TypeError(
    f'{layer}: rngs must be an nnx.Rngs, an nnx.RngStream or None, got'
    f' {rngs!r}.'
  )


def dropout_key(
  rngs: Any, stream: Any, rng_collection: str, layer: str
) -> jax.Array:
  """The key of one dropout draw: from this call's ``rngs`` (an
  ``nnx.Rngs``, a stream or a key), else from the layer's own ``stream``.

  Raises:
    TypeError: if the call's ``rngs`` is none of these.
    ValueError: if neither gives a key.
  """
  if rngs is not None and not isinstance(
    rngs, nnx.Rngs | nnx.RngStream | jax.Array
  ):
    raise TypeError(
      f'{layer}: rngs must be an nnx.Rngs, an nnx.RngStream or a key, got'
      f' {validate.describe_given(rngs)}.'
    )
  rngs = stream if rngs is None else rngs
  if isinstance(rngs, nnx.Rngs):
    return rngs[rng_collection]()
  if isinstance(rngs, nnx.RngStream):
    return rngs()
  if isinstance(rngs, jax.Array):
    return rngs
  raise ValueError(
    f'{layer}: dropout needs random keys: pass rngs=nnx.Rngs(...) when'
    ' building the layer or when calling it (a key works too), or turn'
    ' it off with model.eval() / deterministic=True.'
  )


class _DropoutBase(nnx.Module):
  """What the dropouts share: ``deterministic``, the rng stream, the draw."""

  def __init__(self, rate, deterministic, rng_collection, rngs):
    layer = type(self).__name__
    rate = validate.check_rate(rate, layer)
    deterministic = validate.check_bool(deterministic, layer, 'deterministic')
    validate.check_str(rng_collection, layer, 'rng_collection')
    self.rate = rate
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    self.rngs = _stream(rngs, rng_collection, layer)

  def _drop(
    self,
    inputs: jax.Array,
    noise_shape: tuple[int, ...],
    deterministic: bool | None,
    rngs: Any,
  ) -> jax.Array:
    layer = type(self).__name__
    if deterministic is None:
      deterministic = self.deterministic
    if validate.check_bool(deterministic, layer, 'deterministic'):
      return inputs
    if self.rate == 0.0:  # the identity, no draw
      return inputs
    key = dropout_key(rngs, self.rngs, self.rng_collection, layer)
    return dropout(inputs, self.rate, key, noise_shape)


class Dropout(_DropoutBase):
  """Randomly zeroes inputs during training, as Keras ``Dropout`` does.

  The NNX twin of :class:`flax_dense.Dropout`: entries are dropped with
  probability ``rate`` and the kept ones scaled by ``1 / (1 - rate)``;
  ``model.eval()`` makes it the identity, ``model.train()`` turns it back
  on. ``noise_shape`` has Keras's meaning (``None`` entries take the input's
  size, ``1`` shares the decision along that axis). The same key drops the
  same entries as the linen layer and ``keras.random.dropout``.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.Dropout(0.5, noise_shape=(None, 1, None),
    ...                        rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones((2, 3, 4)))
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 2.0]
    >>> layer.eval()
    >>> bool((layer(jnp.ones((2, 3, 4))) == 1.0).all())
    True

  Args:
    rate: fraction of the inputs to drop, a float in [0, 1).
    noise_shape: ``None`` or the shape of the drop decisions, one entry per
      input axis (batch included), each ``None``, ``1`` or the input's size.
    deterministic: if true the layer is the identity.
    rng_collection: the rng stream of the drop decisions.
    rngs: the rng streams, or ``None`` to pass them when calling.
  """

  def __init__(
    self,
    rate: float,
    *,
    noise_shape: Sequence[int | None] | None = None,
    deterministic: bool = False,
    rng_collection: str = 'dropout',
    rngs: nnx.Rngs | nnx.RngStream | None = None,
  ):
    super().__init__(rate, deterministic, rng_collection, rngs)
    # A list becomes a tuple; anything else reaches the shared check as given
    # (tuple('ab') would hide a string from it).
    if isinstance(noise_shape, list):
      noise_shape = tuple(noise_shape)
    self.noise_shape = noise_shape

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
  ) -> jax.Array:
    """Applies dropout.

    Args:
      inputs: any shape.
      deterministic: overrides the attribute for this call.
      rngs: overrides the layer's stream for this call (or a key).

    Returns:
      The inputs with dropped entries zeroed and the others scaled.

    Raises:
      TypeError: if the inputs are integers or booleans (in either mode).
    """
    inputs = dropout_inputs(inputs, 'Dropout')
    noise_shape = resolve_noise_shape(self.noise_shape, inputs.shape, 'Dropout')
    return self._drop(inputs, noise_shape, deterministic, rngs)


class _SpatialDropout(_DropoutBase):
  """Dropout of whole feature maps: one decision per example and channel."""

  spatial_ndim: ClassVar[int]

  def __init__(
    self,
    rate: float,
    *,
    data_format: str = 'channels_last',
    deterministic: bool = False,
    rng_collection: str = 'dropout',
    rngs: nnx.Rngs | nnx.RngStream | None = None,
  ):
    validate.check_data_format(data_format, type(self).__name__)
    super().__init__(rate, deterministic, rng_collection, rngs)
    self.data_format = data_format

  def __call__(
    self,
    inputs: jax.typing.ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
  ) -> jax.Array:
    """Applies dropout to whole feature maps.

    Args:
      inputs: ``(B, *spatial, C)``, or ``(B, C, *spatial)`` for
        ``'channels_first'``.
      deterministic: overrides the attribute for this call.
      rngs: overrides the layer's stream for this call (or a key).

    Returns:
      The inputs with dropped feature maps zeroed and the others scaled.

    Raises:
      TypeError: if the inputs are integers or booleans (in either mode).
    """
    inputs = dropout_inputs(inputs, type(self).__name__)
    noise_shape = spatial_noise_shape(
      inputs.shape, self.spatial_ndim, self.data_format, type(self).__name__
    )
    return self._drop(inputs, noise_shape, deterministic, rngs)


class SpatialDropout1D(_SpatialDropout):
  """Drops whole 1D feature maps, as Keras ``SpatialDropout1D`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.SpatialDropout1D(0.5, rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones((2, 5, 3)))
    >>> bool((y == y[:, :1, :]).all())
    True

  Args:
    rate: fraction of the feature maps to drop, a float in [0, 1).
    data_format: ``'channels_last'`` for ``(B, T, C)`` inputs or
      ``'channels_first'`` for ``(B, C, T)``.
    deterministic: if true the layer is the identity.
    rng_collection: the rng stream of the drop decisions.
    rngs: the rng streams, or ``None`` to pass them when calling.
  """

  spatial_ndim = 1


class SpatialDropout2D(_SpatialDropout):
  """Drops whole 2D feature maps, as Keras ``SpatialDropout2D`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.SpatialDropout2D(0.5, rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones((2, 4, 4, 3)))
    >>> bool((y == y[:, :1, :1, :]).all())
    True

  Args:
    rate: fraction of the feature maps to drop, a float in [0, 1).
    data_format: ``'channels_last'`` for ``(B, H, W, C)`` inputs or
      ``'channels_first'`` for ``(B, C, H, W)``.
    deterministic: if true the layer is the identity.
    rng_collection: the rng stream of the drop decisions.
    rngs: the rng streams, or ``None`` to pass them when calling.
  """

  spatial_ndim = 2


class SpatialDropout3D(_SpatialDropout):
  """Drops whole 3D feature maps, as Keras ``SpatialDropout3D`` does.

  Example usage::

    >>> import flax_dense as fd
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> layer = fd.nnx.SpatialDropout3D(0.5, rngs=nnx.Rngs(dropout=0))
    >>> y = layer(jnp.ones((2, 3, 3, 3, 4)))
    >>> bool((y == y[:, :1, :1, :1, :]).all())
    True

  Args:
    rate: fraction of the feature maps to drop, a float in [0, 1).
    data_format: ``'channels_last'`` for ``(B, D1, D2, D3, C)`` inputs or
      ``'channels_first'`` for ``(B, C, D1, D2, D3)``.
    deterministic: if true the layer is the identity.
    rng_collection: the rng stream of the drop decisions.
    rngs: the rng streams, or ``None`` to pass them when calling.
  """

  spatial_ndim = 3
