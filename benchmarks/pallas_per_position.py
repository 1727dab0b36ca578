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
the result, so no transposed copy of the input is ever made. The wrappers
pad each operand with zeros to whole blocks (Triton's block shapes are powers
of two, and Pallas refuses blocks that run past an array even when masked),
which leaves these products and sums exact, and slice the padding off the
result; an operand that already fills its blocks is passed as it is.

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


def _blocks(batch, in_features, features, block_rows, block_in):
  """Block sizes: powers of two of at least 16, all of K in one block."""
  return {
    'block_rows': _block(batch, block_rows),
    'block_in': _block(in_features, block_in),
    'block_out': _block(features, 1 << 30),
  }


def _padded_sizes(batch, in_features, blocks):
  """N, D and K rounded up to whole blocks."""
  return {
    'rows': pl.cdiv(batch, blocks['block_rows']) * blocks['block_rows'],
    'in': pl.cdiv(in_features, blocks['block_in']) * blocks['block_in'],
    'out': blocks['block_out'],
  }


def _pad(array, shape):
  """``array`` with zeros appended to reach ``shape``."""
  widths = [
    (0, size - dim) for dim, size in zip(array.shape, shape, strict=True)
  ]
  return jnp.pad(array, widths) if any(w for _, w in widths) else array


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
  position = pl.program_id(0)
  rows = pl.ds(pl.program_id(1) * block_rows, block_rows)

  def accumulate(step, acc):
    inner = pl.ds(step * block_in, block_in)
    x = x_ref[rows, position, inner]
    w = w_ref[position, inner, :]
    return acc + _dot(x, w, (1, 0), precision)

  acc = lax.fori_loop(
    0,
    x_ref.shape[-1] // block_in,
    accumulate,
    jnp.zeros((block_rows, block_out), jnp.float32),
  )
  if b_ref is not None:
    acc = acc + b_ref[position, :].astype(jnp.float32)[None, :]
  o_ref[rows, position, :] = acc.astype(o_ref.dtype)


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
  size = _padded_sizes(batch, in_features, blocks)
  operands = (
    _pad(inputs, (size['rows'], positions, size['in'])),
    _pad(kernel, (positions, size['in'], size['out'])),
  )
  body = functools.partial(_no_bias, _forward_kernel)
  if bias is not None:
    body = _forward_kernel
    operands += (_pad(bias, (positions, size['out'])),)
  out = _launch(
    body,
    operands,
    (size['rows'], positions, size['out']),
    inputs.dtype,
    (positions, size['rows'] // blocks['block_rows']),
    blocks,
    (precision, warps, interpret),
  )
  return out[:batch, :, :features]


def _no_bias(kernel_fn, x_ref, w_ref, o_ref, **blocks):
  kernel_fn(x_ref, w_ref, None, o_ref, **blocks)


def _kernel_gradient_kernel(
  x_ref, g_ref, o_ref, *, block_rows, block_in, block_out, precision
):
  position = pl.program_id(0)
  inner = pl.ds(pl.program_id(1) * block_in, block_in)

  def accumulate(step, acc):
    rows = pl.ds(step * block_rows, block_rows)
    x = x_ref[rows, position, inner]
    g = g_ref[rows, position, :]
    return acc + _dot(x, g, (0, 0), precision)

  acc = lax.fori_loop(
    0,
    x_ref.shape[0] // block_rows,
    accumulate,
    jnp.zeros((block_in, block_out), jnp.float32),
  )
  o_ref[position, inner, :] = acc.astype(o_ref.dtype)


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
  size = _padded_sizes(batch, in_features, blocks)
  out = _launch(
    _kernel_gradient_kernel,
    (
      _pad(inputs, (size['rows'], positions, size['in'])),
      _pad(cotangents, (size['rows'], positions, size['out'])),
    ),
    (positions, size['in'], size['out']),
    inputs.dtype,
    (positions, size['in'] // blocks['block_in']),
    blocks,
    (precision, warps, interpret),
  )
  return out[:, :in_features, :features]


def _inputs_gradient_kernel(
  g_ref, w_ref, o_ref, *, block_rows, block_in, block_out, precision
):
  position = pl.program_id(0)
  rows = pl.ds(pl.program_id(1) * block_rows, block_rows)
  inner = pl.ds(pl.program_id(2) * block_in, block_in)
  out = _dot(
    g_ref[rows, position, :], w_ref[position, inner, :], (1, 1), precision
  )
  o_ref[rows, position, inner] = out.astype(o_ref.dtype)


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
  size = _padded_sizes(batch, in_features, blocks)
  out = _launch(
    _inputs_gradient_kernel,
    (
      _pad(cotangents, (size['rows'], positions, size['out'])),
      _pad(kernel, (positions, size['in'], size['out'])),
    ),
    (size['rows'], positions, size['in']),
    kernel.dtype,
    (
      positions,
      size['rows'] // blocks['block_rows'],
      size['in'] // blocks['block_in'],
    ),
    blocks,
    (precision, warps, interpret),
  )
  return out[:batch, :, :in_features]


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
