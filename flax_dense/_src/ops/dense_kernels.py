"""The batched XLA:CPU path of ``PerPositionDense``: chunks of positions.

``y[n, p] = x[n, p] @ kernel[p] + bias[p]`` for a batch ``x`` of shape
``(N, P, D)`` is P small matrix products whose batch axis (positions) sits
in the middle of the input. XLA:CPU lowers the plain einsum (what
``jax.vmap`` of :func:`~flax_dense.functional.per_position_dense`, Keras 3
``EinsumDense`` and Flax ``nn.Einsum`` compile to) by first transposing the
whole input to ``(P, D, N)``, element by element, into a fresh buffer:
that transpose, not the arithmetic, is most of its time. Here the positions
are processed in chunks with ``lax.map``: each chunk of the input,
``(N, c, D)``, is a cache-sized block that is swapped to ``(c, N, D)``
(whole rows of D features move, no element transpose) and multiplied in
the form XLA:CPU hands to its fast batched-matmul library (the contracting
axis last on the left operand and second-to-last on the right). The input
is read once, no buffer of its size is allocated, and the compiled program
does not grow with P.

Differentiation is a ``jax.custom_jvp`` so that forward mode, reverse mode,
higher orders and ``jax.vmap`` all keep working. The tangent in the kernel is
written so that its transpose (the kernel gradient of reverse mode, the part
of a training step that matters) is again a chunked product in the fast
form; the chunk body is rematerialised so reverse mode saves no per-chunk
copy of the input. The tangent in the inputs is the reference einsum: its
transpose writes an input-sized gradient and no layout measured faster.

Measured figures and the choice rule are in ``BUILD_NOTES.md``
("Performance of PerPositionDense").
"""

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax.typing import PrecisionLike
from jax import lax
from jax.custom_derivatives import SymbolicZero

#: Bytes of input per chunk of positions (measured optimum: 1 to 4 MiB).
CHUNK_BYTES = 2 << 20

#: Most positions per chunk: for small batches (N <= 16), chunks of 64
#: positions measured 10-25% faster than chunks of CHUNK_BYTES (hundreds of
#: positions), whose per-position work no longer fits the caches.
MAX_CHUNK_POSITIONS = 64

#: Smallest batch of inputs, in bytes, sent through chunks. From 1 MiB the
#: chunked training step measured 1.3-2.6x faster than the einsum's and the
#: forward within noise of it or faster; below, both take microseconds.
MIN_CHUNKED_BYTES = 1 << 20


def prefers_chunks(inputs_shape: Sequence[int], dtype: jnp.dtype) -> bool:
  """Whether chunks measured faster than the einsum on XLA:CPU for inputs.

  True for batches (rank 3 or more) of float32 inputs of at least
  :data:`MIN_CHUNKED_BYTES` when JAX has a single CPU device. Not for 16-bit
  floats: XLA:CPU converts them to float32 whole before any loop (CPUs
  without bfloat16 arithmetic), so chunks gain nothing; not with several
  CPU devices: a mesh may split the positions, which the chunks would gather
  while the einsum keeps every position on its device. Not for a shape with
  a symbolic size (``jax.export.symbolic_shape``): the chunk length depends
  on the batch size, so such inputs take the einsum, which any size fits.

  Args:
    inputs_shape: ``(..., P, D)``; sizes are ints or symbolic.
    dtype: dtype of the inputs (and of the weights).

  Returns:
    Whether to call :func:`per_position_dense_chunked` on CPU.
  """
  if len(inputs_shape) < 3 or jnp.dtype(dtype) != jnp.float32:
    return False
  if not all(isinstance(size, int) for size in inputs_shape):
    return False
  size = math.prod(inputs_shape) * jnp.dtype(dtype).itemsize
  return size >= MIN_CHUNKED_BYTES and len(jax.devices('cpu')) == 1


def positions_per_chunk(inputs_shape: Sequence[int], itemsize: int) -> int:
  """Positions per chunk for inputs of shape ``(N, P, D)``.

  Args:
    inputs_shape: ``(N, P, D)``.
    itemsize: bytes per element of the inputs.

  Returns:
    The number of positions whose ``(N, c, D)`` block is about
    :data:`CHUNK_BYTES`, between 1 and ``min(P, MAX_CHUNK_POSITIONS)``.
  """
  batch, positions, in_features = inputs_shape
  row_bytes = max(1, batch * in_features * itemsize)
  largest = min(positions, MAX_CHUNK_POSITIONS)
  return max(1, min(largest, CHUNK_BYTES // row_bytes))


def padded_features(features: int) -> int:
  """Output features the chunk products are computed with.

  XLA:CPU's batched matmul runs a narrow output at full speed only when its
  width is a multiple of 8: measured at ``(64, 256) x (256, K)``, K = 10
  padded with zero columns to 16 is 20% faster than K = 10, and likewise
  for 2 to 15 features; from 16 up padding measured slower. The padding is
  added per chunk, in cache, and sliced off before the bias.

  Args:
    features: K.

  Returns:
    K rounded up to a multiple of 8 when ``1 < K < 16``, else K.
  """
  if 1 < features < 16:
    return -(-features // 8) * 8
  return features


def _batched_dot(
  lhs: jax.Array,
  rhs: jax.Array,
  contracting: tuple[int, int],
  precision: PrecisionLike,
) -> jax.Array:
  """``lax.dot_general`` with axis 0 of both operands as the batch axis."""
  return lax.dot_general(
    lhs,
    rhs,
    (((contracting[0],), (contracting[1],)), ((0,), (0,))),
    precision=precision,
  )


def _positions_first(inputs: jax.Array, start, size: int) -> jax.Array:
  """Positions ``start:start + size`` of ``(N, P, D)`` as ``(size, N, D)``."""
  block = lax.dynamic_slice_in_dim(inputs, start, size, axis=1)
  return jnp.swapaxes(block, 0, 1)


def _over_chunks(
  fn: Callable[..., jax.Array], chunk: int, weights: Sequence[jax.Array]
) -> jax.Array:
  """Applies ``fn(start, *weight_chunks)`` to consecutive chunks of positions.

  Args:
    fn: maps the first position of a chunk and the chunk of every array of
      ``weights`` to an array whose axis 0 is the chunk's positions.
    chunk: positions per chunk; the last ``P % chunk`` positions form one
      more, smaller chunk.
    weights: arrays whose axis 0 is the P positions.

  Returns:
    The outputs of ``fn`` concatenated along axis 0: ``(P, ...)``.
  """
  positions = weights[0].shape[0]
  count, rest = divmod(positions, chunk)
  split = count * chunk

  # Rematerialised so that reverse mode recomputes a chunk's slice of the
  # inputs instead of saving it for every chunk (a copy of the inputs).
  @jax.checkpoint
  def body(args):
    index, chunks = args
    return fn(index * chunk, *chunks)

  heads = [w[:split].reshape(count, chunk, *w.shape[1:]) for w in weights]
  outputs = lax.map(body, (jnp.arange(count), heads))
  outputs = jnp.reshape(outputs, (split, *outputs.shape[2:]))
  if rest:
    tail = fn(split, *[w[split:] for w in weights])
    outputs = jnp.concatenate([outputs, tail])
  return outputs


def _forward(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None,
  precision: PrecisionLike,
  chunk: int,
) -> jax.Array:
  features = kernel.shape[-1]
  padding = padded_features(features) - features

  def chunk_outputs(start, kernel_chunk, *bias_chunk):
    inputs_chunk = _positions_first(inputs, start, kernel_chunk.shape[0])
    kernel_chunk = jnp.pad(kernel_chunk, ((0, 0), (0, 0), (0, padding)))
    outputs = _batched_dot(inputs_chunk, kernel_chunk, (2, 1), precision)
    outputs = outputs[..., :features]
    if bias_chunk:
      outputs = outputs + bias_chunk[0][:, None, :]
    return outputs

  weights = (kernel,) if bias is None else (kernel, bias)
  return jnp.swapaxes(_over_chunks(chunk_outputs, chunk, weights), 0, 1)


def _kernel_tangent(
  inputs: jax.Array,
  kernel_tangent: jax.Array,
  precision: PrecisionLike,
  chunk: int,
) -> jax.Array:
  """The outputs' tangent in the kernel, shaped for a fast transpose.

  Computed as ``(c, K, D) x (c, N, D) -> (c, K, N)`` per chunk: its
  transpose, the kernel gradient, is ``(c, K, N) x (c, N, D) -> (c, K, D)``,
  contracting the batch in the fast form.
  """

  def chunk_tangent(start, kernel_chunk):
    inputs_chunk = _positions_first(inputs, start, kernel_chunk.shape[0])
    return _batched_dot(kernel_chunk, inputs_chunk, (2, 2), precision)

  kernel_by_feature = jnp.swapaxes(kernel_tangent, 1, 2)
  tangent = _over_chunks(chunk_tangent, chunk, (kernel_by_feature,))
  return jnp.transpose(tangent, (2, 0, 1))


_chunked = jax.custom_jvp(_forward, nondiff_argnums=(3, 4))


def _is_zero(tangent) -> bool:
  return tangent is None or isinstance(tangent, SymbolicZero)


def _chunked_jvp(precision, chunk, primals, tangents):
  inputs, kernel, bias = primals
  inputs_dot, kernel_dot, bias_dot = tangents
  outputs = _forward(inputs, kernel, bias, precision, chunk)
  terms = []
  if not _is_zero(inputs_dot):
    terms.append(
      jnp.einsum('npd,pdk->npk', inputs_dot, kernel, precision=precision)
    )
  if not _is_zero(kernel_dot):
    terms.append(_kernel_tangent(inputs, kernel_dot, precision, chunk))
  if not _is_zero(bias_dot):
    terms.append(jnp.broadcast_to(bias_dot, outputs.shape))
  if not terms:
    return outputs, jnp.zeros_like(outputs)
  return outputs, sum(terms[1:], terms[0])


_chunked.defjvp(_chunked_jvp, symbolic_zeros=True)


def per_position_dense_chunked(
  inputs: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None = None,
  precision: PrecisionLike = None,
  chunk: int | None = None,
) -> jax.Array:
  """Per-position dense of a batch, by chunks of positions.

  Equal, to float rounding, to ``jax.vmap(per_position_dense)`` over axis 0
  of ``inputs``, and fast on XLA:CPU (see the module docstring).

  Args:
    inputs: ``(N, P, D)``.
    kernel: ``(P, D, K)``, same dtype as ``inputs``.
    bias: ``(P, K)`` or ``None``, same dtype as ``inputs``.
    precision: passed to every contraction.
    chunk: positions per chunk; default :func:`positions_per_chunk`.

  Returns:
    ``(N, P, K)``.
  """
  if chunk is None:
    chunk = positions_per_chunk(inputs.shape, inputs.dtype.itemsize)
  return _chunked(inputs, kernel, bias, precision, chunk)
