"""The benchmark runs in quick mode and writes well-formed JSON and PNG.

No timing is asserted: the machine running the tests may be busy.
"""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(
  os.path.dirname(__file__), '..', 'benchmarks', 'per_position_dense.py'
)


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
  assert any(
    'gradient_relative_error' in r
    for e in results['sizes']
    for r in e['implementations'].values()
  )
  for record in results['bfloat16'].values():
    assert record['relative_error_vs_exact'] < 2e-2

  with open(tmp_path / 'per_position_dense.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_accelerator_timing_mode_runs_on_cpu(tmp_path):
  """The GPU timing (several calls per program, chained steps) on CPU."""
  code = (
    'import sys; sys.path.insert(0, sys.argv[1]); import per_position_dense'
    ' as b; b.QUICK.update(calls=2, calls_in_program=3, batch_sizes=(2,),'
    " positions=(8,)); b.main(['--quick', '--repeats', '1', '--out',"
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
  with open(tmp_path / 'per_position_dense.json') as f:
    results = json.load(f)
  assert results['config']['calls_in_program'] == 3
  [entry] = results['sizes']
  implementations = entry['implementations']
  assert implementations['python for-loop']['calls_in_program'] == 1
  assert implementations['keras EinsumDense']['calls_in_program'] == 3
  for record in implementations.values():
    assert record['forward_median_s'] > 0 and record['step_median_s'] > 0
