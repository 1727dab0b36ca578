"""The fast paths of PerPositionDense equal the per-example reference.

``per_position_dense_chunked`` (the XLA:CPU path for large batches) is
compared with a NumPy loop and with ``jax.vmap`` of ``per_position_dense``:
outputs, gradients in every argument, forward mode, second order, and under
``jax.vmap``. The module is checked to take that path when the rule says so
and to give the same numbers either way.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense._src.ops import dense_kernels

TOL = dict(rtol=2e-5, atol=2e-5)

# Jitted once for the whole file: an eager call retraces its loop each time.
per_position_dense_chunked = jax.jit(
  dense_kernels.per_position_dense_chunked,
  static_argnames=('precision', 'chunk'),
)


def numpy_loop(x, kernel, bias):
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  out = np.zeros((*x.shape[:-1], kernel.shape[-1]))
  for p in range(kernel.shape[0]):
    out[..., p, :] = x[..., p, :] @ kernel[p]
    if bias is not None:
      out[..., p, :] += np.asarray(bias, np.float64)[p]
  return out


@functools.partial(jax.jit, static_argnames='precision')
def reference(x, kernel, bias, precision=None):
  return jax.vmap(
    lambda e: fd.functional.per_position_dense(e, kernel, bias, precision)
  )(x)


def problem(key, batch, positions, in_features, features, dtype=jnp.float32):
  kx, kk, kb = jax.random.split(key, 3)
  x = jax.random.normal(kx, (batch, positions, in_features), dtype)
  kernel = jax.random.normal(kk, (positions, in_features, features), dtype)
  bias = jax.random.normal(kb, (positions, features), dtype)
  return x, kernel, bias


# (N, P, D, K, chunk): several full chunks, a remainder chunk, one chunk,
# chunks of one position, and the default chunk size.
SHAPES = [
  (3, 8, 5, 4, 4),
  (3, 7, 5, 4, 3),
  (2, 5, 3, 2, 5),
  (4, 6, 2, 3, 1),
  (2, 9, 4, 3, None),
]


@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize(
  'batch, positions, in_features, features, chunk', SHAPES
)
def test_forward_matches_numpy_loop(
  key, batch, positions, in_features, features, chunk, use_bias
):
  x, kernel, bias = problem(key, batch, positions, in_features, features)
  bias = bias if use_bias else None
  y = per_position_dense_chunked(x, kernel, bias, chunk=chunk)
  assert y.shape == (batch, positions, features)
  np.testing.assert_allclose(y, numpy_loop(x, kernel, bias), **TOL)
  np.testing.assert_allclose(y, reference(x, kernel, bias), **TOL)


@pytest.mark.parametrize(
  'batch, positions, in_features, features, chunk', SHAPES
)
def test_gradients_match_reference(
  key, batch, positions, in_features, features, chunk
):
  x, kernel, bias = problem(key, batch, positions, in_features, features)

  def loss(fn):
    return lambda x, k, b: jnp.sum(jnp.tanh(fn(x, k, b)) ** 2)

  def chunked(x, k, b):
    return per_position_dense_chunked(x, k, b, chunk=chunk)

  grads = jax.jit(jax.grad(loss(chunked), argnums=(0, 1, 2)))(x, kernel, bias)
  expected = jax.grad(loss(reference), argnums=(0, 1, 2))(x, kernel, bias)
  for got, want in zip(grads, expected, strict=True):
    np.testing.assert_allclose(got, want, **TOL)


def test_kernel_gradient_without_inputs_gradient(key):
  # A training step differentiates the weights only: the inputs' tangent is
  # a symbolic zero and must not be needed.
  x, kernel, bias = problem(key, 4, 10, 3, 2)

  def loss(fn, kernel, bias):
    return jnp.sum(fn(x, kernel, bias) ** 2)

  chunked = lambda x, k, b: per_position_dense_chunked(x, k, b, chunk=3)  # noqa: E731
  grads = jax.grad(loss, argnums=(1, 2))(chunked, kernel, bias)
  expected = jax.grad(loss, argnums=(1, 2))(reference, kernel, bias)
  for got, want in zip(grads, expected, strict=True):
    np.testing.assert_allclose(got, want, **TOL)


def test_forward_mode_matches_reference(key):
  x, kernel, bias = problem(key, 3, 7, 4, 3)
  tangents = problem(jax.random.key(1), 3, 7, 4, 3)

  def chunked(x, k, b):
    return per_position_dense_chunked(x, k, b, chunk=2)

  _, got = jax.jvp(chunked, (x, kernel, bias), tangents)
  _, want = jax.jvp(reference, (x, kernel, bias), tangents)
  np.testing.assert_allclose(got, want, **TOL)


def test_second_order_finite_differences(key):
  x, kernel, bias = problem(key, 2, 5, 3, 2)

  @jax.jit
  def loss(x, k, b):
    return jnp.sum(per_position_dense_chunked(x, k, b, chunk=2) ** 2)

  with jax.enable_x64():
    args = [a.astype(jnp.float64) for a in (x, kernel, bias)]
    check_grads(loss, args, order=2, modes=['rev', 'fwd'])


def test_precision_is_passed(key):
  x, kernel, bias = problem(key, 3, 6, 5, 4)
  y = per_position_dense_chunked(x, kernel, bias, precision='highest', chunk=4)
  expected = reference(x, kernel, bias, precision='highest')
  np.testing.assert_allclose(y, expected, **TOL)


def test_vmap_over_inputs_and_over_kernels(key):
  x, kernel, bias = problem(key, 3, 7, 4, 3)

  def chunked(x, k, b):
    return per_position_dense_chunked(x, k, b, chunk=3)

  xs = jnp.stack([x, -2 * x])
  kernels = jnp.stack([kernel, kernel + 1])
  np.testing.assert_allclose(
    jax.vmap(chunked, (0, None, None))(xs, kernel, bias),
    jax.vmap(reference, (0, None, None))(xs, kernel, bias),
    **TOL,
  )
  np.testing.assert_allclose(
    jax.vmap(chunked, (None, 0, None))(x, kernels, bias),
    jax.vmap(reference, (None, 0, None))(x, kernels, bias),
    **TOL,
  )

  def kernel_grad(fn):
    return jax.vmap(
      jax.grad(lambda x, k: jnp.sum(fn(x, k, bias) ** 2), argnums=1),
      (0, None),
    )

  np.testing.assert_allclose(
    kernel_grad(chunked)(xs, kernel), kernel_grad(reference)(xs, kernel), **TOL
  )


def test_prefers_chunks_rule():
  big = (64, 1024, 256)
  assert dense_kernels.prefers_chunks(big, jnp.float32)
  assert dense_kernels.prefers_chunks((4, 16, 1024, 256), jnp.float32)
  assert not dense_kernels.prefers_chunks(big, jnp.bfloat16)
  assert dense_kernels.prefers_chunks((8, 1024, 256), jnp.float32)
  assert dense_kernels.prefers_chunks((1, 1024, 256), jnp.float32)  # 1 MiB
  assert not dense_kernels.prefers_chunks((1, 1023, 256), jnp.float32)
  assert not dense_kernels.prefers_chunks((1024, 256 * 64), jnp.float32)


def test_positions_per_chunk():
  assert dense_kernels.positions_per_chunk((64, 1024, 256), 4) == 32
  assert dense_kernels.positions_per_chunk((256, 1024, 256), 4) == 8
  assert dense_kernels.positions_per_chunk((1, 7, 3), 4) == 7
  assert dense_kernels.positions_per_chunk((8, 1024, 256), 4) == 64  # capped
  assert dense_kernels.positions_per_chunk((1, 100, 3), 4) == 64
  assert dense_kernels.positions_per_chunk((4096, 9, 4096), 4) == 1


@pytest.fixture
def chunk_every_batch(monkeypatch):
  """Makes the module take the chunked path for any float32 batch."""
  monkeypatch.setattr(dense_kernels, 'MIN_CHUNKED_BYTES', 0)
  monkeypatch.setattr(dense_kernels, 'CHUNK_BYTES', 64)
  monkeypatch.setattr(dense_kernels, 'MAX_CHUNK_POSITIONS', 2)
  # The layer's op is jitted: traces made under other constants must go.
  jax.clear_caches()
  yield
  jax.clear_caches()


def uses_chunks(fn, *args):
  return 'custom_jvp_call' in str(jax.make_jaxpr(fn)(*args))


@pytest.mark.parametrize('shape', [(2, 3, 5, 4), (6, 5, 4), (5, 4)])
def test_module_takes_the_chunked_path(
  chunk_every_batch, monkeypatch, key, shape
):
  x = jax.random.normal(key, shape)
  layer = fd.PerPositionDense(3, activation='tanh')
  variables = layer.init(key, x)
  assert uses_chunks(layer.apply, variables, x) == (len(shape) > 2)
  params = variables['params']
  expected = np.tanh(numpy_loop(x, params['kernel'], params['bias']))
  np.testing.assert_allclose(layer.apply(variables, x), expected, **TOL)

  def loss(params, x):
    return jnp.sum(layer.apply({'params': params}, x) ** 2)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  # The same module on the reference path.
  monkeypatch.setattr(dense_kernels, 'MIN_CHUNKED_BYTES', 1 << 62)
  jax.clear_caches()
  assert not uses_chunks(layer.apply, variables, x)
  expected = jax.grad(loss, argnums=(0, 1))(params, x)
  for got, want in zip(
    jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True
  ):
    np.testing.assert_allclose(got, want, **TOL)


def test_module_vmap_and_partitioned_init(chunk_every_batch, key):
  x = jax.random.normal(key, (3, 4, 6, 5))
  init = nn.with_logical_partitioning(
    fd.PerPositionDense(2).kernel_init, fd.PerPositionDense.kernel_axes
  )
  layer = fd.PerPositionDense(2, kernel_init=init)
  variables = nn.unbox(layer.init(key, x[0]))
  assert uses_chunks(layer.apply, variables, x[0])
  mapped = jax.vmap(layer.apply, in_axes=(None, 0))(variables, x)
  params = variables['params']
  np.testing.assert_allclose(
    mapped, numpy_loop(x, params['kernel'], params['bias']), **TOL
  )
