"""Training on several processes: the same training as on one, checkpoints
that move between topologies, a killed process, and bad input.

Every run here is real: ``examples/train_sharded.py --processes N`` starts N
Python processes, joined by ``jax.distributed.initialize`` on a free port of
127.0.0.1 with gloo collectives, each with its own simulated CPU devices and
feeding only its own rows of every batch. Every launch has a hard timeout
(the launcher's ``--timeout``, which kills all its processes), so a hung
collective fails a test instead of hanging it. The runs share a persistent
compilation cache, which only spares recompiling identical programs.

Tolerances (float32, 6 small Adam steps): 2 processes x 4 devices and 1 x 8
run the same partitioned program; their parameters agree to the bit here
(each gradient is summed over the 2 data shards, and a + b == b + a), and
their losses to 1e-6 relative (the loss is a mean over 8 devices, summed
in another order over gloo). One device sums in yet another order: losses
within 1e-6, parameters within 1e-5 relative (absolute 1e-6).
"""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, SingleDeviceSharding

import flax_dense as fd
from flax_dense._src import distributed

EXAMPLES = os.path.join(os.path.dirname(__file__), '..', 'examples')
BENCHMARKS = os.path.join(os.path.dirname(__file__), '..', 'benchmarks')
sys.path.insert(0, EXAMPLES)
import local_processes  # noqa: E402
import train_sharded  # noqa: E402

P, D, K = 8, 4, 3
STEPS, SAVED = 6, 3
HEARTBEAT = 5
TASK = [
  f'--positions={P}',
  f'--in-features={D}',
  f'--classes={K}',
  '--train-samples=64',
  '--test-samples=16',
  '--batch-size=16',
  f'--steps={STEPS}',
  f'--checkpoint-every={SAVED}',
  f'--heartbeat-timeout={HEARTBEAT}',
  '--quiet',
]
# Seconds for one launch, all processes; a few times what one takes on a
# loaded 2-core machine.
TIMEOUT = 150

# Process 1 SIGKILLs itself right after the checkpoint of step SAVED.
KILLER = f"""
import os, signal, sys
sys.path.insert(0, {EXAMPLES!r})
import jax
import flax_dense as fd
import train_sharded

save = fd.checkpoint.save

def save_then_die(path, tree, step=None, **kwargs):
  saved = save(path, tree, step=step, **kwargs)
  if step == {SAVED} and jax.process_index() == 1:
    os.kill(os.getpid(), signal.SIGKILL)
  return saved

fd.checkpoint.save = save_then_die
train_sharded.main(sys.argv[1:])
"""


# No persistent compilation cache here: with one warmed by an earlier
# launch, two gloo processes loading its programs hung (both killed at the
# launch timeout), in the killed-run fixture and the benchmark alike.


def train(processes, devices, checkpoint_dir, *flags):
  return train_sharded.main(
    TASK
    + [f'--processes={processes}', f'--devices-per-process={devices}']
    + [f'--timeout={TIMEOUT}', f'--checkpoint-dir={checkpoint_dir}']
    + list(flags)
  )


@pytest.fixture(scope='module')
def two(tmp_path_factory):
  """2 processes x 4 devices, uninterrupted: results, checkpoint."""
  path = tmp_path_factory.mktemp('two') / 'checkpoint'
  return train(2, 4, path), path


@pytest.fixture(scope='module')
def eight(tmp_path_factory):
  path = tmp_path_factory.mktemp('eight') / 'checkpoint'
  return train(1, 8, path), path


@pytest.fixture(scope='module')
def one(tmp_path_factory):
  path = tmp_path_factory.mktemp('one') / 'checkpoint'
  return train(1, 1, path), path


@pytest.fixture(scope='module')
def killed(tmp_path_factory):
  """A 2-process run whose process 1 is SIGKILLed after the step-3 save.

  Returns how each process ended, and copies of the checkpoint it left.
  """
  work = tmp_path_factory.mktemp('killed')
  path = work / 'checkpoint'
  exits, results = train_sharded.launch(
    TASK + [f'--checkpoint-dir={path}'],
    2,
    4,
    TIMEOUT,
    program=[sys.executable, '-c', KILLER],
    work_dir=str(work),
    echo_leader=False,
  )
  copies = {}
  for name in ('resume_two', 'resume_eight', 'restore_one'):
    copies[name] = work / name
    shutil.copytree(path, copies[name])
  return exits, results, copies


def restored_on_one_device(path):
  """The checkpoint ``path`` restored onto this process's first device."""
  mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ('data', 'model'))
  model = fd.sharding.logically_partitioned(fd.PerPositionDense(K))
  state, _ = train_sharded.init_state(
    model, optax.adam(1e-2), mesh, jax.random.key(0), P, D
  )
  device = SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(
    lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
    {'params': state[0], 'opt_state': state[1]},
  )
  restored = fd.checkpoint.restore(path, target=target)
  return restored['params'], restored['opt_state']


def test_each_process_feeds_half_of_every_batch(two):
  results, _ = two
  processes = results['processes']
  assert [r['process_index'] for r in processes] == [0, 1]
  assert {r['process_count'] for r in processes} == {2}
  assert results['mesh'] == {'data': 2, 'model': 4}
  global_batch = 16 * P * (D * 4 + 4)  # float32 inputs, int32 labels
  for r in processes:
    assert r['global_batch_bytes'] == global_batch
    assert r['batch_bytes'] == global_batch // 2
    # Each process's 4 devices hold every position once: the state is
    # replicated over the data axis, i.e. over the processes. Only Adam's
    # step count (int32) is on each of the 4 devices.
    assert r['state_bytes'] == r['global_state_bytes'] + 3 * 4


def test_two_processes_train_as_one_process_of_eight_devices(two, eight):
  (results, path), (single, single_path) = two, eight
  assert len(results['losses']) == STEPS
  np.testing.assert_allclose(results['losses'], single['losses'], rtol=1e-6)
  assert results['digest'] == single['digest']
  for got, want in zip(
    jax.tree.leaves(restored_on_one_device(path)),
    jax.tree.leaves(restored_on_one_device(single_path)),
    strict=True,
  ):
    np.testing.assert_array_equal(got, want)


def test_two_processes_train_as_one_device(two, one):
  (results, path), (single, single_path) = two, one
  assert single['mesh'] == {'data': 1, 'model': 1}
  np.testing.assert_allclose(results['losses'], single['losses'], rtol=1e-6)
  for got, want in zip(
    jax.tree.leaves(restored_on_one_device(path)),
    jax.tree.leaves(restored_on_one_device(single_path)),
    strict=True,
  ):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert results['accuracy'] == pytest.approx(single['accuracy'], abs=1e-6)


def test_checkpoint_of_two_processes_restores_on_one_device(two):
  results, path = two
  restored = restored_on_one_device(path)
  assert train_sharded.digests(restored) == results['digest']
  assert results['saved_digests'][str(STEPS)] == results['digest']


def test_killed_process_fails_the_other_within_the_heartbeat(killed):
  exits, results, _ = killed
  survivor, victim = exits
  assert victim.returncode == -signal.SIGKILL
  assert not survivor.killed, survivor.describe()
  assert survivor.returncode != 0
  # It fails at its next collective at once, then JAX's shutdown gives up
  # on the dead process after the heartbeat timeout.
  assert survivor.seconds - victim.seconds < HEARTBEAT + 10
  assert 'step 4 failed, most likely because another process died' in (
    survivor.tail(40)
  )
  assert results == [None, None]


def test_new_launch_resumes_where_the_killed_one_saved(killed, two):
  _, _, copies = killed
  uninterrupted, _ = two
  assert fd.checkpoint.latest_step(copies['resume_two']) == SAVED
  resumed = train(2, 4, copies['resume_two'])
  assert resumed['resumed_from'] == SAVED
  saved = uninterrupted['saved_digests'][str(SAVED)]
  assert resumed['restored_digest'] == saved
  assert resumed['losses'] == uninterrupted['losses'][SAVED:]
  assert resumed['digest'] == uninterrupted['digest']


def test_checkpoint_of_two_processes_resumes_on_eight_devices(killed, two):
  _, _, copies = killed
  uninterrupted, _ = two
  resumed = train(1, 8, copies['resume_eight'])
  assert resumed['process_count'] == 1
  saved = uninterrupted['saved_digests'][str(SAVED)]
  assert resumed['restored_digest'] == saved
  np.testing.assert_allclose(
    resumed['losses'], uninterrupted['losses'][SAVED:], rtol=1e-6
  )
  assert resumed['digest'] == uninterrupted['digest']


def test_checkpoint_of_killed_run_restores_on_one_device(killed, two):
  _, _, copies = killed
  uninterrupted, _ = two
  restored = restored_on_one_device(copies['restore_one'])
  saved = uninterrupted['saved_digests'][str(SAVED)]
  assert train_sharded.digests(restored) == saved


def test_layout_error_in_every_process(tmp_path):
  # Past the launcher's own check: each process joins the others, sees the
  # 8 global devices, and stops with the same error; none hangs.
  exits, _ = train_sharded.launch(
    TASK + ['--data-parallel=3'],
    2,
    4,
    TIMEOUT,
    work_dir=str(tmp_path),
    echo_leader=False,
  )
  assert [exit.returncode for exit in exits] == [2, 2]
  for exit in exits:
    assert (
      '--data-parallel 3 x --model-parallel 2 = 6 must equal the 8 devices'
      ' of 2 process(es) x 4' in exit.tail()
    )


def test_mesh_must_match_the_devices_of_all_processes(capsys):
  with pytest.raises(SystemExit):
    train_sharded.main(
      TASK + ['--processes=2', '--data-parallel=4', '--model-parallel=1']
    )
  assert (
    '--data-parallel 4 x --model-parallel 1 = 4 must equal the 8 devices of'
    ' 2 processes x 4' in capsys.readouterr().err
  )


def test_batch_must_split_over_the_data_axis_of_all_processes(capsys):
  with pytest.raises(SystemExit):
    train_sharded.main(
      TASK
      + ['--processes=2', '--data-parallel=4', '--model-parallel=2']
      + ['--batch-size=6']
    )
  assert (
    '--batch-size 6 must be a multiple of 4, the size of the data mesh axis'
    in capsys.readouterr().err
  )


@pytest.mark.parametrize(
  'flags, message',
  [
    (['--processes=2', '--distributed'], 'drop --distributed'),
    (['--processes=0'], '--processes must be at least 1, got 0'),
    (['--processes=16'], '--devices-per-process must be at least 1, got 0'),
    (['--process-id=1'], '--process-id need --distributed'),
  ],
)
def test_launcher_flags(flags, message, capsys):
  with pytest.raises(SystemExit):
    train_sharded.main(TASK + flags)
  assert message in capsys.readouterr().err


@pytest.fixture
def closed_address():
  """``127.0.0.1:port`` of a port that is bound but refuses connections."""
  with socket.socket() as bound:
    bound.bind(('127.0.0.1', 0))
    yield f'127.0.0.1:{bound.getsockname()[1]}'


def test_unreachable_coordinator_is_a_clear_error(closed_address):
  start = time.monotonic()
  result = subprocess.run(
    [sys.executable, os.path.join(EXAMPLES, 'train_sharded.py')]
    + ['--distributed', f'--coordinator-address={closed_address}']
    + ['--num-processes=2', '--process-id=1', '--initialization-timeout=2'],
    capture_output=True,
    text=True,
    timeout=TIMEOUT,
  )
  assert result.returncode == 1
  assert (
    f'TimeoutError: initialize: could not reach the JAX coordinator at'
    f' {closed_address} within 2 s' in result.stderr
  )
  # Python and JAX start in a few seconds; the wait itself is 2 s.
  assert time.monotonic() - start < 60


def test_missing_process_aborts_the_others_within_the_timeout(tmp_path):
  # One process of the two it is told of: the coordinator waits for the
  # other until the initialization timeout, then JAX aborts it.
  address = f'127.0.0.1:{local_processes.free_port()}'
  (exit,) = local_processes.wait_local_processes(
    local_processes.start_local_processes(
      [
        [sys.executable, os.path.join(EXAMPLES, 'train_sharded.py')]
        + ['--distributed', f'--coordinator-address={address}']
        + ['--num-processes=2', '--process-id=0']
        + ['--initialization-timeout=2']
      ],
      4,
      log_dir=tmp_path,
    ),
    timeout=TIMEOUT,
    grace=0,
  )
  assert exit.returncode == -signal.SIGABRT, exit.describe()
  assert not exit.killed
  assert 'DEADLINE_EXCEEDED' in exit.tail(60)
  assert exit.seconds < 60


def test_quick_benchmark_writes_json(tmp_path):
  # By its path: 'multiprocess' is also the name of a package on PyPI.
  spec = importlib.util.spec_from_file_location(
    'benchmark_multiprocess', os.path.join(BENCHMARKS, 'multiprocess.py')
  )
  benchmark = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(benchmark)
  results = benchmark.main(['--quick', '--out', str(tmp_path)])
  with open(tmp_path / 'multiprocess.json') as file:
    assert json.load(file) == json.loads(json.dumps(results))
  (size,) = results['sizes']
  assert set(size['topologies']) == {'1x8', '2x4', '1x1'}
  for name, record in size['topologies'].items():
    processes = int(name.split('x')[0])
    assert len(record['per_process']) == processes
    assert record['step_median_s'] > 0 and record['feed_median_s'] > 0
    for process in record['per_process']:
      assert process['batch_bytes'] == record['global_batch_bytes'] // (
        processes
      )
      assert process['max_rss_bytes'] > 0


def test_initialize_checks_the_address_before_joining(closed_address):
  # None of these reaches jax.distributed.initialize in this process.
  with pytest.raises(
    TimeoutError,
    match=f'could not reach the JAX coordinator at {closed_address}',
  ):
    distributed.initialize(closed_address, 2, 1, initialization_timeout=1)
  with pytest.raises(ValueError, match='cannot listen there'):
    distributed.initialize('10.255.255.1:1234', 2, 0)
  with pytest.raises(ValueError, match="'no.such.host.invalid' is not a known"):
    distributed.initialize('no.such.host.invalid:1234', 2, 0)
  with pytest.raises(ValueError, match='must be host:port'):
    distributed.initialize('localhost', 2, 1)
  with pytest.raises(ValueError, match=r'process_id must be in \[0, 2\)'):
    distributed.initialize('127.0.0.1:1234', 2, 2)


def python(code):
  return [sys.executable, '-c', code]


def test_launcher_kills_processes_that_hang(tmp_path):
  processes = local_processes.start_local_processes(
    [python('import time; time.sleep(60)')] * 2, 1, log_dir=tmp_path
  )
  exits = local_processes.wait_local_processes(processes, timeout=1, grace=1)
  assert [(exit.killed, exit.returncode) for exit in exits] == [
    (True, -signal.SIGKILL)
  ] * 2
  assert all(1 <= exit.seconds < 10 for exit in exits)
  assert 'was killed by the launcher' in exits[0].describe()


def test_launcher_gives_the_others_a_grace_then_kills_them(tmp_path):
  processes = local_processes.start_local_processes(
    [
      python('import sys; print("bad flag"); sys.exit(3)'),
      python('import time; time.sleep(60)'),
      python('print("done")'),
    ],
    2,
    log_dir=tmp_path,
  )
  failed, hung, done = local_processes.wait_local_processes(
    processes, timeout=60, grace=1
  )
  assert (failed.returncode, failed.killed) == (3, False)
  assert failed.tail() == 'bad flag\n'
  assert failed.describe().startswith('process 0 exited with status 3 after')
  assert (hung.returncode, hung.killed) == (-signal.SIGKILL, True)
  assert hung.seconds - failed.seconds < 10
  assert (done.returncode, done.tail()) == (0, 'done\n')


def test_launcher_sets_the_devices_of_each_process(tmp_path):
  processes = local_processes.start_local_processes(
    [python('import jax; print(jax.device_count(), jax.default_backend())')],
    3,
    log_dir=tmp_path,
  )
  (exit,) = local_processes.wait_local_processes(processes, timeout=60, grace=1)
  assert exit.returncode == 0, exit.tail()
  assert exit.tail().splitlines()[-1] == '3 cpu'


def test_process_rows_of_a_process_holding_every_row():
  mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ('data', 'model'))
  sharding = train_sharded.sharding(mesh, train_sharded.INPUT_AXES)
  np.testing.assert_array_equal(
    distributed.process_rows(sharding, (6, P, D)), np.arange(6)
  )
