"""Exploration on a GPU: XLA formulations against the Pallas kernels.

Times, for each size, the forward product, the kernel gradient and the
inputs gradient of the per-position dense layer in several formulations
(XLA einsum, XLA multiply-and-reduce, XLA on pre-transposed inputs, the
Pallas kernels of ``pallas_per_position.py`` with several block
shapes), checks each against a float64 NumPy reference, and writes the
figures and the optimized HLO of the XLA forms under ``--out``.

Usage::

  python benchmarks/gpu_probe.py --out /tmp/probe
"""

import argparse
import json
import os
import statistics
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pallas_per_position as pallas
import timing
from bench_common import relative_error

D, K = 256, 10
SIZES = ((64, 1024), (8, 1024), (256, 1024), (64, 64), (64, 256), (64, 4096))
FORWARD_BLOCKS = (
  (64, 128, 4),
  (64, 256, 4),
  (32, 256, 4),
  (128, 128, 4),
  (16, 256, 4),
  (32, 128, 2),
)
KERNEL_GRAD_BLOCKS = (
  (64, 128, 4),
  (32, 128, 4),
  (64, 64, 4),
  (128, 64, 4),
  (32, 256, 4),
)
INPUTS_GRAD_BLOCKS = ((64, 256, 4), (32, 256, 4), (64, 128, 4), (128, 128, 4))
COPIES = 8  # calls per program, each on its own inputs


def bench(fn, args_list, calls=10, rounds=5):
  """Median device seconds per call of ``fn``.

  One program calls ``fn`` once on each of the argument sets (distinct
  arrays, so neither the L2 cache nor XLA can share work between calls);
  ``calls`` runs of it are timed back to back (``timing.time_calls``),
  which hides the Python dispatch of the program, after a warm-up round.
  """
  program, _ = timing.compiled(lambda sets: [fn(*a) for a in sets], args_list)

  def one_round():
    return {'call': timing.time_calls(program, args_list, calls=calls)[1]}

  samples = timing.interleave({'fn': one_round}, repeats=rounds)
  return statistics.median(samples['fn']['call']) / len(args_list)


def machine():
  big = jnp.ones((256 << 20,), jnp.float32)  # 1 GiB
  copy = jax.jit(lambda a: a + 1)
  seconds = bench(copy, [(big,)])
  bandwidth = 2 * big.nbytes / seconds
  del big
  result = {'copy_bandwidth_bytes_per_s': bandwidth}
  for dtype in (jnp.float32, jnp.bfloat16):
    a = jnp.asarray(
      np.random.default_rng(0).standard_normal((8192, 8192)), dtype
    )
    mm = jax.jit(jnp.matmul)
    seconds = bench(mm, [(a, a)])
    result[f'matmul_{jnp.dtype(dtype).name}_flops_per_s'] = (
      2 * 8192**3 / seconds
    )
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  info = {
    'jax': jax.__version__,
    'devices': [str(d) for d in jax.devices()],
    'device_kind': jax.devices()[0].device_kind,
  }
  info.update(machine())
  print(json.dumps(info, indent=1), flush=True)
  results = {'machine': info, 'sizes': []}
  hi = jax.lax.Precision.HIGHEST
  for batch, positions in SIZES:
    rng = np.random.default_rng(batch + positions)
    x64 = rng.standard_normal((batch, positions, D))
    w64 = rng.uniform(-0.15, 0.15, (positions, D, K))
    b64 = rng.normal(0, 0.1, (positions, K))
    g64 = rng.standard_normal((batch, positions, K))
    xs = [jnp.asarray(x64 + i * 1e-3, jnp.float32) for i in range(COPIES)]
    w, b, g = (jnp.asarray(a, jnp.float32) for a in (w64, b64, g64))
    ws = [w + i * 1e-6 for i in range(COPIES)]
    gl = [g + i * 1e-6 for i in range(COPIES)]
    want_y = np.einsum('bpd,pdk->bpk', x64, w64) + b64
    want_gw = np.einsum('bpd,bpk->pdk', x64, g64)
    want_gx = np.einsum('bpk,pdk->bpd', g64, w64)
    entry = {'batch': batch, 'positions': positions, 'variants': {}}
    results['sizes'].append(entry)
    mbytes = (batch * positions * D + positions * D * K) * 4
    floor = mbytes / info['copy_bandwidth_bytes_per_s']
    entry['forward_floor_s'] = floor

    def record(name, kind, fn, args_list, want, entry=entry, floor=floor):
      try:
        err = (
          relative_error(fn(*args_list[0]), want) if want is not None else None
        )
        seconds = bench(fn, args_list)
        entry['variants'][name] = {'kind': kind, 's': seconds, 'err': err}
        print(
          f'  {kind:<6} {name:<34} {seconds * 1e6:9.1f} us'
          f'  {floor / seconds:6.1%} of fwd floor  err {err}',
          flush=True,
        )
      except Exception as e:  # noqa: BLE001
        entry['variants'][name] = {'kind': kind, 'error': repr(e)[:500]}
        print(f'  {kind} {name} FAILED: {repr(e)[:300]}', flush=True)
        traceback.print_exc(limit=2)

    print(
      f'size B={batch} P={positions}: floor {floor * 1e6:.1f} us', flush=True
    )
    argsets = [(x, wi, b) for x, wi in zip(xs, ws, strict=True)]
    einsum = jax.jit(lambda x, w, b: jnp.einsum('bpd,pdk->bpk', x, w) + b)
    record('xla einsum', 'fwd', einsum, argsets, want_y)
    einsum_hi = jax.jit(
      lambda x, w, b: jnp.einsum('bpd,pdk->bpk', x, w, precision=hi) + b
    )
    record('xla einsum HIGHEST', 'fwd', einsum_hi, argsets, want_y)
    mulsum = jax.jit(lambda x, w, b: (x[..., None] * w).sum(-2) + b)
    record('xla multiply-sum', 'fwd', mulsum, argsets, want_y)
    transposed = [
      (jnp.swapaxes(x, 0, 1), wi, b) for x, wi in zip(xs, ws, strict=True)
    ]
    pre = jax.jit(lambda x, w, b: jnp.einsum('pbd,pdk->pbk', x, w) + b[:, None])
    record(
      'xla einsum on (P,B,D) input',
      'fwd',
      pre,
      transposed,
      np.swapaxes(want_y, 0, 1),
    )
    for rows, inner, warps in FORWARD_BLOCKS:
      for precision, tag in ((None, ''), (hi, ' HIGHEST'))[
        : 1 + (rows == 64 and inner == 128)
      ]:
        fn = jax.jit(
          lambda x, w, b, r=rows, i=inner, n=warps, p=precision: pallas.forward(
            x, w, b, precision=p, block_rows=r, block_in=i, warps=n
          )
        )
        record(
          f'pallas {rows}x{inner} w{warps}{tag}', 'fwd', fn, argsets, want_y
        )
    gsets = list(zip(xs, gl, strict=True))
    kgrad = jax.jit(lambda x, g: jnp.einsum('bpd,bpk->pdk', x, g))
    record('xla einsum', 'dW', kgrad, gsets, want_gw)
    vjp = jax.jit(
      lambda x, w, g: jax.vjp(lambda w: jnp.einsum('bpd,pdk->bpk', x, w), w)[1](
        g
      )[0]
    )
    record(
      'xla vjp of einsum',
      'dW',
      vjp,
      list(zip(xs, ws, gl, strict=True)),
      want_gw,
    )
    for rows, inner, warps in KERNEL_GRAD_BLOCKS:
      fn = jax.jit(
        lambda x, g, r=rows, i=inner, n=warps: pallas.kernel_gradient(
          x, g, block_rows=r, block_in=i, warps=n
        )
      )
      record(f'pallas {rows}x{inner} w{warps}', 'dW', fn, gsets, want_gw)
    gs = list(zip(gl, ws, strict=True))
    xgrad = jax.jit(lambda g, w: jnp.einsum('bpk,pdk->bpd', g, w))
    record('xla einsum', 'dx', xgrad, gs, want_gx)
    for rows, inner, warps in INPUTS_GRAD_BLOCKS:
      fn = jax.jit(
        lambda g, w, r=rows, i=inner, n=warps: pallas.inputs_gradient(
          g, w, block_rows=r, block_in=i, warps=n
        )
      )
      record(f'pallas {rows}x{inner} w{warps}', 'dx', fn, gs, want_gx)
    if (batch, positions) == (64, 1024):
      for name, fn, fargs in (
        ('forward_einsum', einsum, argsets[0]),
        ('kernel_grad_einsum', kgrad, gsets[0]),
        ('vjp_einsum', vjp, (xs[0], w, g)),
      ):
        text = fn.lower(*fargs).compile().as_text()
        with open(os.path.join(args.out, f'hlo_{name}.txt'), 'w') as f:
          f.write(text)
  with open(os.path.join(args.out, 'probe.json'), 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
