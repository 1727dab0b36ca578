"""The benchmarks run in quick mode and write well-formed results.

Also the timing helpers they share (``benchmarks/timing.py``). No benchmark
figure is asserted: the machine running the tests may be busy.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

SCRIPT = os.path.join(
  os.path.dirname(__file__), '..', 'benchmarks', 'per_position_dense.py'
)
sys.path.insert(0, os.path.dirname(SCRIPT))
import per_position_dense  # noqa: E402
import recurrent  # noqa: E402
import timing  # noqa: E402

import flax_dense as fd  # noqa: E402

NNX_PEERS = ('fd.nnx split/merge', 'fd.nnx nnx.jit')


def test_quick_benchmark_writes_json_and_png(tmp_path):
  result = subprocess.run(
    [sys.executable, SCRIPT, '--quick', '--repeats', '1', '--out', tmp_path],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, KERAS_BACKEND='jax'),
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'keras EinsumDense' in result.stdout
  assert all(name in result.stdout for name in NNX_PEERS)

  with open(tmp_path / 'per_position_dense.json') as f:
    results = json.load(f)
  assert results['measured_read_bandwidth_bytes_per_s'] > 0
  assert results['measured_matmul_flops_per_s'] > 0
  assert results['machine']['jax']
  assert len(results['sizes']) >= 2
  peers = {
    'fd.PerPositionDense',
    'vmap(per_position_dense)',
    'keras EinsumDense',
    'flax nn.Einsum',
    'flax nn.ConvLocal',
    'vmap(nn.Dense)',
    'python for-loop',
    *NNX_PEERS,
  }
  for entry in results['sizes']:
    assert set(entry['implementations']) == peers
    for record in entry['implementations'].values():
      assert len(record['forward_s']) == 1
      assert record['forward_median_s'] > 0 and record['step_median_s'] > 0
      assert record['compile_forward_s'] > 0
      assert 0 < record['forward_roofline_fraction']
      assert record['output_relative_error'] < 1e-5
      assert record.get('gradient_relative_error', 0) < 1e-5
      assert record['step_over_baseline'] > 0
    assert entry['implementations']['fd.PerPositionDense'][
      'forward_over_baseline'
    ] == pytest.approx(1)
  assert any(
    'gradient_relative_error' in r
    for e in results['sizes']
    for r in e['implementations'].values()
  )
  for record in results['bfloat16'].values():
    assert record['relative_error_vs_exact'] < 2e-2

  with open(tmp_path / 'per_position_dense.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_forward_and_step_gives_seconds_per_call_and_keeps_the_state():
  """Calls are waited for, divided out, and the step's state carried on."""
  pause = 0.02
  counts = []

  def forward(params, x):
    time.sleep(pause)
    return x

  def train_step(count, x):
    time.sleep(pause)
    counts.append(count)
    return count + 1, x

  one_round = timing.forward_and_step(
    forward, ({}, 1), train_step, (0,), (1,), calls=2
  )
  seconds = one_round()
  assert set(seconds) == {'forward', 'forward_cpu', 'step', 'step_cpu'}
  assert pause <= seconds['forward'] < 10 * pause
  assert pause <= seconds['step'] < 10 * pause
  assert seconds['step_cpu'] < pause  # sleeping takes no CPU time
  one_round()
  assert counts == [0, 1, 2, 3]  # each call and round goes on from the last

  halved = timing.forward_and_step(
    forward, ({}, 1), train_step, (0,), (1,), calls_in_program=2
  )()
  assert pause / 2 <= halved['forward'] < 5 * pause


def test_time_calls_waits_for_the_outputs():
  """JAX dispatches asynchronously: the clock stops once outputs are ready."""
  slow = jax.jit(lambda a: jnp.linalg.matrix_power(a, 16))
  a = jnp.eye(512) * 0.5
  slow(a).block_until_ready()
  outputs, seconds, _ = timing.time_calls(slow, a)
  assert outputs.is_ready()
  assert seconds > 0


def test_interleave_keeps_rounds_after_warmups_in_shuffled_orders():
  order = []

  def round_of(name):
    def one_round():
      order.append(name)
      return {'t': float(len(order))}

    return one_round

  names = ('a', 'b', 'c', 'd')
  samples = timing.interleave(
    {name: round_of(name) for name in names}, repeats=3, warmups=2
  )
  assert len(order) == 20
  assert [len(samples[name]['t']) for name in names] == [3, 3, 3, 3]
  rounds = [tuple(order[i : i + 4]) for i in range(0, 20, 4)]
  assert all(sorted(r) == list(names) for r in rounds)
  assert len(set(rounds)) > 1  # not the same order every round
  # Kept samples are those of rounds 3 to 5 (calls 9 to 20).
  assert min(min(s['t']) for s in samples.values()) >= 9


def test_summarize_gives_medians_spreads_and_paired_ratios():
  samples = {
    'ours': {'forward': [1.0, 2.0, 4.0, 3.0, 10.0]},
    'theirs': {'forward': [2.0, 3.0, 8.0, 9.0, 20.0]},
  }
  records = timing.summarize(samples, 'ours')
  ours, theirs = records['ours'], records['theirs']
  assert ours['forward_s'] == [1.0, 2.0, 4.0, 3.0, 10.0]
  assert ours['forward_median_s'] == 3.0
  assert ours['forward_min_s'] == 1.0
  assert ours['forward_spread'] == pytest.approx((4.0 - 2.0) / 3.0)
  assert ours['forward_over_baseline'] == 1.0
  # Per-round ratios 2, 1.5, 2, 3, 2: their median, not 8 / 3.
  assert theirs['forward_over_baseline'] == 2.0
  by_name = timing.summarize(samples, {'ours': 'theirs', 'theirs': 'theirs'})
  assert by_name['ours']['forward_over_baseline'] == 0.5
  assert by_name['theirs']['forward_over_baseline'] == 1.0
  assert timing.spread([5.0]) == 0.0


@pytest.mark.parametrize(
  'call, message',
  [
    (lambda: timing.time_calls(abs, 1, calls=0), 'calls must be at least 1'),
    (lambda: timing.interleave({}, repeats=0), 'repeats must be at least 1'),
  ],
)
def test_timing_rejects_empty_counts(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_sizes_flag_reads_batch_x_positions():
  assert per_position_dense.size('64x1024') == (64, 1024)
  assert per_position_dense.size('8X64') == (8, 64)


@pytest.mark.parametrize(
  'text, message',
  [('64', 'BATCHxPOSITIONS'), ('ax2', 'BATCHxPOSITIONS'), ('0x8', 'positive')],
)
def test_sizes_flag_rejects_bad_sizes(text, message):
  with pytest.raises(argparse.ArgumentTypeError, match=message):
    per_position_dense.size(text)


def test_accelerator_timing_mode_runs_on_cpu(tmp_path):
  """The GPU timing (several calls per program, chained steps) on CPU.

  It also runs the ``--sizes`` and ``--name`` flags.
  """
  code = (
    'import sys; sys.path.insert(0, sys.argv[1]); import per_position_dense'
    ' as b; b.QUICK.update(calls=2, calls_in_program=3); b.main(["--quick",'
    ' "--repeats", "1", "--sizes", "2x8", "--name", "gpu_mode", "--out",'
    ' sys.argv[2]])'
  )
  result = subprocess.run(
    [sys.executable, '-c', code, os.path.dirname(SCRIPT), tmp_path],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, KERAS_BACKEND='jax'),
  )
  assert result.returncode == 0, result.stdout + result.stderr
  with open(tmp_path / 'gpu_mode.json') as f:
    results = json.load(f)
  assert (tmp_path / 'gpu_mode.png').exists()
  assert results['config']['calls_in_program'] == 3
  [entry] = results['sizes']
  assert (entry['batch'], entry['positions']) == (2, 8)
  implementations = entry['implementations']
  assert implementations['python for-loop']['calls_in_program'] == 1
  for name in ('keras EinsumDense', *NNX_PEERS):
    assert implementations[name]['calls_in_program'] == 3
  for record in implementations.values():
    assert record['forward_median_s'] > 0 and record['step_median_s'] > 0
    assert record['output_relative_error'] < 1e-5
    assert record['gradient_relative_error'] < 1e-5


def test_recurrent_quick_benchmark_checks_every_row(tmp_path):
  """Keras, Flax (and flax_dense, once it has LSTM and GRU) agree."""
  # Keras's orthogonal initializer and cells broadcast across ranks.
  with jax.numpy_rank_promotion('allow'):
    results = recurrent.main(
      ['--quick', '--repeats', '1', '--out', str(tmp_path)]
    )
  with open(tmp_path / 'recurrent.json') as f:
    assert json.load(f) == json.loads(json.dumps(results))
  assert len(results['machine']['load_average_1_5_15min']) == 3
  with_fd = hasattr(fd, 'LSTM') and hasattr(fd, 'GRU')
  assert (results['skipped'] is None) == with_fd
  for cell, flax_cell in (('LSTM', 'OptimizedLSTMCell'), ('GRU', 'GRUCell')):
    entry = results['cells'][cell]
    families = [f'fd.{cell}'] * with_fd + [f'keras {cell}']
    names = {f'flax RNN({flax_cell})'}
    names |= {f + suffix for f in families for suffix in ('', ' masked')}
    assert set(entry['implementations']) == names
    assert set(entry['mask_cost']) == set(families)
    baseline = families[0]
    for name, record in entry['implementations'].items():
      assert record['baseline'] == baseline + ' masked' * record['masked']
      assert record['output_relative_error'] < 1e-5, name
      assert record['gradient_relative_error'] < 1e-5, name
      assert record['forward_median_s'] > 0 and record['step_median_s'] > 0
      assert len(record['step_s']) == 1
    assert entry['implementations'][baseline]['step_over_baseline'] == 1
    assert ('goals' in entry) == with_fd
  if not with_fd:
    assert 'fd.LSTM' in results['skipped']


def test_recurrent_mask_pads_on_the_right():
  config = dict(recurrent.QUICK, batch=64, steps=10)
  _, mask, _ = recurrent.problem(config)
  lengths = mask.sum(axis=1)
  assert (
    np.asarray(mask) == (np.arange(10) < np.asarray(lengths)[:, None])
  ).all()
  assert lengths.min() >= 5 and lengths.max() <= 10
  assert len(set(lengths.tolist())) > 1
