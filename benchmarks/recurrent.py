"""fd.LSTM and fd.GRU against Keras 3 and Flax, in one interleaved run.

Times the forward pass and an optax training step (forward, backward and
Adam update, parameters and optimizer state donated; the loss is the mean
squared error of every step's output) of

- ``fd.LSTM`` and ``fd.GRU`` (``return_sequences=True``),
- Keras 3's ``keras.layers.LSTM`` and ``GRU`` on the JAX backend
  (``stateless_call`` under ``jax.jit``),
- Flax's ``nn.RNN(nn.OptimizedLSTMCell)`` and ``nn.RNN(nn.GRUCell)``,

in float32, without a mask and (flax_dense and Keras; Flax's cells take
none) with a random right-padding mask: each sequence keeps its first
``T/2`` to ``T`` steps. Every implementation runs the same weights, drawn
in Keras's layout (``kernel (D, 4U)``, ``recurrent_kernel (U, 4U)``,
``bias (4U,)``; the GRU's ``(D, 3U)``, ``(U, 3U)``, ``(2, 3U)``) and
rearranged for Flax's cells, and its outputs and gradients (Flax's taken
through that rearrangement, so in Keras's layout) are checked against
Keras's. Times come from ``timing.py`` beside this script: in turn within
each round, after warm-up rounds, medians kept with each time over
flax_dense's with the same mask in the same round (``*_over_baseline``).

The goals of the recurrent layers (project issue 23): at least 1.5 times
Keras 3's speed, no slower than Flax's cells, and a mask costing at most
10%. They are reported for the record; this script asserts none of them.

Runs against the ``flax_dense`` it imports (install the checkout, or put
it on ``PYTHONPATH``); without ``fd.LSTM`` and ``fd.GRU`` the flax_dense
rows are skipped, with a message, and times are compared with Keras's.

Usage::

  python benchmarks/recurrent.py            # B=64, T=100, D=64, U=128
  python benchmarks/recurrent.py --quick    # tiny sizes, < 1 min

Prints a table and writes ``recurrent.json`` under ``--out`` (default
``benchmarks/results``).
"""

import functools
import os
import sys

os.environ.setdefault('KERAS_BACKEND', 'jax')

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import flax_dense as fd  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402
import timing  # noqa: E402
from bench_common import relative_error  # noqa: E402

FULL = {
  'batch': 64,
  'steps': 100,
  'in_features': 64,
  'units': 128,
  'repeats': 20,
  'warmups': 2,
  'calls': 1,
}
QUICK = {
  'batch': 2,
  'steps': 5,
  'in_features': 3,
  'units': 4,
  'repeats': 2,
  'warmups': 1,
  'calls': 1,
}
# On an accelerator a step's scan takes about a millisecond: time a few
# calls back to back so that Python's dispatch weighs less.
ACCELERATOR = {'calls': 5}

CELLS = ('LSTM', 'GRU')
FLAX_CELLS = {'LSTM': nn.OptimizedLSTMCell, 'GRU': nn.GRUCell}
GATES = {'LSTM': 4, 'GRU': 3}
WEIGHTS = ('kernel', 'recurrent_kernel', 'bias')
MASKED = ' masked'
GOALS = {
  'keras_over_fd_at_least': 1.5,
  'flax_over_fd_at_least': 1.0,
  'mask_cost_at_most': 1.1,
}


def fd_name(cell):
  return f'fd.{cell}'


def keras_name(cell):
  return f'keras {cell}'


def flax_name(cell):
  return f'flax RNN({FLAX_CELLS[cell].__name__})'


def fd_missing():
  """Why flax_dense's rows cannot run, or ``None`` when they can."""
  missing = [cell for cell in CELLS if not hasattr(fd, cell)]
  if missing:
    return (
      f'flax_dense {fd.__version__} at {os.path.dirname(fd.__file__)} has'
      f' no {" or ".join("fd." + cell for cell in missing)}: its rows are'
      ' skipped and times are compared with Keras 3'
    )
  return None


def keras_weights(cell, in_features, units, seed=0):
  """Random weights in Keras's layout (``kernel``, ``recurrent_kernel``,
  ``bias``), scaled so the activations stay in their sensitive range."""
  rng = np.random.default_rng(seed)
  width = GATES[cell] * units
  bias_shape = (2, width) if cell == 'GRU' else (width,)
  weights = {
    'kernel': rng.uniform(-1, 1, (in_features, width)) / np.sqrt(in_features),
    'recurrent_kernel': rng.normal(0, 1 / np.sqrt(units), (units, width)),
    'bias': rng.normal(0, 0.1, bias_shape),
  }
  return {name: jnp.asarray(w, jnp.float32) for name, w in weights.items()}


def flax_params(cell, weights):
  """Keras-layout ``weights`` as the params of Flax's ``nn.RNN`` of the cell.

  Flax's LSTM gates (i, f, g, o) are Keras's (i, f, c, o), the bias on the
  recurrent side. Flax's GRU gates (r, z, n) are Keras's (r, z, h) with
  ``reset_after``; the input and recurrent biases of r and z, always
  summed, are one bias there.
  """
  gates = GATES[cell]
  kernels = jnp.split(weights['kernel'], gates, axis=-1)
  recurrent = jnp.split(weights['recurrent_kernel'], gates, axis=-1)
  if cell == 'LSTM':
    biases = jnp.split(weights['bias'], gates)
    params = {}
    for gate, kernel, recurrent_kernel, bias in zip(
      'ifgo', kernels, recurrent, biases, strict=True
    ):
      params[f'i{gate}'] = {'kernel': kernel}
      params[f'h{gate}'] = {'kernel': recurrent_kernel, 'bias': bias}
  else:
    (input_z, input_r, input_h), (hidden_z, hidden_r, hidden_h) = (
      jnp.split(row, gates) for row in weights['bias']
    )
    (kernel_z, kernel_r, kernel_h), (recurrent_z, recurrent_r, recurrent_h) = (
      kernels,
      recurrent,
    )
    params = {
      'iz': {'kernel': kernel_z, 'bias': input_z + hidden_z},
      'ir': {'kernel': kernel_r, 'bias': input_r + hidden_r},
      'in': {'kernel': kernel_h, 'bias': input_h},
      'hz': {'kernel': recurrent_z},
      'hr': {'kernel': recurrent_r},
      'hn': {'kernel': recurrent_h, 'bias': hidden_h},
    }
  return {'cell': params}


def make_fd(cell, units, steps, in_features):
  layer = getattr(fd, cell)(units, return_sequences=True)

  def apply(params, x, mask):
    return layer.apply({'params': params}, x, mask)

  return apply


def make_keras(cell, units, steps, in_features):
  import keras

  layer = getattr(keras.layers, cell)(units, return_sequences=True)
  layer.build((None, steps, in_features))
  names = tuple(v.path.split('/')[-1] for v in layer.trainable_variables)
  assert names == WEIGHTS, names
  # The seed generator's state: unused without dropout.
  non_trainable = [v.value for v in layer.non_trainable_variables]

  def apply(params, x, mask):
    outputs, _ = layer.stateless_call(
      [params[name] for name in WEIGHTS], non_trainable, x, mask=mask
    )
    return outputs

  return apply


def make_flax(cell, units, steps, in_features):
  layer = nn.RNN(FLAX_CELLS[cell](units))

  def apply(params, x, mask):
    assert mask is None, 'nn.RNN takes no mask'
    return layer.apply({'params': params}, x)

  return apply


def loss_fn(apply, params, x, mask, targets):
  return jnp.mean((apply(params, x, mask) - targets) ** 2)


def problem(config, seed=0):
  """Inputs, a right-padding mask and targets ``(B, T, U)``."""
  batch, steps = config['batch'], config['steps']
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, steps, config['in_features']))
  lengths = rng.integers(max(steps // 2, 1), steps + 1, batch)
  mask = np.arange(steps) < lengths[:, None]
  targets = rng.uniform(-0.5, 0.5, (batch, steps, config['units']))
  return (
    jnp.asarray(x, jnp.float32),
    jnp.asarray(mask),
    jnp.asarray(targets, jnp.float32),
  )


def rows(cell, with_fd):
  """``{name: (make, params from Keras's weights, masked)}`` of ``cell``."""
  keep = lambda weights: weights  # noqa: E731
  to_flax = functools.partial(flax_params, cell)
  rows = {}
  for masked in (False, True):
    suffix = MASKED if masked else ''
    if with_fd:
      rows[fd_name(cell) + suffix] = (make_fd, keep, masked)
    rows[keras_name(cell) + suffix] = (make_keras, keep, masked)
    if not masked:
      rows[flax_name(cell)] = (make_flax, to_flax, masked)
  return rows


def keras_layout_gradients(loss, convert, weights, batch):
  """Gradients of ``loss(convert(weights), *batch)`` in Keras's layout.

  For Flax's cells, differentiating through :func:`flax_params` maps their
  gradients back onto Keras's weights.
  """
  return jax.jit(jax.grad(lambda w: loss(convert(w), *batch)))(weights)


def bench_cell(cell, config, with_fd):
  """Times every implementation of ``cell``, interleaved; checks them."""
  units, steps = config['units'], config['steps']
  in_features = config['in_features']
  x, mask, targets = problem(config)
  weights = keras_weights(cell, in_features, units)
  optimizer = optax.adam(1e-3)
  rounds, records, checks = {}, {}, {}
  baselines = {}
  for name, (make, convert, masked) in rows(cell, with_fd).items():
    suffix = MASKED if masked else ''
    baselines[name] = (fd_name(cell) if with_fd else keras_name(cell)) + suffix
    row_mask = mask if masked else None
    apply = make(cell, units, steps, in_features)
    loss = functools.partial(loss_fn, apply)
    params = convert(weights)
    forward, forward_compile_s = timing.compiled(apply, params, x, row_mask)
    state = (jax.tree.map(jnp.copy, params), optimizer.init(params))
    step, step_compile_s = timing.compiled(
      bench_common.train_step(loss, optimizer),
      *state,
      x,
      row_mask,
      targets,
      donate_argnums=(0, 1),
    )
    gradients = keras_layout_gradients(
      loss, convert, weights, (x, row_mask, targets)
    )
    checks[name] = (forward(params, x, row_mask), gradients, suffix)
    records[name] = {
      'masked': masked,
      'baseline': baselines[name],
      'compile_forward_s': forward_compile_s,
      'compile_step_s': step_compile_s,
    }
    rounds[name] = timing.forward_and_step(
      forward,
      (params, x, row_mask),
      step,
      state,
      (x, row_mask, targets),
      calls=config['calls'],
    )
  for name, (outputs, gradients, suffix) in checks.items():
    want_outputs, want_gradients, _ = checks[keras_name(cell) + suffix]
    records[name]['output_relative_error'] = relative_error(
      outputs, want_outputs
    )
    records[name]['gradient_relative_error'] = max(
      relative_error(gradients[k], want_gradients[k]) for k in WEIGHTS
    )
  samples = timing.interleave(rounds, config['repeats'], config['warmups'])
  summaries = timing.summarize(samples, baselines)
  for name, record in records.items():
    record.update(summaries[name])
  entry = {'implementations': records, 'mask_cost': {}}
  for family in (fd_name(cell), keras_name(cell)):
    if family in samples:
      entry['mask_cost'][family] = {
        program: timing.paired_ratio(
          samples[family + MASKED][program], samples[family][program]
        )
        for program in ('forward', 'step')
      }
  if with_fd:
    entry['goals'] = goals(cell, entry)
  return entry


def goals(cell, entry):
  """The issue's goals against this run's paired ratios."""
  records = entry['implementations']
  result = {}
  for program in ('forward', 'step'):
    keras = records[keras_name(cell)][f'{program}_over_baseline']
    flax = records[flax_name(cell)][f'{program}_over_baseline']
    mask_cost = entry['mask_cost'][fd_name(cell)][program]
    result[program] = {
      'keras_over_fd': keras,
      'keras_goal_met': keras >= GOALS['keras_over_fd_at_least'],
      'flax_over_fd': flax,
      'flax_goal_met': flax >= GOALS['flax_over_fd_at_least'],
      'mask_cost': mask_cost,
      'mask_goal_met': mask_cost <= GOALS['mask_cost_at_most'],
    }
  return result


def print_table(results):
  header = (
    f'{"implementation":<32} {"fwd ms":>9} {"step ms":>9} {"fwd /base":>9}'
    f' {"step /base":>10} {"cpu f/b":>7} {"cpu s/b":>7} {"spread":>7}'
    f' {"compile s":>9} {"out err":>8}'
    f' {"grad err":>8}'
  )
  print(header)
  print('-' * len(header))
  for cell, entry in results['cells'].items():
    for name, r in entry['implementations'].items():
      print(
        f'{name:<32} {r["forward_median_s"] * 1e3:9.3f}'
        f' {r["step_median_s"] * 1e3:9.3f}'
        f' {r["forward_over_baseline"]:9.3f} {r["step_over_baseline"]:10.3f}'
        f' {r["forward_cpu_over_baseline"]:7.3f}'
        f' {r["step_cpu_over_baseline"]:7.3f}'
        f' {max(r["forward_spread"], r["step_spread"]):7.1%}'
        f' {r["compile_forward_s"] + r["compile_step_s"]:9.2f}'
        f' {r["output_relative_error"]:8.1e}'
        f' {r["gradient_relative_error"]:8.1e}'
      )
    for family, cost in entry['mask_cost'].items():
      print(
        f'  {cell}: a mask costs {family} x{cost["forward"]:.3f} forward,'
        f' x{cost["step"]:.3f} step'
      )
    for program, goal in entry.get('goals', {}).items():
      print(
        f'  {cell} {program}: Keras / fd {goal["keras_over_fd"]:.2f}'
        f' (goal >= {GOALS["keras_over_fd_at_least"]}),'
        f' Flax / fd {goal["flax_over_fd"]:.2f}'
        f' (goal >= {GOALS["flax_over_fd_at_least"]}),'
        f' mask x{goal["mask_cost"]:.3f}'
        f' (goal <= {GOALS["mask_cost_at_most"]})'
      )
  print(
    "(/base: median over rounds of the time over the baseline's in the same"
    ' round, the baseline being flax_dense with the same mask, or Keras'
    " without flax_dense's rows; cpu f/b, s/b: the same for the process's"
    ' CPU time, forward and step; spread: the'
    ' larger interquartile range over median of forward and step; errors'
    ' relative to Keras 3)'
  )
  if results.get('skipped'):
    print(results['skipped'])


def main(argv=None):
  args = bench_common.parser(
    __doc__,
    quick_help='tiny sizes, under a minute',
    out_help='directory for recurrent.json',
    repeats_help='timed rounds per cell',
  ).parse_args(argv)
  full = FULL if jax.default_backend() == 'cpu' else {**FULL, **ACCELERATOR}
  config = bench_common.config(args, full, QUICK)
  info = bench_common.machine_info(packages=('keras',))
  skipped = fd_missing()
  if skipped:
    print(skipped, flush=True)
  results = {
    **bench_common.new_results(config, argv, info),
    'flax_dense': os.path.dirname(fd.__file__),
    'skipped': skipped,
    'goals': GOALS,
    'cells': {},
  }
  for cell in CELLS:
    print(f'{cell} ...', flush=True)
    results['cells'][cell] = bench_cell(cell, config, skipped is None)
  print_table(results)
  bench_common.save_results(results, args.out, 'recurrent')
  return results


if __name__ == '__main__':
  main()
