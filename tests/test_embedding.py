"""Embedding against Keras 3 and NumPy, for linen and NNX."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd

APIS = ('linen', 'nnx')
IDS = np.array([[3, 1, 0, 0], [9, 9, 2, 0]], np.int32)


def build(api, input_dim=10, output_dim=3, **config):
  """``(call, compute_mask, table)`` of our layer."""
  if api == 'linen':
    layer = fd.Embedding(input_dim, output_dim, **config)
    variables = layer.init(jax.random.key(0), IDS)
    return (
      lambda ids: layer.apply(variables, ids),
      layer.compute_mask,
      variables['params']['embeddings'],
    )
  layer = fd.nnx.Embedding(input_dim, output_dim, **config, rngs=nnx.Rngs(0))
  return layer, layer.compute_mask, layer.embeddings[...]


@pytest.mark.parametrize('api', APIS)
def test_lookup_and_mask_match_keras(api, keras_allowed):
  keras_layer = keras.layers.Embedding(10, 3, mask_zero=True)
  with keras_allowed():
    keras_layer.build((None, 4))
    expected = keras_layer(IDS)
    expected_mask = keras_layer.compute_mask(IDS)
  (table,) = keras_layer.get_weights()
  if api == 'linen':
    layer = fd.Embedding(10, 3, mask_zero=True)
    actual = layer.apply({'params': {'embeddings': table}}, IDS)
  else:
    layer = fd.nnx.Embedding(10, 3, mask_zero=True, rngs=nnx.Rngs(0))
    layer.embeddings[...] = table
    actual = layer(IDS)
  np.testing.assert_array_equal(actual, expected)
  np.testing.assert_array_equal(actual, table[IDS])
  np.testing.assert_array_equal(layer.compute_mask(IDS), expected_mask)


@pytest.mark.parametrize('api', APIS)
def test_default_init_is_keras_uniform_and_no_mask(api):
  _, compute_mask, table = build(api, 1000, 8)
  table = np.asarray(table)
  assert table.shape == (1000, 8) and table.dtype == np.float32
  assert table.min() >= -0.05 and table.max() < 0.05
  assert table.std() > 0.025  # uniform on [-0.05, 0.05) has std 0.029
  assert compute_mask(IDS) is None


def test_mask_feeds_a_recurrent_layer():
  embed = fd.Embedding(10, 3, mask_zero=True)
  lstm = fd.LSTM(4, return_sequences=True)
  embedded_vars = embed.init(jax.random.key(0), IDS)
  vectors = embed.apply(embedded_vars, IDS)
  mask = embed.compute_mask(IDS)
  lstm_vars = lstm.init(jax.random.key(1), vectors)
  outputs = lstm.apply(lstm_vars, vectors, mask)
  # Padded steps repeat the last kept output.
  np.testing.assert_array_equal(outputs[0, 2], outputs[0, 1])
  np.testing.assert_array_equal(outputs[0, 3], outputs[0, 1])
  np.testing.assert_array_equal(outputs[1, 3], outputs[1, 2])


def test_dtype_casts_the_outputs():
  layer = fd.Embedding(10, 3, dtype=jnp.bfloat16)
  variables = layer.init(jax.random.key(0), IDS)
  assert variables['params']['embeddings'].dtype == jnp.float32
  assert layer.apply(variables, IDS).dtype == jnp.bfloat16


def test_functional_core():
  table = np.arange(12.0).reshape(4, 3)
  np.testing.assert_array_equal(
    fd.functional.embedding(np.array([2, 0]), table), table[[2, 0]]
  )
  np.testing.assert_array_equal(
    fd.functional.embedding_mask(np.array([2, 0, 1])), [True, False, True]
  )


@pytest.mark.parametrize('api', APIS)
def test_out_of_range_ids(api):
  call, compute_mask, _ = build(api)
  for bad, shown in ((np.array([[1, 10]]), 10), (np.array([[-1, 2]]), -1)):
    with pytest.raises(
      ValueError,
      match=rf'Embedding: inputs must be ids in \[0, 10\) \(input_dim=10\),'
      rf' got {shown}\.',
    ):
      call(bad)
  # Under jit the ids cannot be checked: Keras on JAX's jnp.take, i.e. NaN
  # rows beyond the table and negative ids from the end.
  looked_up = np.asarray(jax.jit(call)(jnp.array([[10, -1, 3]])))
  table = np.asarray(call(jnp.arange(10)))
  assert np.isnan(looked_up[0, 0]).all()
  np.testing.assert_array_equal(looked_up[0, 1], table[9])
  np.testing.assert_array_equal(looked_up[0, 2], table[3])


@pytest.mark.parametrize('api', APIS)
def test_bad_arguments(api):
  call, _, _ = build(api)
  with pytest.raises(
    TypeError, match='Embedding: inputs must be integer ids, got dtype float32'
  ):
    call(IDS.astype(np.float32))
  with pytest.raises(TypeError, match='Embedding: inputs must be integer ids'):
    call(IDS > 0)
  with pytest.raises(
    ValueError, match='Embedding: input_dim must be a positive integer, got 0'
  ):
    build(api, input_dim=0)
  with pytest.raises(
    TypeError, match='Embedding: mask_zero must be True or False'
  ):
    build(api, mask_zero='yes')


def test_built_for_other_sizes():
  variables = fd.Embedding(10, 3).init(jax.random.key(0), IDS)
  with pytest.raises(
    ValueError,
    match=r'Embedding: input_dim=12 and output_dim=3 need embeddings of shape'
    r' \(12, 3\), but it was built with shape \(10, 3\)',
  ):
    fd.Embedding(12, 3).apply(variables, IDS)
