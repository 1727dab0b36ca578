"""float16 and bfloat16 reductions accumulate in float32.

A float16 sum overflows at 65504: the mean of 3000 steps of 30 was inf and
of 100000 steps NaN (inf / inf). Each reduction over a long axis is checked
here against a float64 NumPy reference of the same (already rounded) inputs,
and must come back in the input's dtype within one rounding of it.
"""

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import flax_dense as fd
from flax_dense._src.ops.attention import masked_softmax
from flax_dense.functional import resolve_activation

DTYPES = [jnp.float16, jnp.bfloat16]
STEPS = [3000, 100_000]


def _eps(dtype) -> float:
  return float(ml_dtypes.finfo(dtype).eps)


def _assert_rounded(actual, expected, dtype):
  """``actual`` is in ``dtype`` and within one rounding of ``expected``."""
  assert actual.dtype == dtype
  actual = np.asarray(actual, np.float64)
  assert np.all(np.isfinite(actual)), actual
  # Subnormal results (float16 below 6.1e-5) round to a fixed step.
  atol = float(ml_dtypes.finfo(dtype).smallest_subnormal)
  np.testing.assert_allclose(actual, expected, rtol=_eps(dtype), atol=atol)


def _sequence(steps: int, dtype, channels: int = 2) -> np.ndarray:
  """``(2, steps, channels)`` values near 30, rounded to ``dtype``."""
  rng = np.random.default_rng(steps)
  values = 30.0 + rng.uniform(-2.0, 2.0, (2, steps, channels))
  return values.astype(dtype)


def _mask(steps: int) -> np.ndarray:
  """``(2, steps)``: every third step masked in the first example."""
  mask = np.ones((2, steps), bool)
  mask[0, ::3] = False
  return mask


def _kept_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  wide = x.astype(np.float64)
  return (wide * mask[..., None]).sum(1) / mask.sum(1)[:, None]


def _kept_max(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  wide = np.where(mask[..., None], x.astype(np.float64), -np.inf)
  return wide.max(1)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('steps', STEPS)
def test_masked_mean_of_a_long_axis(dtype, steps):
  x, mask = _sequence(steps, dtype), _mask(steps)
  _assert_rounded(fd.masked_mean(x, mask, 1), _kept_mean(x, mask), dtype)
  every = np.ones_like(mask)
  ours = fd.masked_mean(x, every, 1)
  _assert_rounded(ours, _kept_mean(x, every), dtype)
  # jnp.mean accumulates narrow floats in float32 too.
  reference = jnp.mean(x, axis=1)
  np.testing.assert_allclose(
    np.asarray(ours, np.float64),
    np.asarray(reference, np.float64),
    rtol=_eps(dtype),
  )


@settings(
  max_examples=6,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=list(HealthCheck),
  phases=[Phase.explicit, Phase.generate],
)
@given(
  dtype=st.sampled_from(DTYPES),
  steps=st.integers(1, 120_000),
  scale=st.sampled_from([1e-3, 30.0, 1000.0]),
  keep=st.floats(0.0, 1.0),
  seed=st.integers(0, 2**16),
)
@example(dtype=jnp.float16, steps=70_000, scale=30.0, keep=0.5, seed=1)
def test_masked_mean_fuzzed(dtype, steps, scale, keep, seed):
  rng = np.random.default_rng(seed)
  # Mostly positive values: their sum grows with the steps.
  x = (scale * rng.uniform(-0.5, 1.5, size=(1, steps, 1))).astype(dtype)
  mask = rng.uniform(size=(1, steps)) < keep
  ours = fd.masked_mean(x, mask, 1)
  assert ours.dtype == dtype
  kept = x.astype(np.float64)[mask]
  expected = kept.mean() if kept.size else 0.0
  # One rounding of the mean, relative to the size of the values (a mean
  # near 0 of large values has no relative precision left).
  magnitude = np.abs(kept).mean() if kept.size else 0.0
  np.testing.assert_allclose(
    np.float64(ours[0, 0]),
    expected,
    rtol=_eps(dtype),
    atol=_eps(dtype) * magnitude,
  )


@pytest.mark.parametrize('dtype', DTYPES)
def test_masked_max_keeps_the_dtype(dtype):
  x, mask = _sequence(100_000, dtype), _mask(100_000)
  ours = fd.masked_max(x, mask, 1)
  assert ours.dtype == dtype
  np.testing.assert_array_equal(
    np.asarray(ours, np.float64), _kept_max(x, mask)
  )


def test_masked_mean_of_integers_is_float32():
  x = np.arange(6, dtype=np.int32).reshape(1, 6, 1)
  ours = fd.masked_mean(x, np.ones((1, 6), bool), 1)
  assert ours.dtype == jnp.float32
  np.testing.assert_allclose(ours, [[2.5]])


def _pooling(api, name):
  if api == 'linen':
    module = getattr(fd, name)()
    return lambda x, mask=None: module.apply({}, x, mask)
  return getattr(fd.nnx, name)()


@pytest.mark.parametrize('api', ['linen', 'nnx'])
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('steps', STEPS)
@pytest.mark.parametrize('masked', [False, True])
def test_global_pooling_of_a_long_sequence(api, dtype, steps, masked):
  x = _sequence(steps, dtype)
  mask = _mask(steps) if masked else np.ones((2, steps), bool)
  given = mask if masked else None
  average = _pooling(api, 'GlobalAveragePooling1D')(x, given)
  _assert_rounded(average, _kept_mean(x, mask), dtype)
  largest = _pooling(api, 'GlobalMaxPooling1D')(x, given)
  assert largest.dtype == dtype
  np.testing.assert_array_equal(
    np.asarray(largest, np.float64), _kept_max(x, mask)
  )


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
@pytest.mark.parametrize('steps', STEPS)
def test_global_average_pooling_matches_keras(dtype, steps):
  # Only without a mask: Keras's masked path sums in the input dtype, so its
  # float16 mean of 3000 steps of 30 is inf (the float64 reference above
  # checks that path of ours instead).
  keras = pytest.importorskip('keras')
  x = _sequence(steps, dtype)
  ours = fd.GlobalAveragePooling1D().apply({}, x)
  theirs = keras.layers.GlobalAveragePooling1D(dtype=dtype)(x)
  assert ours.dtype == theirs.dtype
  np.testing.assert_allclose(
    np.asarray(ours, np.float64),
    np.asarray(theirs, np.float64),
    rtol=_eps(dtype),
  )


def _labelled(steps: int, dtype, classes: int = 3):
  rng = np.random.default_rng(steps)
  logits = rng.normal(size=(2, steps, classes)).astype(dtype)
  labels = rng.integers(0, classes, (2, steps))
  return labels, logits, _mask(steps)


def _log_softmax64(logits: np.ndarray) -> np.ndarray:
  wide = logits.astype(np.float64)
  shifted = wide - wide.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('steps', STEPS)
def test_masked_crossentropy_of_a_long_sequence(dtype, steps):
  labels, logits, mask = _labelled(steps, dtype)
  log_probabilities = _log_softmax64(logits)
  picked = np.take_along_axis(log_probabilities, labels[..., None], -1)[..., 0]
  expected = -(picked * mask).sum() / mask.sum()
  ours = fd.masked_sparse_categorical_crossentropy(
    labels, logits, mask, from_logits=True
  )
  _assert_rounded(ours, expected, dtype)
  probabilities = np.exp(log_probabilities).astype(dtype)
  ours = fd.masked_sparse_categorical_crossentropy(labels, probabilities, mask)
  # The probabilities were rounded to the dtype: compare to their own loss.
  wide = probabilities.astype(np.float64)
  wide = np.clip(wide / wide.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
  picked = np.log(np.take_along_axis(wide, labels[..., None], -1)[..., 0])
  _assert_rounded(ours, -(picked * mask).sum() / mask.sum(), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
def test_masked_accuracy_of_a_long_sequence_is_float32(dtype):
  labels, logits, mask = _labelled(100_000, dtype)
  hits = np.argmax(logits.astype(np.float32), -1) == labels
  ours = fd.masked_sparse_categorical_accuracy(labels, logits, mask)
  assert ours.dtype == jnp.float32
  np.testing.assert_allclose(ours, (hits * mask).sum() / mask.sum(), rtol=1e-6)


@pytest.mark.parametrize('dtype', DTYPES)
def test_l1_l2_penalty_of_a_large_kernel(dtype):
  kernel = _sequence(50_000, dtype)  # 200000 entries near 30
  wide = kernel.astype(np.float64)
  expected = 1e-3 * np.abs(wide).sum() + 1e-4 * np.square(wide).sum()
  ours = fd.l1_l2(l1=1e-3, l2=1e-4)(kernel)
  # The factors are rounded to float32 before they multiply.
  assert ours.dtype == dtype
  np.testing.assert_allclose(np.float64(ours), expected, rtol=2 * _eps(dtype))


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize(
  'constraint', [fd.max_norm(1.0), fd.min_max_norm(0.0, 1.0), fd.unit_norm()]
)
def test_norm_constraints_of_a_long_axis(dtype, constraint):
  weights = np.ones((100_000, 2), dtype)
  ours = constraint(weights)
  # Every column has norm sqrt(100000): scaled to norm 1.
  _assert_rounded(ours, np.full((100_000, 2), 100_000**-0.5), dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', ['softmax', 'log_softmax', 'sparsemax'])
def test_normalising_activations_over_a_long_axis(dtype, name):
  x = np.zeros((2, 100_000), dtype)
  x[1, ::2] = 1.0
  wide = x.astype(np.float64)
  exps = np.exp(wide - wide.max(-1, keepdims=True))
  softmax = exps / exps.sum(-1, keepdims=True)
  # Sparsemax: row 0 is uniform; row 1 keeps the ones, uniformly.
  expected = {
    'softmax': softmax,
    'log_softmax': np.log(softmax),
    'sparsemax': np.where(wide == wide.max(-1, keepdims=True), 1.0, 0.0)
    / (wide == wide.max(-1, keepdims=True)).sum(-1, keepdims=True),
  }[name]
  _assert_rounded(resolve_activation(name, 'test')(x), expected, dtype)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('masked', [False, True])
def test_attention_weights_over_a_long_sequence(dtype, masked):
  logits = jnp.zeros((100_000,), dtype)
  mask = jnp.arange(100_000) % 4 != 0 if masked else None
  kept = 75_000 if masked else 100_000
  expected = np.full(100_000, 1 / kept)
  if masked:
    expected[::4] = 0.0
  _assert_rounded(masked_softmax(logits, mask), expected, dtype)


@pytest.mark.parametrize('dtype', DTYPES)
def test_collect_losses_of_narrow_losses(dtype):
  state = {
    'losses': {'a': jnp.ones((100_000,), dtype), 'b': jnp.ones((), dtype)}
  }
  total = fd.collect_losses(state)
  np.testing.assert_allclose(total, 100_001.0, rtol=1e-6)


def test_nnx_losses_are_collected_in_float32():
  model = nnx.Module()
  model.penalty = fd.nnx.Loss(jnp.full((70_000,), 1.0, jnp.float16))
  np.testing.assert_allclose(fd.collect_losses(model), 70_000.0, rtol=1e-6)
