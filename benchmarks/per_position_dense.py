"""PerPositionDense against its peers, in one interleaved run on this machine.

Times the forward pass and a full optax training step (forward, backward
and Adam update, parameters and optimizer state donated) of

- ``fd.PerPositionDense`` (the path chosen automatically for the backend
  and shape) and ``jax.vmap(fd.functional.per_position_dense)`` (the
  per-example reference, what the layer compiles to without the fast path),
- ``fd.nnx.PerPositionDense`` with ``nnx.Optimizer``, in NNX's two ways:
  the model and optimizer passed to ``nnx.jit`` functions (``fd.nnx
  nnx.jit``), and the functional API (``fd.nnx split/merge``:
  ``nnx.split`` once, ``jax.jit`` functions of the state that call
  ``nnx.merge`` inside, the training state donated),
- Keras 3 ``EinsumDense('abc,bcd->abd', bias_axes='bd')`` on the JAX backend
  (``stateless_call`` under ``jax.jit``),
- Flax ``nn.Einsum``, Flax ``nn.ConvLocal(kernel_size=(1,))``, ``jax.vmap``
  of ``nn.Dense`` over the positions, and a Python for-loop over positions
  (run and compile time),

all with the same parameters (every one of them stores a ``(P, D, K)``
kernel and a ``(P, K)`` bias) and checked to give the same outputs and
gradients. Implementations are timed with ``timing.py`` beside this
script: in turn within each repeat (in a new order each repeat), after
warm-ups, medians kept, so that other processes sharing the CPU slow all
of them alike; each time over ``fd.PerPositionDense``'s in the same repeat
is kept too (``*_over_baseline``). It also measures
the machine (memory bandwidth, matmul rate) and reports each time as a
fraction of the roofline
``max(bytes / bandwidth, flops / matmul rate)``, plus compile time against
P and bfloat16 speed and accuracy.

On a GPU it adds the peer ``pallas kernels`` (``pallas_per_position.py``
beside this script) and times device work rather than Python dispatch:
each timed program makes several calls, each on its own arrays (see
``repeated_programs``), and the for-loop runs only up to P = 64.

Usage::

  python benchmarks/per_position_dense.py            # full run, ~10 min
  python benchmarks/per_position_dense.py --quick    # tiny sizes, < 1 min
  python benchmarks/per_position_dense.py --sizes 64x1024 256x1024 \
    --name per_position_dense_nnx                    # only these (B, P)

Prints a table and writes ``per_position_dense.json`` and
``per_position_dense.png`` (or ``--name`` ``.json`` and ``.png``) under
``--out`` (default ``benchmarks/results``).
"""

import argparse
import functools
import math
import os
import sys

os.environ.setdefault('KERAS_BACKEND', 'jax')

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import flax_dense as fd  # noqa: E402
from flax_dense._src.ops import dense_kernels  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402
import timing  # noqa: E402
from bench_common import relative_error  # noqa: E402

FULL = {
  'batch_sizes': (8, 64, 256),
  'positions': (64, 256, 1024, 4096),
  'base_batch': 64,
  'base_positions': 1024,
  'in_features': 256,
  'features': 10,
  'repeats': 5,
  'warmups': 2,
  'loop_max_positions': 256,
  'bandwidth_bytes': 256 << 20,
  'matmul_size': 2048,
  'calls': 1,
  'calls_in_program': 1,
}
QUICK = {
  'batch_sizes': (2,),
  'positions': (4, 8),
  'base_batch': 2,
  'base_positions': 8,
  'in_features': 16,
  'features': 4,
  'repeats': 2,
  'warmups': 1,
  'loop_max_positions': 8,
  'bandwidth_bytes': 4 << 20,
  'matmul_size': 256,
  'calls': 1,
  'calls_in_program': 1,
}
# On an accelerator a call takes tens of microseconds, less than the Python
# dispatch of a program: time programs of several calls (see
# `repeated_programs`), run back to back, and measure the machine at size.
ACCELERATOR = {
  'calls': 10,
  'calls_in_program': 4,
  'loop_max_positions': 64,
  'bandwidth_bytes': 1 << 30,
  'matmul_size': 8192,
}

OURS = 'fd.PerPositionDense'
NNX_SPLIT = 'fd.nnx split/merge'
NNX_JIT = 'fd.nnx nnx.jit'
REFERENCE = 'vmap(per_position_dense)'
KERAS = 'keras EinsumDense'
LOOP = 'python for-loop'
BYTES = 4  # float32
# Idle seconds before each timed program. On the CPU a program timed right
# after a multi-threaded one (the einsum peers' transposes) measured up to
# 1.3x slower, wall and CPU time; after 50 ms of idle time two identical
# programs measured within 3% of each other. Calls well under a millisecond
# then time as cold calls, alike for every implementation: (8, 64) forward
# 0.52 ms against 0.29 back to back.
SETTLE_S = 0.05


# Implementations: ``make(positions, in_features, features)`` returns
# ``apply(params, x)`` with params ``{'kernel': (P, D, K), 'bias': (P, K)}``.


def make_ours(positions, in_features, features, dtype=jnp.float32):
  layer = fd.PerPositionDense(features, dtype=dtype, param_dtype=dtype)
  return lambda params, x: layer.apply({'params': params}, x)


def make_reference(positions, in_features, features):
  def apply(params, x):
    return jax.vmap(fd.functional.per_position_dense, in_axes=(0, None, None))(
      x, params['kernel'], params['bias']
    )

  return apply


def make_keras(positions, in_features, features):
  import keras

  layer = keras.layers.EinsumDense(
    'abc,bcd->abd', output_shape=(positions, features), bias_axes='bd'
  )
  layer.build((None, positions, in_features))
  names = [v.path.split('/')[-1] for v in layer.trainable_variables]
  assert names == ['kernel', 'bias'], names

  def apply(params, x):
    outputs, _ = layer.stateless_call([params['kernel'], params['bias']], [], x)
    return outputs

  return apply


def make_flax_einsum(positions, in_features, features):
  layer = nn.Einsum(
    shape=(positions, in_features, features), einsum_str='bpd,pdk->bpk'
  )
  return lambda params, x: layer.apply({'params': params}, x)


def make_conv_local(positions, in_features, features):
  layer = nn.ConvLocal(features, kernel_size=(1,))
  return lambda params, x: layer.apply({'params': params}, x)


def make_vmap_dense(positions, in_features, features):
  dense = nn.Dense(features)

  def one_position(x, kernel, bias):
    return dense.apply({'params': {'kernel': kernel, 'bias': bias}}, x)

  def apply(params, x):
    return jax.vmap(one_position, in_axes=(1, 0, 0), out_axes=1)(
      x, params['kernel'], params['bias']
    )

  return apply


def make_loop(positions, in_features, features):
  def apply(params, x):
    kernel, bias = params['kernel'], params['bias']
    return jnp.stack(
      [x[:, p] @ kernel[p] + bias[p] for p in range(positions)], axis=1
    )

  return apply


def make_pallas(positions, in_features, features):
  import pallas_per_position  # beside this script

  def apply(params, x):
    return pallas_per_position.per_position_dense(
      x, params['kernel'], params['bias']
    )

  return apply


def loss_fn(apply, params, x, labels):
  # Cross-entropy against one-hot labels: the integer-label form's gather
  # turns into a scatter that XLA constant-folds for seconds at large B * P,
  # which would blur the compile times measured here.
  logits = apply(params, x).astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  return optax.softmax_cross_entropy(logits, targets).mean()


def make_step(apply, optimizer):
  """An optax training step of :func:`loss_fn` for the implementation ``apply``.

  The step maps ``(params, opt_state, x, labels)`` to ``(params, opt_state,
  loss)``.
  """
  return bench_common.train_step(functools.partial(loss_fn, apply), optimizer)


def replicas(params, x, labels, count):
  """``count`` parameter sets and batches, each its own arrays.

  The first replica is ``params`` and ``x`` themselves; the others are
  scaled copies.
  """
  scales = [1 + i * 1e-6 for i in range(1, count)]
  param_sets = [params] + [
    jax.tree.map(lambda a, s=s: a * s, params) for s in scales
  ]
  return param_sets, [x] + [x * s for s in scales], [labels] * count


def forwards_and_steps(apply, step):
  """Python functions that call ``apply`` / ``step`` once per replica.

  ``forwards(param_sets, xs)`` applies the layer to every replica;
  ``steps(*state, xs, labels)`` runs ``step(*state, x, y) -> (*state,
  loss)`` on each batch in turn and returns ``(*state, loss)``.
  """

  def forwards(param_sets, xs):
    return [apply(p, x) for p, x in zip(param_sets, xs, strict=True)]

  def steps(*args):
    *state, xs, labels = args
    for x, y in zip(xs, labels, strict=True):
      *state, loss = step(*state, x, y)
    return *state, loss

  return forwards, steps


def repeated_programs(apply, step, state_size):
  """Programs that call ``apply`` / ``step`` once per replica.

  On an accelerator one call of the layer is shorter than the Python
  dispatch of a program, so the device time per call is measured inside
  one program: ``forwards(param_sets, xs)`` applies the layer to every
  replica, ``steps(*state, xs, labels)`` runs one training step on each
  batch in turn, its ``state_size`` state arguments donated. Every call
  reads its own arrays, so neither the cache nor XLA can share work
  between them.
  """
  forwards, steps = forwards_and_steps(apply, step)
  return jax.jit(forwards), jax.jit(
    steps, donate_argnums=tuple(range(state_size))
  )


def timing_programs(apply, step, forward, train_step, data, state_size=2):
  """``(forward, forward_args, train_step, step_data, calls)`` to time.

  ``data`` is :func:`replicas`' output (or the same lists of other
  parameter containers). With one replica these are the compiled
  single-call ``forward`` and ``train_step``; with more, the
  :func:`repeated_programs` of ``apply`` and ``step`` over all of them.
  ``calls`` is the number of calls of the layer in one program.
  """
  param_sets, xs, labels = data
  if len(xs) == 1:
    return forward, (param_sets[0], xs[0]), train_step, (xs[0], labels[0]), 1
  forwards, steps = repeated_programs(apply, step, state_size)
  return forwards, (param_sets, xs), steps, (xs, labels), len(xs)


def timing_round(programs, state, config):
  """The ``timing.interleave`` round of :func:`timing_programs`' programs.

  Times are per call of the layer, ``SETTLE_S`` idle before each program;
  the round keeps the training ``state`` its steps leave.
  """
  forward, forward_args, train_step, step_data, calls_in_program = programs
  return timing.forward_and_step(
    forward,
    forward_args,
    train_step,
    state,
    step_data,
    calls=config['calls'],
    calls_in_program=calls_in_program,
    settle_s=SETTLE_S,
  )


def peer_run(make, params, x, labels, optimizer, data, check_gradients):
  """Compiled programs of a peer ``make(P, D, K) -> apply(params, x)``.

  Every run builder takes the problem, the optax ``optimizer`` and
  ``data``, the replicas each program calls the layer on (see
  :func:`timing_programs`), and returns ``(programs, state, outputs,
  gradients, forward compile s, step compile s)``: the programs to time,
  the training state they start from, the forward outputs on ``params``
  and ``x``, and the gradients in ``kernel`` and ``bias`` of
  :func:`loss_fn` (``None`` without ``check_gradients``).
  """
  apply = make(*params['kernel'].shape)
  forward, forward_compile = timing.compiled(apply, params, x)
  step = make_step(apply, optimizer)
  state = (jax.tree.map(jnp.copy, params), optimizer.init(params))
  train_step, step_compile = timing.compiled(
    step, *state, x, labels, donate_argnums=(0, 1)
  )
  gradients = check_gradients and jax.jit(
    jax.grad(functools.partial(loss_fn, apply))
  )(params, x, labels)
  programs = timing_programs(apply, step, forward, train_step, data)
  return (
    programs,
    state,
    forward(params, x),
    gradients,
    forward_compile,
    (step_compile),
  )


def peer(make):
  """The run builder of the peer ``make`` (see :func:`peer_run`)."""
  return functools.partial(peer_run, make)


def nnx_layer(params):
  """An ``fd.nnx.PerPositionDense`` holding copies of ``params``."""
  layer = fd.nnx.PerPositionDense(*params['kernel'].shape, rngs=nnx.Rngs(0))
  layer.kernel[...] = jnp.copy(params['kernel'])
  layer.bias[...] = jnp.copy(params['bias'])
  return layer


def call(model, x):
  return model(x)


def nnx_step(model, optimizer, x, labels):
  """:func:`make_step`'s step in NNX: updates both in place, returns the loss."""
  loss, grads = nnx.value_and_grad(functools.partial(loss_fn, call))(
    model, x, labels
  )
  optimizer.update(model, grads)
  return loss


def nnx_split_run(params, x, labels, optimizer, data, check_gradients):
  """``fd.nnx.PerPositionDense`` through NNX's functional API.

  The model and its ``nnx.Optimizer`` are split once; the programs are
  ``jax.jit`` functions of their state (the training state donated) that
  ``nnx.merge`` it back inside, as in Flax's performance guide. See
  :func:`peer_run` for the arguments and results.
  """
  param_sets, xs, ys = data
  graphdef, _ = nnx.split(nnx_layer(params))

  def apply(state, x):
    return nnx.merge(graphdef, state)(x)

  model = nnx_layer(params)
  train_graphdef, train_state = nnx.split(
    (model, nnx.Optimizer(model, optimizer, wrt=nnx.Param))
  )

  def step(state, x, labels):
    model, optimizer = nnx.merge(train_graphdef, state)
    loss = nnx_step(model, optimizer, x, labels)
    return nnx.state((model, optimizer)), loss

  states = [nnx.state(nnx_layer(p)) for p in param_sets]
  forward, forward_compile = timing.compiled(apply, states[0], x)
  train_step, step_compile = timing.compiled(
    step, train_state, x, labels, donate_argnums=0
  )
  gradients = check_gradients and nnx.to_pure_dict(
    jax.jit(jax.grad(functools.partial(loss_fn, apply)))(states[0], x, labels)
  )
  programs = timing_programs(
    apply, step, forward, train_step, (states, xs, ys), state_size=1
  )
  return (
    programs,
    (train_state,),
    forward(states[0], x),
    gradients,
    (forward_compile),
    step_compile,
  )


def nnx_jit_run(params, x, labels, optimizer, data, check_gradients):
  """``fd.nnx.PerPositionDense`` and ``nnx.Optimizer`` passed to ``nnx.jit``.

  The model and optimizer go to ``nnx.jit`` functions, which update them
  in place (both donated in the step), so each call also pays for NNX
  walking their graphs. Compile times are those of the first calls, runs
  included. See :func:`peer_run` for the arguments and results.
  """
  param_sets, xs, ys = data
  models = [nnx_layer(p) for p in param_sets]
  model = nnx_layer(params)
  state = (model, nnx.Optimizer(model, optimizer, wrt=nnx.Param))
  forward = nnx.jit(call)
  jitted_step = nnx.jit(nnx_step, donate_argnums=(0, 1))
  outputs, forward_compile = timing.first_call(forward, models[0], x)
  _, step_compile = timing.first_call(jitted_step, *state, x, labels)
  gradients = check_gradients and nnx.to_pure_dict(
    nnx.jit(nnx.grad(functools.partial(loss_fn, call)))(models[0], x, labels)
  )
  if len(xs) == 1:
    forward_args, step_data = (models[0], xs[0]), (xs[0], ys[0])
  else:

    def step(model, optimizer, x, labels):
      return model, optimizer, nnx_step(model, optimizer, x, labels)

    forwards, steps = forwards_and_steps(call, step)
    forward, forward_args = nnx.jit(forwards), (models, xs)
    jitted_step = nnx.jit(lambda *args: steps(*args)[-1], donate_argnums=(0, 1))
    step_data = (xs, ys)

  def train_step(model, optimizer, *batch):
    return model, optimizer, jitted_step(model, optimizer, *batch)

  programs = forward, forward_args, train_step, step_data, len(xs)
  return programs, state, outputs, gradients, forward_compile, step_compile


IMPLEMENTATIONS = {
  OURS: peer(make_ours),
  NNX_SPLIT: nnx_split_run,
  NNX_JIT: nnx_jit_run,
  REFERENCE: peer(make_reference),
  KERAS: peer(make_keras),
  'flax nn.Einsum': peer(make_flax_einsum),
  'flax nn.ConvLocal': peer(make_conv_local),
  'vmap(nn.Dense)': peer(make_vmap_dense),
  LOOP: peer(make_loop),
}
if jax.default_backend() == 'gpu':
  # The Pallas (Triton) kernels measured against XLA's own lowering.
  IMPLEMENTATIONS['pallas kernels'] = peer(make_pallas)


def problem(batch, positions, in_features, features, seed=0):
  rng = np.random.default_rng(seed)
  bound = math.sqrt(6 / (in_features + features))
  params = {
    'kernel': jnp.asarray(
      rng.uniform(-bound, bound, (positions, in_features, features)),
      jnp.float32,
    ),
    'bias': jnp.asarray(rng.normal(0, 0.1, (positions, features)), jnp.float32),
  }
  x = jnp.asarray(
    rng.standard_normal((batch, positions, in_features)), jnp.float32
  )
  labels = jnp.asarray(rng.integers(0, features, (batch, positions)), jnp.int32)
  return params, x, labels


def measure_machine(config):
  """Best memory read bandwidth (bytes/s) and float32 matmul rate (flop/s)."""
  data = jnp.ones((config['bandwidth_bytes'] // BYTES,), jnp.float32)
  reduce, _ = timing.compiled(jnp.sum, data)
  size = config['matmul_size']
  a = jnp.ones((size, size), jnp.float32)
  matmul, _ = timing.compiled(jnp.matmul, a, a)
  calls = config['calls']
  rounds = {
    'read': lambda: {'read': timing.time_calls(reduce, data, calls=calls)[1]},
    'matmul': lambda: {
      'matmul': timing.time_calls(matmul, a, a, calls=calls)[1]
    },
  }
  samples = timing.interleave(
    rounds, 2 * config['repeats'], warmups=config['warmups']
  )
  return (
    data.nbytes / min(samples['read']['read']),
    2 * size**3 / min(samples['matmul']['matmul']),
  )


def roofline(batch, positions, in_features, features, machine, program):
  """Lower bound in seconds: every byte moved once, every flop at peak.

  Forward: read the inputs and weights, write the outputs. Training step:
  read the inputs twice (forward and kernel gradient), the outputs' three
  passes (logits, their gradient), and the weights eight times (read, the
  gradient written, Adam reading weights, two moments and the gradient and
  writing three); flops of the forward and of the kernel gradient.
  """
  bandwidth, rate = machine
  inputs = batch * positions * in_features
  weights = positions * (in_features + 1) * features
  outputs = batch * positions * features
  flops = 2 * batch * positions * in_features * features
  if program == 'forward':
    moved = inputs + weights + outputs
  else:
    moved, flops = 2 * inputs + 8 * weights + 3 * outputs, 2 * flops
  return max(moved * BYTES / bandwidth, flops / rate)


def bench_size(batch, positions, config, machine, check_gradients):
  """Times every implementation at one size; returns their records."""
  in_features, features = config['in_features'], config['features']
  params, x, labels = problem(batch, positions, in_features, features)
  optimizer = optax.adam(1e-3)
  names = [
    name
    for name in IMPLEMENTATIONS
    if name != LOOP or positions <= config['loop_max_positions']
  ]
  rounds, records = {}, {}
  reps = config['calls_in_program']
  data = replicas(params, x, labels, reps)
  reference = make_reference(positions, in_features, features)
  expected = jax.jit(reference)(params, x)
  if check_gradients:
    expected_grads = jax.jit(jax.grad(functools.partial(loss_fn, reference)))(
      params, x, labels
    )
  for name in names:
    # The for-loop is timed one call per program: compiling it `reps` times
    # over would take minutes, and its run time dwarfs the dispatch anyway.
    calls_in_program = 1 if name == LOOP else reps
    own = [replica[:calls_in_program] for replica in data]
    programs, state, outputs, grads, forward_compile, step_compile = (
      IMPLEMENTATIONS[name](params, x, labels, optimizer, own, check_gradients)
    )
    record = {
      'compile_forward_s': forward_compile,
      'compile_step_s': step_compile,
      'output_relative_error': relative_error(outputs, expected),
      'calls_in_program': calls_in_program,
    }
    if check_gradients:
      record['gradient_relative_error'] = max(
        relative_error(grads[k], expected_grads[k]) for k in ('kernel', 'bias')
      )
    rounds[name] = timing_round(programs, state, config)
    records[name] = record
  # Each time is also kept over ours in the same round, where the two ran
  # seconds apart: a load on the machine that changes between rounds
  # cancels out.
  summaries = timing.summarize(
    timing.interleave(rounds, config['repeats'], config['warmups']), OURS
  )
  for name, record in records.items():
    record.update(summaries[name])
    for program in ('forward', 'step'):
      bound = roofline(
        batch,
        positions,
        in_features,
        features,
        machine,
        'forward' if program == 'forward' else 'step',
      )
      record[f'{program}_roofline_s'] = bound
      record[f'{program}_roofline_fraction'] = (
        bound / record[f'{program}_median_s']
      )
  return records


def bench_bfloat16(config, machine):
  """Speed and accuracy of float32 and bfloat16 at the base size."""
  batch, positions = config['base_batch'], config['base_positions']
  in_features, features = config['in_features'], config['features']
  params, x, labels = problem(batch, positions, in_features, features)
  low = {k: v.astype(jnp.bfloat16) for k, v in params.items()}
  x_low = x.astype(jnp.bfloat16)
  # Exact results for the bfloat16 values: float32 accumulation leaves only
  # the rounding of the outputs, about 2**-9 of the largest one.
  exact = np.einsum(
    'bpd,pdk->bpk',
    np.asarray(x_low, np.float64),
    np.asarray(low['kernel'], np.float64),
  ) + np.asarray(low['bias'], np.float64)
  exact32 = np.einsum(
    'bpd,pdk->bpk',
    np.asarray(x, np.float64),
    np.asarray(params['kernel'], np.float64),
  ) + np.asarray(params['bias'], np.float64)
  variants = {
    'float32 (auto path)': (
      make_ours(positions, in_features, features),
      params,
      x,
    ),
    'bfloat16 (auto path)': (
      make_ours(positions, in_features, features, jnp.bfloat16),
      low,
      x_low,
    ),
    'bfloat16 forced through chunks': (
      lambda p, x: dense_kernels.per_position_dense_chunked(
        x, p['kernel'], p['bias']
      ),
      low,
      x_low,
    ),
  }
  optimizer = optax.adam(1e-3)
  rounds, records = {}, {}
  for name, (apply, weights, inputs) in variants.items():
    forward, _ = timing.compiled(apply, weights, inputs)

    step = make_step(apply, optimizer)
    state = (jax.tree.map(jnp.copy, weights), optimizer.init(weights))
    train_step, _ = timing.compiled(
      step, *state, inputs, labels, donate_argnums=(0, 1)
    )
    outputs = np.asarray(forward(weights, inputs), np.float64)
    want = exact32 if inputs.dtype == jnp.float32 else exact
    records[name] = {'relative_error_vs_exact': relative_error(outputs, want)}
    data = replicas(weights, inputs, labels, config['calls_in_program'])
    programs = timing_programs(apply, step, forward, train_step, data)
    rounds[name] = timing_round(programs, state, config)
  summaries = timing.summarize(
    timing.interleave(rounds, config['repeats'], config['warmups']),
    'float32 (auto path)',
  )
  for name, record in records.items():
    record.update(summaries[name])
  return records


def print_table(results):
  header = (
    f'{"size (B, P)":>13} {"implementation":<26} {"fwd ms":>9}'
    f' {"step ms":>9} {"fwd x":>6} {"step x":>6} {"fwd /fd":>7}'
    f' {"step /fd":>8} {"fwd roof":>8} {"step roof":>9} {"compile s":>9}'
    f' {"err":>8}'
  )
  print(header)
  print('-' * len(header))
  for entry in results['sizes']:
    size = f'({entry["batch"]}, {entry["positions"]})'
    keras = entry['implementations'][KERAS]
    for name, r in entry['implementations'].items():
      print(
        f'{size:>13} {name:<26} {r["forward_median_s"] * 1e3:9.2f}'
        f' {r["step_median_s"] * 1e3:9.2f}'
        f' {keras["forward_median_s"] / r["forward_median_s"]:6.2f}'
        f' {keras["step_median_s"] / r["step_median_s"]:6.2f}'
        f' {r["forward_over_baseline"]:7.3f}'
        f' {r["step_over_baseline"]:8.3f}'
        f' {r["forward_roofline_fraction"]:8.1%}'
        f' {r["step_roofline_fraction"]:9.1%}'
        f' {r["compile_forward_s"] + r["compile_step_s"]:9.2f}'
        f' {r["output_relative_error"]:8.1e}'
      )
      size = ''
  print(
    '(x: speed-up over Keras EinsumDense; /fd: median over repeats of the'
    f" time over {OURS}'s in the same repeat; roof: roofline / time;"
    ' compile: forward + step; err: relative output error)'
  )
  print('\nbfloat16 at the base size:')
  for name, r in results['bfloat16'].items():
    print(
      f'  {name:<32} fwd {r["forward_median_s"] * 1e3:8.2f} ms'
      f'  step {r["step_median_s"] * 1e3:8.2f} ms'
      f'  relative error {r["relative_error_vs_exact"]:.1e}'
    )


def plot(results, path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  config = results['config']
  fig, axes = plt.subplots(2, 2, figsize=(12, 9))
  sweeps = [
    ('batch', 'positions', config['base_positions'], 'batch B'),
    ('positions', 'batch', config['base_batch'], 'positions P'),
  ]
  for row, (axis, fixed, value, label) in enumerate(sweeps):
    entries = sorted(
      (e for e in results['sizes'] if e[fixed] == value),
      key=lambda e: e[axis],
    )
    if not entries:  # --sizes off this sweep
      continue
    for column, program in enumerate(('forward', 'step')):
      ax = axes[row][column]
      for name in IMPLEMENTATIONS:
        points = [
          (e[axis], e['implementations'][name][f'{program}_median_s'] * 1e3)
          for e in entries
          if name in e['implementations']
        ]
        if points:
          ax.plot(*zip(*points, strict=True), marker='o', label=name)
      bound = [
        (e[axis], e['implementations'][OURS][f'{program}_roofline_s'] * 1e3)
        for e in entries
      ]
      ax.plot(*zip(*bound, strict=True), 'k--', label='roofline')
      ax.set_xscale('log', base=2)
      ax.set_yscale('log')
      ax.set_xlabel(f'{label} ({fixed} = {value})')
      ax.set_ylabel('median time (ms)')
      title = 'forward' if program == 'forward' else 'train step (Adam)'
      ax.set_title(title)
      ax.grid(True, which='both', alpha=0.3)
  # The P sweep has every implementation, when it was run.
  (axes[1][0] if axes[1][0].lines else axes[0][0]).legend(fontsize=8)
  fig.suptitle(
    'PerPositionDense vs peers, D = {in_features}, K = {features},'
    ' {cpu} CPUs, JAX {jax}'.format(
      cpu=results['machine']['cpu_count'],
      jax=results['machine']['jax'],
      **config,
    )
  )
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def size(text):
  """``'BxP'`` -> ``(B, P)``, for ``--sizes``."""
  try:
    batch, positions = (int(n) for n in text.lower().split('x'))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f'a size is BATCHxPOSITIONS, e.g. 64x1024, not {text!r}'
    ) from None
  if batch < 1 or positions < 1:
    raise argparse.ArgumentTypeError(f'sizes must be positive, not {text!r}')
  return batch, positions


def main(argv=None):
  parser = bench_common.parser(
    __doc__,
    quick_help='tiny sizes, under a minute',
    out_help='directory for the .json and .png',
    repeats_help='timed calls per size',
  )
  parser.add_argument(
    '--name',
    default='per_position_dense',
    help='file name of the .json and .png, without the extension',
  )
  parser.add_argument(
    '--sizes',
    type=size,
    nargs='+',
    metavar='BxP',
    help='only these (batch, positions), e.g. 64x1024 256x1024 (default:'
    ' the sweeps of batch and positions around the base size)',
  )
  parser.add_argument(
    '--loop-max-positions',
    type=int,
    help='largest P for the Python for-loop (its compile time grows with P)',
  )
  args = parser.parse_args(argv)
  full = FULL if jax.default_backend() == 'cpu' else {**FULL, **ACCELERATOR}
  config = bench_common.config(args, full, QUICK)
  if args.loop_max_positions:
    config['loop_max_positions'] = args.loop_max_positions
  info = bench_common.machine_info(packages=('keras',))
  machine = measure_machine(config)
  print(
    f'machine: {info["cpu_count"]} CPUs, JAX {info["jax"]} on'
    f' {info["backend"]}; read bandwidth {machine[0] / 1e9:.1f} GB/s,'
    f' matmul {machine[1] / 1e9:.1f} GFLOP/s; load {info["load_average_1min"]}'
  )
  base = (config['base_batch'], config['base_positions'])
  sizes = [(b, base[1]) for b in config['batch_sizes']]
  sizes += [
    (base[0], p) for p in config['positions'] if (base[0], p) not in sizes
  ]
  sizes = args.sizes or sizes
  # Gradients are checked at the base size, or the first size without it.
  checked = base if base in sizes else sizes[0]
  results = {
    **bench_common.new_results(config, None, info),
    'measured_read_bandwidth_bytes_per_s': machine[0],
    'measured_matmul_flops_per_s': machine[1],
    'chunked_path_rule': {
      'min_chunked_bytes': dense_kernels.MIN_CHUNKED_BYTES,
      'chunk_bytes': dense_kernels.CHUNK_BYTES,
    },
    'sizes': [],
  }
  for batch, positions in sizes:
    print(f'size B={batch} P={positions} ...', flush=True)
    records = bench_size(
      batch, positions, config, machine, (batch, positions) == checked
    )
    results['sizes'].append(
      {
        'batch': batch,
        'positions': positions,
        'in_features': config['in_features'],
        'features': config['features'],
        'input_bytes': batch * positions * config['in_features'] * BYTES,
        'ours_takes_chunks_on_cpu': dense_kernels.prefers_chunks(
          (batch, positions, config['in_features']), jnp.float32
        ),
        'implementations': records,
      }
    )
  print('bfloat16 ...', flush=True)
  results['bfloat16'] = bench_bfloat16(config, machine)
  print_table(results)
  bench_common.save_results(results, args.out, args.name)
  png_path = os.path.join(args.out, f'{args.name}.png')
  plot(results, png_path)
  print(f'wrote {png_path}')
  return results


if __name__ == '__main__':
  main()
