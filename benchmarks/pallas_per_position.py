"""Pallas (Triton) kernels of the per-position dense layer, for GPUs.

The experiment behind the GPU choice of ``PerPositionDense`` (see
``BUILD_NOTES.md``, "Performance of PerPositionDense"): on an H100 these
kernels measured no faster than what XLA compiles the plain einsum to (one
Triton GEMM fusion that also reads the input in place), so the layer keeps
the XLA path on GPU and this code lives with the benchmarks, as the peer
``pallas kernels`` of ``per_position_dense.py`` and in ``gpu_probe.py``.
``tests/test_pallas_kernels.py`` checks it in the Pallas interpreter.

``y[n, p] = x[n, p] @ kernel[p] + bias[p]`` for ``x`` of shape ``(N, P, D)``
moves the whole input once and does little arithmetic per byte: it is
bound by memory bandwidth. Each program of these kernels takes one position
and a block of rows, reads its tiles of ``x`` straight from the ``(N, P, D)``
layout (rows of D contiguous features, coalesced), and writes its block of
the result, so no transposed copy of the input is ever made. Sizes that are
not powers of two (Triton's block shapes must be) are handled with masked
loads and stores, never by padding the arrays.

- :func:`forward`: ``(N, P, D) x (P, D, K) -> (N, P, K)`` plus bias.
- :func:`kernel_gradient`: ``(N, P, D) x (N, P, K) -> (P, D, K)``, the
  kernel's gradient, reading ``x`` once.
- :func:`inputs_gradient`: ``(N, P, K) x (P, D, K) -> (N, P, D)``.
- :func:`per_position_dense`: the three behind a ``jax.custom_vjp``.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

#: Smallest dimension of a Triton matrix product.
_MIN_DOT = 16

#: The static options of every kernel's wrapper.
_OPTIONS = ('precision', 'block_rows', 'block_in', 'warps', 'interpret')


def _block(size: int, largest: int) -> int:
  """The power of two >= ``size`` (at least 16), capped at ``largest``."""
  return min(largest, max(_MIN_DOT, pl.next_power_of_2(size)))


def _dot(a, b, contracting, precision):
  """A float32-accumulated product of two tiles over the given axes."""
  return lax.dot_general(
    a,
    b,
    (((contracting[0],), (contracting[1],)), ((), ())),
    precision=precision,
    preferred_element_type=jnp.float32,
  )


def _iota(size: int, start=0) -> jax.Array:
  return start + lax.broadcasted_iota(jnp.int32, (size,), 0)


def _blocks(batch, in_features, features, block_rows, block_in):
  """Block sizes: powers of two of at least 16, all of K in one block."""
  return {
    'block_rows': _block(batch, block_rows),
    'block_in': _block(in_features, block_in),
    'block_out': _block(features, 1 << 30),
  }


def _launch(body, operands, out_shape, dtype, grid, blocks, options):
  """Runs ``body`` over ``grid`` with the block sizes and tile precision."""
  precision, warps, interpret = options
  return pl.pallas_call(
    functools.partial(body, **blocks, precision=precision),
    out_shape=jax.ShapeDtypeStruct(out_shape, dtype),
    grid=grid,
    compiler_params=plt.CompilerParams(num_warps=warps, num_stages=2),
    interpret=interpret,
  )(*operands)


def _forward_kernel(
  x_ref, w_ref, b_ref, o_ref, *, block_rows, block_in, block_out, precision
):
  batch, _, in_features = x_ref.shape
  features = w_ref.shape[-1]
  position = pl.program_id(0)
  first_row = pl.program_id(1) * block_rows
  rows = _iota(block_rows, first_row) < batch
  columns = _iota(block_out) < features

  def accumulate(step, acc):
    first = step * block_in
    inner = _iota(block_in, first) < in_features
    x = plt.load(
      x_ref.at[pl.ds(first_row, block_rows), position, pl.ds(first, block_in)],
      mask=rows[:, None] & inner[None, :],
      other=0,
    )
    w = plt.load(
      w_ref.at[position, pl.ds(first, block_in), pl.ds(0, block_out)],
      mask=inner[:, None] & columns[None, :],
      other=0,
    )
    return acc + _dot(x, w, (1, 0), precision)

  acc = lax.fori_loop(
    0,
    pl.cdiv(in_features, block_in),
    accumulate,
    jnp.zeros((block_rows, block_out), jnp.float32),
  )
  if b_ref is not None:
    bias = plt.load(
      b_ref.at[position, pl.ds(0, block_out)], mask=columns, other=0
    )
    acc = acc + bias.astype(jnp.float32)[None, :]
  plt.store(
    o_ref.at[pl.ds(first_row, block_rows), position, pl.ds(0, block_out)],
    acc.astype(o_ref.dtype),
    mask=rows[:, None] & columns[None, :],
  )


@functools.partial(jax.jit, static_argnames=_OPTIONS)
def forward(
  inputs,
  kernel,
  bias=None,
  precision=None,
  block_rows=64,
  block_in=128,
  warps=4,
  interpret=False,
):
  """``y[n, p] = inputs[n, p] @ kernel[p] + bias[p]``.

  Args:
    inputs: ``(N, P, D)``.
    kernel: ``(P, D, K)``.
    bias: ``(P, K)`` or ``None``.
    precision: of the tile products (``None``: the backend's default).
    block_rows: rows (of N) per program, a power of two.
    block_in: features (of D) per step of a program's loop.
    warps: warps per program.
    interpret: run in the Pallas interpreter (any backend, for tests).

  Returns:
    ``(N, P, K)`` in the dtype of ``inputs``.
  """
  batch, positions, in_features = inputs.shape
  features = kernel.shape[-1]
  blocks = _blocks(batch, in_features, features, block_rows, block_in)
  body, operands = _forward_kernel, (inputs, kernel, bias)
  if bias is None:
    body, operands = functools.partial(_no_bias, _forward_kernel), operands[:2]
  return _launch(
    body,
    operands,
    (batch, positions, features),
    inputs.dtype,
    (positions, pl.cdiv(batch, blocks['block_rows'])),
    blocks,
    (precision, warps, interpret),
  )


def _no_bias(kernel_fn, x_ref, w_ref, o_ref, **blocks):
  kernel_fn(x_ref, w_ref, None, o_ref, **blocks)


def _kernel_gradient_kernel(
  x_ref, g_ref, o_ref, *, block_rows, block_in, block_out, precision
):
  batch, _, in_features = x_ref.shape
  features = g_ref.shape[-1]
  position = pl.program_id(0)
  first_in = pl.program_id(1) * block_in
  inner = _iota(block_in, first_in) < in_features
  columns = _iota(block_out) < features

  def accumulate(step, acc):
    first = step * block_rows
    rows = _iota(block_rows, first) < batch
    x = plt.load(
      x_ref.at[pl.ds(first, block_rows), position, pl.ds(first_in, block_in)],
      mask=rows[:, None] & inner[None, :],
      other=0,
    )
    g = plt.load(
      g_ref.at[pl.ds(first, block_rows), position, pl.ds(0, block_out)],
      mask=rows[:, None] & columns[None, :],
      other=0,
    )
    return acc + _dot(x, g, (0, 0), precision)

  acc = lax.fori_loop(
    0,
    pl.cdiv(batch, block_rows),
    accumulate,
    jnp.zeros((block_in, block_out), jnp.float32),
  )
  plt.store(
    o_ref.at[position, pl.ds(first_in, block_in), pl.ds(0, block_out)],
    acc.astype(o_ref.dtype),
    mask=inner[:, None] & columns[None, :],
  )


@functools.partial(jax.jit, static_argnames=_OPTIONS)
def kernel_gradient(
  inputs,
  cotangents,
  precision=None,
  block_rows=64,
  block_in=128,
  warps=4,
  interpret=False,
):
  """``g[p] = inputs[:, p].T @ cotangents[:, p]``, the kernel's gradient.

  Args:
    inputs: ``(N, P, D)``.
    cotangents: ``(N, P, K)``.
    precision: of the tile products.
    block_rows: rows (of N) per step of a program's loop.
    block_in: features (of D) per program.
    warps: warps per program.
    interpret: run in the Pallas interpreter (any backend, for tests).

  Returns:
    ``(P, D, K)`` in the dtype of ``inputs``.
  """
  batch, positions, in_features = inputs.shape
  features = cotangents.shape[-1]
  blocks = _blocks(batch, in_features, features, block_rows, block_in)
  return _launch(
    _kernel_gradient_kernel,
    (inputs, cotangents),
    (positions, in_features, features),
    inputs.dtype,
    (positions, pl.cdiv(in_features, blocks['block_in'])),
    blocks,
    (precision, warps, interpret),
  )


def _inputs_gradient_kernel(
  g_ref, w_ref, o_ref, *, block_rows, block_in, block_out, precision
):
  batch, _, features = g_ref.shape
  in_features = w_ref.shape[1]
  position = pl.program_id(0)
  first_row = pl.program_id(1) * block_rows
  first_in = pl.program_id(2) * block_in
  rows = _iota(block_rows, first_row) < batch
  inner = _iota(block_in, first_in) < in_features
  columns = _iota(block_out) < features
  g = plt.load(
    g_ref.at[pl.ds(first_row, block_rows), position, pl.ds(0, block_out)],
    mask=rows[:, None] & columns[None, :],
    other=0,
  )
  w = plt.load(
    w_ref.at[position, pl.ds(first_in, block_in), pl.ds(0, block_out)],
    mask=inner[:, None] & columns[None, :],
    other=0,
  )
  out = _dot(g, w, (1, 1), precision)
  plt.store(
    o_ref.at[pl.ds(first_row, block_rows), position, pl.ds(first_in, block_in)],
    out.astype(o_ref.dtype),
    mask=rows[:, None] & inner[None, :],
  )


@functools.partial(jax.jit, static_argnames=_OPTIONS)
def inputs_gradient(
  cotangents,
  kernel,
  precision=None,
  block_rows=64,
  block_in=256,
  warps=4,
  interpret=False,
):
  """``g[n, p] = cotangents[n, p] @ kernel[p].T``, the inputs' gradient.

  Args:
    cotangents: ``(N, P, K)``.
    kernel: ``(P, D, K)``.
    precision: of the tile products.
    block_rows: rows (of N) per program.
    block_in: features (of D) per program.
    warps: warps per program.
    interpret: run in the Pallas interpreter (any backend, for tests).

  Returns:
    ``(N, P, D)`` in the dtype of ``kernel``.
  """
  batch, positions, features = cotangents.shape
  in_features = kernel.shape[1]
  blocks = _blocks(batch, in_features, features, block_rows, block_in)
  return _launch(
    _inputs_gradient_kernel,
    (cotangents, kernel),
    (batch, positions, in_features),
    kernel.dtype,
    (
      positions,
      pl.cdiv(batch, blocks['block_rows']),
      pl.cdiv(in_features, blocks['block_in']),
    ),
    blocks,
    (precision, warps, interpret),
  )


@jax.custom_vjp
def per_position_dense(inputs, kernel, bias):
  """``inputs[n, p] @ kernel[p] + bias[p]`` with Pallas kernels both ways.

  Reverse mode only (a ``custom_vjp``); block shapes are the best measured
  by ``gpu_probe.py`` on an H100 at ``(64, 1024, 256) -> 10``.

  Args:
    inputs: ``(N, P, D)``.
    kernel: ``(P, D, K)``.
    bias: ``(P, K)``.

  Returns:
    ``(N, P, K)``.
  """
  return forward(inputs, kernel, bias, block_rows=128, block_in=128)


def _vjp_forward(inputs, kernel, bias):
  return per_position_dense(inputs, kernel, bias), (inputs, kernel)


def _vjp_backward(residuals, cotangents):
  inputs, kernel = residuals
  return (
    inputs_gradient(cotangents, kernel, block_rows=64, block_in=256),
    kernel_gradient(inputs, cotangents, block_rows=64, block_in=64),
    jnp.sum(cotangents, axis=0).astype(kernel.dtype),
  )


per_position_dense.defvjp(_vjp_forward, _vjp_backward)
