"""Dropout and SpatialDropout1D/2D/3D: Keras 3 parity, statistics, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd
from flax_dense.functional import dropout

keras = pytest.importorskip('keras')


def keras_dropout(x, rate, noise_shape, key):
  """Keras 3's own dropout (what its layers call) with a given JAX key."""
  with jax.numpy_rank_promotion('allow'):
    return np.asarray(keras.random.dropout(x, rate, noise_shape, seed=key))


def ones(shape):
  return jnp.ones(shape, jnp.float32)


def normal(shape):
  # NumPy, not jax.random: JAX would compile a sampler for every shape. A JAX
  # array, so that Keras divides by 1 - rate in JAX as we do, not in NumPy.
  return jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)


@pytest.mark.parametrize('rate', [0.0, 0.3, 0.5, 0.99])
@pytest.mark.parametrize(
  'shape,noise_shape',
  [
    # Shapes shared with the tests below: JAX compiles a draw per shape.
    ((4, 8), None),
    ((2, 6, 5), (None, 1, None)),
    ((2, 6, 5), (2, 1, 5)),
    ((50, 6, 40, 3), (None, 1, None, 1)),
  ],
)
def test_dropout_draws_exactly_as_keras(rate, shape, noise_shape, key):
  x = normal(shape)
  dropout_key = jax.random.key(7)
  expected = keras_dropout(x, rate, noise_shape, dropout_key)
  layer = fd.Dropout(rate, noise_shape=noise_shape)
  np.testing.assert_array_equal(
    layer.apply({}, x, deterministic=False, rng=dropout_key), expected
  )
  concrete = noise_shape and tuple(
    s if n is None else n for s, n in zip(shape, noise_shape, strict=True)
  )
  np.testing.assert_array_equal(
    dropout(x, rate, dropout_key, concrete), expected
  )


@pytest.mark.parametrize(
  'layer_class,keras_class,shape,data_format',
  [
    ('SpatialDropout1D', 'SpatialDropout1D', (40, 9, 50), 'channels_last'),
    ('SpatialDropout2D', 'SpatialDropout2D', (2, 4, 5, 3), 'channels_last'),
    ('SpatialDropout2D', 'SpatialDropout2D', (40, 50, 3, 4), 'channels_first'),
    (
      'SpatialDropout3D',
      'SpatialDropout3D',
      (40, 2, 3, 2, 50),
      'channels_last',
    ),
    ('SpatialDropout3D', 'SpatialDropout3D', (2, 5, 3, 2, 4), 'channels_first'),
  ],
)
def test_spatial_dropout_has_keras_noise_shape(
  layer_class, keras_class, shape, data_format, key
):
  x = normal(shape)
  kwargs = (
    {} if keras_class == 'SpatialDropout1D' else {'data_format': data_format}
  )
  keras_layer = getattr(keras.layers, keras_class)(0.5, **kwargs)
  noise_shape = keras_layer._get_noise_shape(x)
  dropout_key = jax.random.key(3)
  layer = getattr(fd, layer_class)(0.5, data_format=data_format)
  np.testing.assert_array_equal(
    layer.apply({}, x, deterministic=False, rng=dropout_key),
    keras_dropout(x, 0.5, noise_shape, dropout_key),
  )


def test_keras_layers_are_identity_at_inference_like_ours(key):
  x = normal((2, 3, 4))
  for ours, theirs in [
    (fd.Dropout(0.5), keras.layers.Dropout(0.5)),
    (fd.SpatialDropout1D(0.5), keras.layers.SpatialDropout1D(0.5)),
  ]:
    np.testing.assert_array_equal(
      ours.apply({}, x, deterministic=True), theirs(x, training=False)
    )


@pytest.mark.parametrize('rate', [0.1, 0.5, 0.9])
def test_drop_fraction_and_scaling(rate, key):
  size = 40_000
  y = fd.Dropout(rate, deterministic=False).apply(
    {}, ones((size,)), rngs={'dropout': key}
  )
  dropped = float(jnp.mean(y == 0))
  # Five standard deviations of the binomial fraction.
  assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / size)
  np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-6)
  assert abs(float(jnp.mean(y)) - 1.0) < 5 * np.sqrt(rate / (1 - rate) / size)


def test_noise_shape_ones_share_decisions(key):
  y = fd.Dropout(0.5, noise_shape=(None, 1, None, 1)).apply(
    {}, ones((50, 6, 40, 3)), deterministic=False, rngs={'dropout': key}
  )
  np.testing.assert_array_equal(y, jnp.broadcast_to(y[:, :1, :, :1], y.shape))
  # Decisions still differ along the axes that are not shared.
  decisions = y[:, 0, :, 0] != 0
  assert 0.4 < float(jnp.mean(decisions)) < 0.6
  assert not bool(jnp.all(decisions == decisions[:1]))


@pytest.mark.parametrize(
  'layer,shape,spatial_axes',
  [
    (fd.SpatialDropout1D(0.3), (40, 9, 50), (1,)),
    (fd.SpatialDropout2D(0.3, 'channels_first'), (40, 50, 3, 4), (2, 3)),
    (fd.SpatialDropout3D(0.3), (40, 2, 3, 2, 50), (1, 2, 3)),
  ],
)
def test_spatial_dropout_drops_whole_feature_maps(
  layer, shape, spatial_axes, key
):
  y = layer.apply({}, ones(shape), deterministic=False, rngs={'dropout': key})
  maps_dropped = jnp.all(y == 0, axis=spatial_axes)
  maps_kept = jnp.all(y == 1 / 0.7, axis=spatial_axes)
  assert bool(jnp.all(maps_dropped | maps_kept))
  assert abs(float(jnp.mean(maps_dropped)) - 0.3) < 5 * np.sqrt(0.21 / 2000)


def test_fixed_key_is_deterministic_and_keys_differ(key):
  layer = fd.Dropout(0.5, deterministic=False)
  x = ones((4, 8))
  first = layer.apply({}, x, rngs={'dropout': key})
  np.testing.assert_array_equal(
    first, layer.apply({}, x, rngs={'dropout': key})
  )
  other = layer.apply({}, x, rngs={'dropout': jax.random.key(1)})
  assert not bool(jnp.all(first == other))


def test_identity_when_deterministic_or_rate_zero_without_rng(key):
  x = normal((3, 4))
  # No 'dropout' rng is given: none must be asked for.
  np.testing.assert_array_equal(
    fd.Dropout(0.5).apply({}, x, deterministic=True), x
  )
  np.testing.assert_array_equal(
    fd.Dropout(0.5, deterministic=True).apply({}, x), x
  )
  np.testing.assert_array_equal(
    fd.Dropout(0.0).apply({}, x, deterministic=False), x
  )


@pytest.mark.parametrize(
  'drop',
  [
    lambda x, key: fd.Dropout(1.0, deterministic=False).apply(
      {}, x, rngs={'dropout': key}
    ),
    lambda x, key: dropout(x, 1.0, key),
    lambda x, key: fd.nnx.Dropout(1.0, rngs=nnx.Rngs(0))(x),
  ],
)
def test_rate_one_is_refused_everywhere(drop, key):
  # A rate of 1 keeps nothing: there is no 1 / (1 - rate) to rescale by.
  with pytest.raises(ValueError, match=r'rate must be a float in \[0, 1\)'):
    drop(normal((3, 4)), key)


def test_rate_just_below_one_keeps_a_few_scaled_entries(key):
  x = jnp.ones((100, 100))
  y = fd.Dropout(0.99, deterministic=False).apply({}, x, rngs={'dropout': key})
  kept = np.asarray(y)[np.asarray(y) != 0]
  assert 0 < kept.size < 300
  np.testing.assert_allclose(kept, 100.0, rtol=1e-4)


def test_keeps_dtype(key):
  x = jnp.ones((4, 8), jnp.bfloat16)
  y = fd.Dropout(0.5).apply({}, x, deterministic=False, rngs={'dropout': key})
  assert y.dtype == jnp.bfloat16
  assert set(np.asarray(y, np.float32).ravel().tolist()) <= {0.0, 2.0}


class Net(nn.Module):
  @nn.compact
  def __call__(self, x, deterministic):
    x = fd.SpatialDropout1D(0.5)(x, deterministic)
    return fd.Dropout(0.25, noise_shape=(None, 1, None))(x, deterministic)


def test_jit_vmap_grad_and_summary(key):
  x = normal((2, 6, 5))
  net = Net()
  variables = net.init(key, x, True)
  rngs = {'dropout': jax.random.key(5)}

  def apply(variables, x):
    return net.apply(variables, x, False, rngs=rngs)

  y = apply(variables, x)
  np.testing.assert_allclose(jax.jit(apply)(variables, x), y, rtol=1e-6)
  # The gradient of a dropped entry is zero, of a kept one 1 / keep_prob.
  grads = jax.grad(lambda x: dropout(x, 0.5, key, (2, 1, 5)).sum())(x)
  kept = dropout(jnp.ones_like(x), 0.5, key, (2, 1, 5))
  np.testing.assert_array_equal(grads, kept)
  mapped = jax.vmap(lambda k: dropout(x, 0.5, k))(jax.random.split(key, 3))
  assert mapped.shape == (3, *x.shape)
  assert not bool(jnp.all(mapped[0] == mapped[1]))
  info = fd.summary(net, x, deterministic=False)
  assert [(row.type, row.output_shape) for row in info.rows[-2:]] == [
    ('SpatialDropout1D', (2, 6, 5)),
    ('Dropout', (2, 6, 5)),
  ]


@pytest.mark.parametrize(
  'layer,shape,match',
  [
    (
      fd.Dropout(-0.1),
      (2,),
      r'Dropout: rate must be a float in \[0, 1\).*-0.1',
    ),
    (fd.Dropout(1.5), (2,), r'rate must be a float in \[0, 1\).*1.5'),
    (fd.Dropout('0.5'), (2,), r"rate must be a float in \[0, 1\).*'0.5'"),
    (fd.Dropout(float('nan')), (2,), r'rate must be a float in \[0, 1\)'),
    (
      fd.Dropout(0.5, noise_shape=(None, 1)),
      (2, 3, 4),
      r'noise_shape \(None, 1\) must have one entry per input axis .*'
      r'shape \(2, 3, 4\)',
    ),
    (
      fd.Dropout(0.5, noise_shape=(None, 2)),
      (2, 3),
      r'noise_shape\[1\] must be None, 1 or the input size 3, got 2',
    ),
    (fd.Dropout(0.5, noise_shape='ab'), (2, 3), r'noise_shape must be None or'),
    (
      fd.SpatialDropout1D(0.5),
      (2, 3),
      r'SpatialDropout1D: inputs must be \(batch, dim1, channels\) \(rank 3\),'
      r' got shape \(2, 3\)',
    ),
    (
      fd.SpatialDropout2D(0.5, data_format='channels_first'),
      (2, 3, 4),
      r'SpatialDropout2D: inputs must be \(batch, channels, dim1, dim2\)',
    ),
    (fd.SpatialDropout3D(0.5), (2, 3, 4, 5), r'SpatialDropout3D: inputs must'),
    (
      fd.SpatialDropout2D(0.5, data_format='NCHW'),
      (2, 3, 4, 5),
      r"SpatialDropout2D: data_format must be one of .*'NCHW'",
    ),
    (fd.SpatialDropout2D(2.0), (2, 3, 4, 5), r'SpatialDropout2D: rate must'),
  ],
)
def test_errors(layer, shape, match):
  # A wrong type is a TypeError, a bad value of the right type a ValueError.
  wrong_type = "'0.5'" in match or 'noise_shape must be None or' in match
  with pytest.raises(TypeError if wrong_type else ValueError, match=match):
    layer.apply({}, ones(shape), deterministic=True)


def test_deterministic_given_never_or_twice_is_an_error():
  with pytest.raises(ValueError, match=r'Dropout: deterministic must be given'):
    fd.Dropout(0.5).apply({}, ones((2,)))
  with pytest.raises(ValueError, match=r'got True on the layer and False'):
    fd.Dropout(0.5, deterministic=True).apply({}, ones((2,)), False)


# Keras 3 on JAX fails deep inside lax.select on integer or boolean inputs
# in training (and passes them through in inference): ours is a TypeError
# naming the layer, in both modes, before any draw.
NOT_FLOATS = [jnp.int32, jnp.uint8, jnp.bool_]
DROPOUT_INPUTS = {
  'Dropout': (2, 6, 5),
  'SpatialDropout1D': (2, 6, 5),
  'SpatialDropout2D': (2, 4, 4, 3),
  'SpatialDropout3D': (2, 3, 3, 3, 2),
}


@pytest.mark.parametrize('dtype', NOT_FLOATS)
@pytest.mark.parametrize('deterministic', [False, True])
@pytest.mark.parametrize('name', DROPOUT_INPUTS)
def test_integer_or_boolean_inputs_are_a_type_error(
  name, deterministic, dtype, key
):
  x = jnp.ones(DROPOUT_INPUTS[name], dtype)
  pattern = rf'{name}: inputs must be a floating-point .* got dtype {x.dtype}'
  with pytest.raises(TypeError, match=pattern):
    getattr(fd, name)(0.5).apply(
      {}, x, deterministic=deterministic, rngs={'dropout': key}
    )
  layer = getattr(fd.nnx, name)(
    0.5, deterministic=deterministic, rngs=nnx.Rngs(0)
  )
  with pytest.raises(TypeError, match=pattern):
    layer(x)


@pytest.mark.parametrize('dtype', NOT_FLOATS)
@pytest.mark.parametrize('rate', [0.0, 0.5])
def test_functional_dropout_of_integers_is_a_type_error(rate, dtype, key):
  x = jnp.ones((4, 8), dtype)
  with pytest.raises(TypeError, match=rf'dropout: inputs .* dtype {x.dtype}'):
    dropout(x, rate, key)


@pytest.mark.parametrize('dtype', [jnp.float16, jnp.bfloat16, jnp.complex64])
def test_floating_and_complex_inputs_are_dropped(dtype, key):
  x = jnp.ones((4, 8), dtype)
  y = dropout(x, 0.5, key)
  assert y.dtype == dtype
  np.testing.assert_array_equal(
    np.asarray(y), np.where(np.asarray(y) != 0, 2, 0).astype(x.dtype)
  )
