"""masked_mean/max, global pooling and masked losses vs Keras 3 and NumPy."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_dense as fd

keras = pytest.importorskip('keras')


def padded_batch(shape, lengths, seed=0, pad=np.nan):
  """(B, T, F) normal inputs whose steps past each length hold ``pad``."""
  x = np.random.default_rng(seed).normal(size=shape).astype('float32')
  mask = np.arange(shape[1])[None, :] < np.asarray(lengths)[:, None]
  x[~mask] = pad
  return x, mask


def keras_call(layer, *args, **kwargs):
  with jax.numpy_rank_promotion('allow'):
    return np.asarray(layer(*args, **kwargs))


@pytest.mark.parametrize(
  'shape,lengths,data_format,keepdims',
  [
    ((3, 5, 2), [5, 2, 1], 'channels_last', False),
    ((3, 5, 2), [5, 2, 1], 'channels_last', True),
    ((3, 5, 2), [5, 2, 1], 'channels_first', False),
    ((3, 5, 2), [5, 2, 1], 'channels_first', True),
    ((2, 7, 4), [3, 7], 'channels_first', False),
  ],
)
def test_global_average_pooling_matches_keras_with_mask(
  shape, lengths, data_format, keepdims
):
  x, mask = padded_batch(shape, lengths, pad=123.0)
  if data_format == 'channels_first':
    x = np.swapaxes(x, 1, 2)
  layer = fd.GlobalAveragePooling1D(data_format, keepdims)
  keras_layer = keras.layers.GlobalAveragePooling1D(data_format, keepdims)
  np.testing.assert_allclose(
    layer.apply({}, x, mask),
    keras_call(keras_layer, x, mask=mask),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    layer.apply({}, x), keras_call(keras_layer, x), rtol=1e-6
  )


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
def test_global_max_pooling_matches_keras_on_the_unpadded_sequences(
  data_format,
):
  x, mask = padded_batch((3, 6, 4), [6, 2, 4], pad=99.0)
  if data_format == 'channels_first':
    x = np.swapaxes(x, 1, 2)
  pooled = fd.GlobalMaxPooling1D(data_format).apply({}, x, mask)
  keras_layer = keras.layers.GlobalMaxPooling1D(data_format)
  steps_axis = 1 if data_format == 'channels_last' else 2
  for example, length in enumerate(mask.sum(1)):
    unpadded = np.take(x[example : example + 1], range(length), steps_axis)
    np.testing.assert_array_equal(
      pooled[example], keras_call(keras_layer, unpadded)[0]
    )
  np.testing.assert_array_equal(
    fd.GlobalMaxPooling1D(data_format).apply({}, x), keras_call(keras_layer, x)
  )


def numpy_masked(reduce, x, mask, axis):
  """The reduction over the kept entries, written plainly."""
  out = np.zeros(np.delete(x.shape, axis))
  for index in np.ndindex(*out.shape):
    full = list(index)
    full.insert(axis, slice(None))
    keep = mask[tuple(full[: mask.ndim])]
    values = x[tuple(full)][keep]
    out[index] = reduce(values) if values.size else 0.0
  return out


@pytest.mark.parametrize('axis', [0, 1, -2])
def test_masked_reductions_match_numpy_on_any_mask_axis(axis):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 5, 3)).astype('float32')
  mask = rng.random((4, 5)) < 0.5
  mask[0] = False  # one fully masked row
  for ours, reduce in [(fd.masked_mean, np.mean), (fd.masked_max, np.max)]:
    np.testing.assert_allclose(
      ours(x, mask, axis),
      numpy_masked(reduce, x, mask, axis % 3),
      rtol=1e-6,
    )
  # The mask may cover every axis, and several axes may be reduced.
  np.testing.assert_allclose(
    fd.masked_mean(x, x > 0, (0, 1, 2)), x[x > 0].mean(), rtol=1e-6
  )


@pytest.mark.parametrize('reduce', [fd.masked_mean, fd.masked_max])
def test_fully_masked_is_finite_and_masked_values_never_leak(reduce):
  x, mask = padded_batch((2, 4, 3), [0, 2])  # padding is NaN
  value, grads = jax.jit(
    jax.value_and_grad(lambda x: reduce(x, mask, 1).sum())
  )(x)
  assert np.isfinite(value)
  np.testing.assert_array_equal(reduce(x, mask, 1)[0], 0.0)
  np.testing.assert_array_equal(grads[~mask], 0.0)
  assert np.all(np.isfinite(grads))
  if reduce is fd.masked_mean:
    np.testing.assert_allclose(grads[1, :2], 0.5)


def test_masked_max_of_integers_and_jit_vmap():
  x = jnp.array([[[-5], [-7]], [[3], [9]]], jnp.int32)
  mask = jnp.array([[True, False], [False, False]])
  np.testing.assert_array_equal(fd.masked_max(x, mask, 1), [[-5], [0]])
  y, keep = padded_batch((3, 6, 2), [6, 1, 4], pad=7.0)
  np.testing.assert_allclose(
    jax.jit(fd.masked_mean, static_argnums=2)(y, keep, 1),
    jax.vmap(lambda e, m: fd.masked_mean(e, m, 0))(y, keep),
    rtol=1e-6,
  )


def sequence_batch(seed=0, batch=3, steps=5, classes=4):
  """Logits, labels and a mask with a fully masked example; garbage pads."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, steps, classes)).astype('float32')
  labels = rng.integers(0, classes, size=(batch, steps))
  mask = np.arange(steps)[None, :] < np.array([steps, 2, 0])[:, None]
  labels[~mask] = -1  # out of range: must not matter
  logits[~mask] = np.nan
  return logits, labels, mask


def keras_masked_metrics(probabilities, labels, mask):
  """Keras's compiled loss and accuracy on predictions that carry a mask."""
  steps, classes = probabilities.shape[1:]
  # Masking marks the steps that are all 0; the identity keeps the values.
  model = keras.Sequential(
    [
      keras.Input((steps, classes)),
      keras.layers.Masking(0.0),
      keras.layers.Activation('linear'),
    ]
  )
  model.compile(loss='sparse_categorical_crossentropy', metrics=['accuracy'])
  inputs = np.where(mask[..., None], probabilities, 0.0)
  with jax.numpy_rank_promotion('allow'):
    loss, accuracy = model.evaluate(
      inputs, np.where(mask, labels, 0), batch_size=len(inputs), verbose=0
    )
  return loss, accuracy


def test_masked_loss_and_accuracy_match_keras_compiled_model():
  logits, labels, mask = sequence_batch()
  mask[2, 0] = True  # Keras gives NaN for a fully masked batch, not this one
  labels[2, 0] = 1  # a kept step needs a label in range
  probabilities = np.asarray(
    jax.nn.softmax(np.where(mask[..., None], logits, 0))
  )
  loss, accuracy = keras_masked_metrics(probabilities, labels, mask)
  np.testing.assert_allclose(
    fd.masked_sparse_categorical_crossentropy(labels, probabilities, mask),
    loss,
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    fd.masked_sparse_categorical_crossentropy(
      labels, logits, mask, from_logits=True
    ),
    loss,
    rtol=1e-5,
  )
  np.testing.assert_allclose(
    fd.masked_sparse_categorical_accuracy(labels, probabilities, mask),
    accuracy,
    rtol=1e-6,
  )
  # Keras's reduction: the sum over kept steps divided by their count.
  per_step = -np.log(
    np.take_along_axis(probabilities, np.maximum(labels, 0)[..., None], -1)
  )[..., 0]
  np.testing.assert_allclose(loss, per_step[mask].mean(), rtol=1e-5)


def test_probability_loss_clips_like_keras():
  probabilities = np.array([[[1.0, 0.0], [0.5, 0.5]]], np.float32)
  labels, mask = np.array([[1, 0]]), np.array([[True, True]])
  expected = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
  np.testing.assert_allclose(
    fd.masked_sparse_categorical_crossentropy(labels, probabilities, mask),
    np.mean(expected),
    rtol=1e-6,
  )


@pytest.mark.parametrize('from_logits', [False, True])
def test_masked_steps_contribute_nothing_to_loss_or_gradient(from_logits):
  logits, labels, mask = sequence_batch()
  predictions = logits if from_logits else jax.nn.softmax(logits)

  def loss(predictions):
    return fd.masked_sparse_categorical_crossentropy(
      labels, predictions, mask, from_logits=from_logits
    )

  value, grads = jax.jit(jax.value_and_grad(loss))(predictions)
  assert np.isfinite(value)
  assert np.all(np.isfinite(grads))
  np.testing.assert_array_equal(grads[~mask], 0.0)
  assert np.all(np.abs(grads[mask]).sum(-1) > 0)
  # Only the kept steps, as one flat batch, give the same loss.
  kept = fd.masked_sparse_categorical_crossentropy(
    labels[mask][None],
    np.asarray(predictions)[mask][None],
    np.ones((1, mask.sum()), bool),
    from_logits=from_logits,
  )
  np.testing.assert_allclose(value, kept, rtol=1e-6)
  hits = fd.masked_sparse_categorical_accuracy(labels, predictions, mask)
  expected = np.mean(np.argmax(logits[mask], -1) == labels[mask])
  np.testing.assert_allclose(hits, expected, rtol=1e-6)


def test_fully_masked_batch_gives_zero_loss_and_gradient():
  logits, labels, mask = sequence_batch()
  nothing = np.zeros_like(mask)
  for from_logits in [False, True]:
    value, grads = jax.jit(
      jax.value_and_grad(
        lambda p, f=from_logits: fd.masked_sparse_categorical_crossentropy(
          labels, p, nothing, from_logits=f
        )
      )
    )(logits)
    assert float(value) == 0.0
    np.testing.assert_array_equal(grads, 0.0)
  assert (
    float(fd.masked_sparse_categorical_accuracy(labels, logits, nothing)) == 0
  )


def test_loss_under_jit_and_vmap():
  logits, labels, mask = sequence_batch()
  loss = jax.jit(fd.masked_sparse_categorical_crossentropy, static_argnums=3)
  np.testing.assert_allclose(
    loss(labels, logits, mask, True),
    fd.masked_sparse_categorical_crossentropy(labels, logits, mask, True),
    rtol=1e-6,
  )
  per_example = jax.vmap(
    lambda y, p, m: fd.masked_sparse_categorical_crossentropy(y, p, m, True)
  )(labels, logits, mask)
  assert per_example.shape == (3,) and float(per_example[2]) == 0.0


@pytest.mark.parametrize(
  'call,match',
  [
    (
      lambda: fd.masked_mean(jnp.ones((2, 3, 4)), jnp.ones((3,)), 1),
      r'masked_mean: mask must have the shape of the leading axes of inputs,'
      r' got mask of shape \(3,\) for inputs of shape \(2, 3, 4\)',
    ),
    (
      lambda: fd.masked_max(jnp.ones((2, 3, 4)), jnp.ones((2, 3)), 2),
      r'masked_max: axis 2 must be an axis of the mask \(shape \(2, 3\)\)',
    ),
    (
      lambda: fd.masked_mean(jnp.ones((2, 3)), jnp.ones((2, 3)), 5),
      r'masked_mean: axis 5 must be an axis of the mask',
    ),
    (
      lambda: fd.GlobalAveragePooling1D().apply(
        {}, jnp.ones((2, 5, 3)), jnp.ones((2, 3))
      ),
      r'GlobalAveragePooling1D: mask must be \(batch, steps\) = \(2, 5\) for'
      r' inputs of shape \(2, 5, 3\) \(channels_last\), got \(2, 3\)',
    ),
    (
      lambda: fd.GlobalMaxPooling1D('channels_first').apply(
        {}, jnp.ones((2, 5, 3)), jnp.ones((2, 5))
      ),
      r'GlobalMaxPooling1D: mask must be \(batch, steps\) = \(2, 3\)',
    ),
    (
      lambda: fd.GlobalAveragePooling1D().apply({}, jnp.ones((2, 5))),
      r'GlobalAveragePooling1D: inputs must be \(batch, steps, channels\)'
      r' \(rank 3\), got shape \(2, 5\)',
    ),
    (
      lambda: fd.GlobalAveragePooling1D('NWC').apply({}, jnp.ones((2, 5, 3))),
      r"GlobalAveragePooling1D: data_format must be one of .*'NWC'",
    ),
    (
      lambda: fd.masked_sparse_categorical_crossentropy(
        jnp.ones((2, 5), int), jnp.ones((2, 4, 3)), jnp.ones((2, 5))
      ),
      r'masked_sparse_categorical_crossentropy: predictions must be'
      r' \(..., T, classes\) and labels \(..., T\) integers, got predictions'
      r' of shape \(2, 4, 3\) and labels of shape \(2, 5\)',
    ),
    (
      lambda: fd.masked_sparse_categorical_accuracy(
        jnp.ones((2, 5)), jnp.ones((2, 5, 3)), jnp.ones((2, 5))
      ),
      r'masked_sparse_categorical_accuracy: labels must be integer class'
      r' indices, got dtype float32',
    ),
    (
      lambda: fd.masked_sparse_categorical_crossentropy(
        jnp.ones((2, 5), int), jnp.ones((2, 5, 3)), jnp.ones((5,))
      ),
      r'mask must have the shape of labels \(2, 5\), got \(5,\)',
    ),
  ],
)
def test_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_example_trains_masking_to_per_position_softmax_on_padded_data():
  path = pathlib.Path(__file__).parents[1] / 'examples' / 'masked_sequence.py'
  spec = importlib.util.spec_from_file_location('masked_sequence', path)
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  results = example.main(
    ['--train-samples', '512', '--test-samples', '256', '--steps', '40']
    + ['--batch-size', '64', '--quiet']
  )
  assert results['accuracy'] > 0.6  # chance is 1 / 4
  assert results['final_loss'] < results['first_loss']
  assert results['padding_invariant']


def _pool(layer_class):
  return lambda x, mask: layer_class().apply({}, x, mask)


def _pool_nnx(layer_class):
  return lambda x, mask: layer_class()(x, mask)


def _loss(from_logits):
  labels = np.array([[0, 2, 1, 3, 1], [1, 1, 0, 2, 0]])

  def loss(x, mask):
    return fd.masked_sparse_categorical_crossentropy(
      labels, x, mask, from_logits=from_logits
    )

  return loss


def _accuracy(x, mask):
  labels = np.array([[0, 2, 1, 3, 1], [1, 1, 0, 2, 0]])
  return fd.masked_sparse_categorical_accuracy(labels, x, mask)


NONFINITE_CONSUMERS = {
  'masked_mean': lambda x, mask: fd.masked_mean(x, mask, 1),
  'masked_max': lambda x, mask: fd.masked_max(x, mask, 1),
  'GlobalAveragePooling1D': _pool(fd.GlobalAveragePooling1D),
  'GlobalMaxPooling1D': _pool(fd.GlobalMaxPooling1D),
  'nnx.GlobalAveragePooling1D': _pool_nnx(fd.nnx.GlobalAveragePooling1D),
  'nnx.GlobalMaxPooling1D': _pool_nnx(fd.nnx.GlobalMaxPooling1D),
  'crossentropy (logits)': _loss(True),
  'crossentropy (probabilities)': _loss(False),
  'accuracy': _accuracy,
}


@pytest.mark.parametrize('pad', [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize('name', NONFINITE_CONSUMERS)
def test_nonfinite_padding_changes_neither_outputs_nor_gradients(name, pad):
  consumer = NONFINITE_CONSUMERS[name]
  finite, mask = padded_batch((2, 5, 4), [3, 1], seed=1, pad=0.25)
  if 'probabilities' in name:
    finite = np.asarray(jax.nn.softmax(finite), np.float32)
  padded = np.where(mask[..., None], finite, np.float32(pad))

  def value_and_grad(x):
    return jax.value_and_grad(lambda x: jnp.sum(consumer(x, mask)))(x)

  value, grads = value_and_grad(padded)
  expected_value, expected_grads = value_and_grad(finite)
  assert np.all(np.isfinite(value)) and np.all(np.isfinite(grads))
  np.testing.assert_array_equal(consumer(padded, mask), consumer(finite, mask))
  np.testing.assert_array_equal(value, expected_value)
  np.testing.assert_array_equal(grads, expected_grads)
  np.testing.assert_array_equal(grads[~mask], 0.0)
