"""LocallyConnected1D against Flax's ConvLocal, in one interleaved run.

Times the forward pass and an optax training step (forward, backward and
Adam update, parameters and optimizer state donated) of

- ``fd.LocallyConnected1D`` (with ``kernel_size == strides == 1``
  ``PerPositionDense``'s batched paths, otherwise ``jax.vmap`` of the
  per-example core),
- ``jax.vmap(fd.functional.locally_connected_1d)`` (the per-example core
  mapped over the batch, without the module),
- the windows of the whole batch sent through ``PerPositionDense``'s
  batched paths (chunks of positions on CPU), the alternative the layer
  takes only when the windows are its inputs,
- Flax ``nn.ConvLocal`` (``lax.conv_general_dilated_local``),

at a few sizes, all with the same weights (ConvLocal orders a window's
features channel-major, so its kernel is ours with the two window axes
swapped) and checked to give the same outputs and gradients.
They are timed with ``timing.py`` (in turn within each round, after a
warm-up round; medians, and each time over ``fd.LocallyConnected1D``'s in
the same round), so other processes sharing the CPU slow all alike.

Usage::

  python benchmarks/locally_connected.py            # full run, ~3 min
  python benchmarks/locally_connected.py --quick    # tiny sizes, < 30 s

Prints a table and writes ``locally_connected.json`` under ``--out``
(default ``benchmarks/results``).
"""

import functools
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flax_dense as fd
from flax_dense._src.ops.dense import per_position_dense_layer
from flax_dense._src.ops.locally_connected import windows as windows_of

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402
import timing  # noqa: E402
from bench_common import relative_error  # noqa: E402

SIZE_KEYS = (
  'batch',
  'steps',
  'in_features',
  'filters',
  'kernel_size',
  'strides',
)
OURS = 'fd.LocallyConnected1D'
#: Sizes as (batch, steps, in_features, filters, kernel_size, strides).
FULL = {
  'sizes': [
    (32, 128, 64, 64, 3, 1),
    (64, 256, 128, 128, 5, 2),
    (128, 64, 256, 64, 1, 1),
  ],
  'repeats': 15,
}
QUICK = {
  'sizes': [(4, 16, 8, 8, 3, 1), (8, 32, 16, 8, 5, 2)],
  'repeats': 3,
}


def identity(outputs):
  return outputs


def conv_local_kernel(kernel, kernel_size):
  """Our ``(L_out, k * D, F)`` kernel (feature ``j * D + d``) for ConvLocal.

  ``lax.conv_general_dilated_local`` flattens a window channel-major
  (feature ``d * k + j``).
  """
  length, window_features, filters = kernel.shape
  in_features = window_features // kernel_size
  kernel = kernel.reshape(length, kernel_size, in_features, filters)
  return kernel.transpose(0, 2, 1, 3).reshape(kernel.shape[0], -1, filters)


def implementations(kernel_size, strides):
  """``{name: (apply(params, x), params from ours)}`` of every peer."""

  def fd_apply(params, x):
    layer = fd.LocallyConnected1D(
      params['kernel'].shape[-1], kernel_size, strides=strides
    )
    return layer.apply({'params': params}, x)

  def vmap_apply(params, x):
    return jax.vmap(
      fd.functional.locally_connected_1d, in_axes=(0, None, None, None)
    )(x, params['kernel'], params['bias'], strides)

  def windows_apply(params, x):
    windows = windows_of(x, kernel_size, strides, 'channels_last')
    return per_position_dense_layer(
      windows, params['kernel'], params['bias'], identity
    )

  def conv_local_apply(params, x):
    layer = nn.ConvLocal(
      params['kernel'].shape[-1],
      kernel_size=(kernel_size,),
      strides=(strides,),
      padding='VALID',
    )
    return layer.apply({'params': params}, x)

  def to_conv_local(params):
    return {
      'kernel': conv_local_kernel(params['kernel'], kernel_size),
      'bias': params['bias'],
    }

  return {
    OURS: (fd_apply, lambda p: p),
    'vmap(locally_connected_1d)': (vmap_apply, lambda p: p),
    'windows -> PerPositionDense path': (windows_apply, lambda p: p),
    'flax nn.ConvLocal': (conv_local_apply, to_conv_local),
  }


def loss_fn(apply, params, x, targets):
  return jnp.mean((apply(params, x) - targets) ** 2)


def problem(batch, steps, in_features, filters, kernel_size, strides):
  rng = np.random.default_rng(0)
  length = (steps - kernel_size) // strides + 1
  bound = np.sqrt(6 / (kernel_size * in_features + filters))
  params = {
    'kernel': jnp.asarray(
      rng.uniform(
        -bound, bound, (length, kernel_size * in_features, filters)
      ).astype(np.float32)
    ),
    'bias': jnp.asarray(rng.normal(0, 0.1, (length, filters)), jnp.float32),
  }
  x = jnp.asarray(rng.normal(size=(batch, steps, in_features)), jnp.float32)
  targets = jnp.asarray(rng.normal(size=(batch, length, filters)), jnp.float32)
  return params, x, targets


def bench_size(size, repeats):
  """Times every implementation at one size, interleaved; checks outputs."""
  batch, steps, in_features, filters, kernel_size, strides = size
  params, x, targets = problem(*size)
  optimizer = optax.adam(1e-3)
  peers = implementations(kernel_size, strides)
  rounds, records = {}, {}
  reference_out = reference_grads = None
  for name, (apply, convert) in peers.items():
    peer_params = convert(params)
    loss = functools.partial(loss_fn, apply)
    forward, forward_compile_s = timing.compiled(apply, peer_params, x)
    state = (jax.tree.map(jnp.copy, peer_params), optimizer.init(peer_params))
    step, step_compile_s = timing.compiled(
      bench_common.train_step(loss, optimizer),
      *state,
      x,
      targets,
      donate_argnums=(0, 1),
    )
    outputs = forward(peer_params, x)
    grads = jax.grad(loss)(peer_params, x, targets)
    if name == 'flax nn.ConvLocal':  # back to our kernel layout to compare
      length = grads['kernel'].shape[0]
      grads = dict(
        grads,
        kernel=grads['kernel']
        .reshape(length, in_features, kernel_size, filters)
        .transpose(0, 2, 1, 3)
        .reshape(length, -1, filters),
      )
    if reference_out is None:
      reference_out, reference_grads = outputs, grads
    records[name] = {
      'compile_s': forward_compile_s + step_compile_s,
      'output_relative_error': relative_error(outputs, reference_out),
      'gradient_relative_error': max(
        relative_error(grads[k], reference_grads[k]) for k in grads
      ),
    }
    rounds[name] = timing.forward_and_step(
      forward, (peer_params, x), step, state, (x, targets)
    )
  samples = timing.interleave(rounds, repeats, warmups=1)
  for name, summary in timing.summarize(samples, OURS).items():
    records[name].update(summary)
  return records


def print_table(results):
  print(
    f'{"B, L, D, F, k, s":<26} {"implementation":<34} {"forward ms":>10}'
    f' {"/fd":>6} {"step ms":>9} {"/fd":>6} {"rel err":>8}'
  )
  for entry in results['sizes']:
    size = ', '.join(str(entry[key]) for key in SIZE_KEYS)
    for name, record in entry['implementations'].items():
      print(
        f'{size:<26} {name:<34} {record["forward_median_s"] * 1e3:>10.3f}'
        f' {record["forward_over_baseline"]:>6.2f}'
        f' {record["step_median_s"] * 1e3:>9.3f}'
        f' {record["step_over_baseline"]:>6.2f}'
        f' {record["output_relative_error"]:>8.1e}'
      )


def main(argv=None):
  args = bench_common.parser(
    __doc__,
    quick_help='tiny sizes, under 30 seconds',
    out_help='directory for locally_connected.json',
    repeats_help='timed rounds per size',
  ).parse_args(argv)
  config = bench_common.config(args, FULL, QUICK)
  results = {
    **bench_common.new_results(config, argv, bench_common.machine_info()),
    'sizes': [],
  }
  for size in config['sizes']:
    print(f'size {size} ...', flush=True)
    results['sizes'].append(
      {
        **dict(zip(SIZE_KEYS, size, strict=True)),
        'implementations': bench_size(size, config['repeats']),
      }
    )
  print_table(results)
  bench_common.save_results(results, args.out, 'locally_connected')
  return results


if __name__ == '__main__':
  main()
