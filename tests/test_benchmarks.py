"""The benchmark runs in quick mode and writes well-formed JSON and PNG.

No timing is asserted: the machine running the tests may be busy.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

SCRIPT = os.path.join(
  os.path.dirname(__file__), '..', 'benchmarks', 'per_position_dense.py'
)
sys.path.insert(0, os.path.dirname(SCRIPT))
import per_position_dense  # noqa: E402

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
      assert len(record['forward_wall_s']) == 1
      assert record['forward_median_s'] > 0 and record['step_median_s'] > 0
      assert record['compile_forward_s'] > 0
      assert 0 < record['forward_roofline_fraction']
      assert record['output_relative_error'] < 1e-5
      assert record.get('gradient_relative_error', 0) < 1e-5
      assert record['step_over_ours_paired'] > 0
    assert entry['implementations']['fd.PerPositionDense'][
      'forward_over_ours_paired'
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


def test_time_programs_gives_seconds_per_call():
  """One call per program on the CPU: times are not divided by the batch."""
  pause = 0.02

  def forward(params, x):
    time.sleep(pause)
    return x

  def train_step(params, x, labels):
    time.sleep(pause)
    return params, labels.sum()

  x, labels = jnp.ones((8, 4, 3)), jnp.ones((8, 4))
  programs = (forward, ({}, x), train_step, (x, labels), 1)
  forward_wall, _, step_wall, _, state = per_position_dense.time_programs(
    programs, ({},), calls=2
  )
  assert pause <= forward_wall < 10 * pause
  assert pause <= step_wall < 10 * pause
  assert state == [{}]


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
