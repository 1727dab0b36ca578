"""Data-parallel x position-parallel training of PerPositionDense on a 2-D mesh.

The per-position task of ``train_per_position.py``, sharded with JAX's own
SPMD machinery: a ``jax.sharding.Mesh`` with axes ``('data', 'model')``,
the weights' Flax logical axis names (``fd.sharding.logically_partitioned``)
mapped onto it by ``fd.sharding.DEFAULT_RULES``, and ``jax.jit`` with
``NamedSharding`` s. The batch is split over ``data``, the positions (and
their kernels) over ``model``: each device holds 1/model of the kernel and
the forward pass needs no communication; the gradient is summed over
``data``.

On a CPU-only machine it simulates ``--cpu-devices`` devices (8 by default,
as ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` does); on GPUs or
TPUs the same command uses the real ones.

Several processes. ``--processes N --devices-per-process D`` runs N
processes on this machine, each with D CPU devices, joined over
``127.0.0.1`` (gloo collectives) into one mesh of N x D devices, as N hosts
would be. On a cluster, run the same command on every host with
``--distributed`` instead: ``jax.distributed.initialize()`` finds the
coordinator on Cloud TPU, SLURM, Open MPI and Kubernetes, or takes
``--coordinator-address``, ``--num-processes`` and ``--process-id``.
Either way each process makes and feeds only its own rows of every batch
(``jax.make_array_from_process_local_data``): row ``i`` of the data set is
drawn from the seed and ``i`` alone, so the global batch of a step, and
the training, are the same on any number of processes. Checkpoints
(``--checkpoint-dir``, on a file system all processes share) are written
by all processes together and restore onto any mesh; a run resumes from
the newest complete one. If a process dies, the others fail at their next
collective and end within ``--heartbeat-timeout`` seconds; start them all
again to resume.

  python examples/train_sharded.py --help
  python examples/train_sharded.py --data-parallel 2 --model-parallel 4
  python examples/train_sharded.py --processes 2 --devices-per-process 4
"""

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, PartitionSpec
from tqdm import tqdm

import flax_dense as fd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local_processes import (  # noqa: E402
  free_port,
  start_local_processes,
  wait_local_processes,
)
from train_per_position import add_task_flags, sample  # noqa: E402

#: Logical axis names of the inputs (batch, positions, features) and labels.
INPUT_AXES = PartitionSpec('batch', 'positions', 'embed')
LABEL_AXES = PartitionSpec('batch', 'positions')

#: Timeouts (seconds) of local processes unless given: shorter than JAX's
#: defaults (300 and 100), which suit a cluster that starts slowly.
LOCAL_INITIALIZATION_TIMEOUT = 60
LOCAL_HEARTBEAT_TIMEOUT = 10


def make_mesh(data: int, model: int) -> jax.sharding.Mesh:
  """A ``data`` x ``model`` mesh of all devices, sharded by jit's choices."""
  return jax.make_mesh(
    (data, model), ('data', 'model'), axis_types=(AxisType.Auto,) * 2
  )


def init_state(model, optimizer, mesh, key, positions, in_features):
  """Params and optimizer state, created directly in their shards.

  Returns:
    ``(state, shardings)``: ``state = (params, opt_state)`` and the
    ``NamedSharding`` of every leaf.
  """

  def create(key):
    params = model.init(key, jnp.zeros((1, positions, in_features)))['params']
    return params, optimizer.init(params)

  # Shapes only: the boxes' axis names give every leaf its sharding, and
  # the jitted create writes each device's shard where it lives.
  shardings = fd.sharding.mesh_shardings(jax.eval_shape(create, key), mesh)
  state = jax.jit(lambda key: nn.unbox(create(key)), out_shardings=shardings)
  return state(key), shardings


def loss_fn(model, params, x, y):
  logits = model.apply({'params': params}, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_step(model, optimizer, state, x, y):
  """One Adam step on a global batch; returns the new state and the loss."""
  params, opt_state = state
  loss, grads = jax.value_and_grad(functools.partial(loss_fn, model))(
    params, x, y
  )
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state), loss


def sharding(mesh, axes):
  """The ``NamedSharding`` of logical ``axes`` by the default rules."""
  return nn.logical_to_mesh_sharding(axes, mesh, fd.sharding.DEFAULT_RULES)


def put(array, mesh, axes):
  """Places a global host array, which every process holds, on ``mesh``."""
  return jax.make_array_from_callback(
    array.shape, sharding(mesh, axes), lambda index: array[index]
  )


@jax.jit
def sample_rows(key, true_maps, rows):
  """Rows ``rows`` of the data set: inputs (R, P, D) and labels (R, P).

  Row ``i`` is drawn from ``fold_in(key, i)`` alone, so any process can
  make any rows, and the data set is the same on any number of processes.
  """

  def row(index):
    inputs, labels = sample(jax.random.fold_in(key, index), true_maps, 1)
    return inputs[0], labels[0]

  return jax.vmap(row)(rows)


def feed(key, true_maps, start, size, mesh):
  """Rows ``start`` to ``start + size`` of the data set as a global batch.

  This process makes only the rows its own devices hold; the global batch
  exists only as the shards of all processes.
  """
  positions, in_features, _ = true_maps.shape
  shape = (size, positions, in_features)
  x_sharding = sharding(mesh, INPUT_AXES)
  rows = fd.sharding.process_rows(x_sharding, shape)
  x, y = map(np.asarray, sample_rows(key, true_maps, start + rows))
  return (
    jax.make_array_from_process_local_data(x_sharding, x, shape),
    jax.make_array_from_process_local_data(
      sharding(mesh, LABEL_AXES), y, shape[:2]
    ),
  )


@jax.jit
def digest(tree):
  """One ``uint32`` per 32-bit leaf, equal iff the bits are (almost surely).

  The sum, modulo 2**32, of every element's bits times an odd weight of its
  index: integer sums do not depend on the order of the additions, so the
  digest of a leaf is the same on any mesh and any number of processes,
  and a change of any one bit changes it.
  """

  def leaf_digest(leaf):
    bits = jax.lax.bitcast_convert_type(leaf, jnp.uint32).ravel()
    index = jnp.arange(bits.size, dtype=jnp.uint32)
    return jnp.sum(
      bits * (index * jnp.uint32(2654435761) * 2 + 1), dtype=jnp.uint32
    )

  return jax.tree.map(leaf_digest, tree)


def digests(state):
  """:func:`digest` of every leaf of ``state``, as Python ints."""
  return [int(value) for value in jax.tree.leaves(digest(state))]


def process_bytes(tree):
  """Bytes of ``tree``'s arrays on this process's devices."""
  return sum(
    shard.data.nbytes
    for leaf in jax.tree.leaves(tree)
    for shard in leaf.addressable_shards
  )


LAUNCHER = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
LAUNCHER.add_argument(
  '--processes',
  type=int,
  default=None,
  help='run this many local processes, joined into one mesh',
)
LAUNCHER.add_argument(
  '--devices-per-process',
  type=int,
  default=None,
  help='CPU devices of each local process (default: --cpu-devices / N)',
)
LAUNCHER.add_argument(
  '--timeout',
  type=float,
  default=900,
  help='seconds before the local processes are all killed',
)


def parse(argv):
  parser = argparse.ArgumentParser(
    description=__doc__.split('\n')[0], parents=[LAUNCHER], allow_abbrev=False
  )
  add_task_flags(parser, steps=300)
  parser.add_argument(
    '--data-parallel',
    type=int,
    default=None,
    help='size of the data mesh axis (default: 2 for an even device count)',
  )
  parser.add_argument(
    '--model-parallel',
    type=int,
    default=None,
    help='size of the model mesh axis (default: devices / data-parallel)',
  )
  parser.add_argument(
    '--cpu-devices',
    type=int,
    default=8,
    help='CPU devices to simulate (of each process) when no accelerator is'
    ' present',
  )
  parser.add_argument(
    '--checkpoint-dir',
    default=None,
    help='save checkpoints here and resume from the newest',
  )
  parser.add_argument(
    '--checkpoint-every', type=int, default=100, help='steps between saves'
  )
  parser.add_argument(
    '--distributed',
    action='store_true',
    help='one process of several: call jax.distributed.initialize() first',
  )
  parser.add_argument(
    '--coordinator-address',
    default=None,
    help='with --distributed: host:port of process 0 (default: detected)',
  )
  parser.add_argument('--num-processes', type=int, default=None)
  parser.add_argument('--process-id', type=int, default=None)
  parser.add_argument(
    '--initialization-timeout',
    type=int,
    default=None,
    help='seconds to wait for all processes to join (default: 300, or'
    f' {LOCAL_INITIALIZATION_TIMEOUT} with --processes)',
  )
  parser.add_argument(
    '--heartbeat-timeout',
    type=int,
    default=None,
    help='seconds of silence after which a process is taken for dead'
    f' (default: 100, or {LOCAL_HEARTBEAT_TIMEOUT} with --processes)',
  )
  parser.add_argument(
    '--results-file', default=None, help="write this process's results here"
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  return parser, parser.parse_args(argv)


def check_layout(parser, args, devices, where):
  """The mesh axis sizes for ``devices`` devices; flags that do not fit fail.

  Args:
    where: the devices, in words, e.g. ``'8 devices (2 processes x 4)'``.
  """
  data_parallel = args.data_parallel or (2 if devices % 2 == 0 else 1)
  model_parallel = args.model_parallel or devices // data_parallel
  if data_parallel * model_parallel != devices:
    parser.error(
      f'--data-parallel {data_parallel} x --model-parallel {model_parallel}'
      f' = {data_parallel * model_parallel} must equal the {where}.'
    )
  for flag, size, parallel, axis in (
    ('--batch-size', args.batch_size, data_parallel, 'data'),
    ('--test-samples', args.test_samples, data_parallel, 'data'),
    ('--positions', args.positions, model_parallel, 'model'),
  ):
    if size % parallel:
      parser.error(
        f'{flag} {size} must be a multiple of {parallel}, the size of the'
        f' {axis} mesh axis it is split over (over all processes).'
      )
  if args.checkpoint_every < 1:
    parser.error('--checkpoint-every must be a positive number of steps.')
  return data_parallel, model_parallel


def launch(
  argv,
  processes,
  devices_per_process,
  timeout,
  *,
  program=None,
  work_dir=None,
  echo_leader=True,
):
  """Runs this example as ``processes`` local processes, joined on 127.0.0.1.

  Args:
    argv: the example's flags for every process, without the launcher's.
    processes: how many.
    devices_per_process: CPU devices of each.
    timeout: seconds before all are killed.
    program: the command that runs the example, before its flags; default:
      this file with this Python.
    work_dir: where the processes' logs (``process-<i>.log``) and results
      go; default: a temporary directory, deleted if all succeed.
    echo_leader: whether process 0 writes to this process's output rather
      than to its log.

  Returns:
    ``(exits, results)``: how each process ended
    (``local_processes.ProcessExit``), and the results each wrote, ``None``
    for a process that wrote none.
  """
  program = program or [sys.executable, os.path.abspath(__file__)]
  # The shorter local timeouts, unless given; given ones come later and win.
  argv = [
    f'--initialization-timeout={LOCAL_INITIALIZATION_TIMEOUT}',
    f'--heartbeat-timeout={LOCAL_HEARTBEAT_TIMEOUT}',
    *argv,
  ]
  heartbeat = parse(argv)[1].heartbeat_timeout
  work = work_dir or tempfile.mkdtemp(prefix='train_sharded-')
  address = f'127.0.0.1:{free_port()}'
  results_files = [
    os.path.join(work, f'results-{index}.json') for index in range(processes)
  ]
  commands = []
  for index in range(processes):
    joining = ['--distributed', f'--coordinator-address={address}']
    joining += [f'--num-processes={processes}', f'--process-id={index}']
    commands.append(
      program
      + argv
      + (joining if processes > 1 else [])
      + [f'--results-file={results_files[index]}']
    )
  started = start_local_processes(
    commands, devices_per_process, log_dir=work, echo_leader=echo_leader
  )
  # Survivors of a dead process end by themselves within the heartbeat
  # timeout (JAX's shutdown gives up on it); only then are they killed.
  exits = wait_local_processes(started, timeout=timeout, grace=heartbeat + 10)
  results = []
  for path in results_files:
    if os.path.exists(path):
      with open(path) as file:
        results.append(json.load(file))
    else:
      results.append(None)
  if work_dir is None and all(exit.returncode == 0 for exit in exits):
    shutil.rmtree(work)
  return exits, results


def launched(parser, args, argv):
  """Runs the local processes of ``--processes``; returns process 0's results.

  Its results gain ``processes``: those of every process.

  Raises:
    RuntimeError: if a process fails or the processes run past
      ``--timeout``; the message says how each ended and ends with the
      output of the failed ones.
  """
  if args.distributed:
    parser.error('--processes starts its own processes: drop --distributed.')
  if args.processes < 1:
    parser.error(f'--processes must be at least 1, got {args.processes}.')
  per_process = args.devices_per_process or args.cpu_devices // args.processes
  if per_process < 1:
    parser.error(
      f'--devices-per-process must be at least 1, got {per_process}.'
    )
  check_layout(
    parser,
    args,
    args.processes * per_process,
    f'{args.processes * per_process} devices of {args.processes} processes'
    f' x {per_process}',
  )
  _, flags = LAUNCHER.parse_known_args(argv)
  exits, results = launch(flags, args.processes, per_process, args.timeout)
  failed = [exit for exit in exits if exit.returncode != 0]
  if failed:
    details = ''.join(
      f'\n--- output of process {exit.process_id} ({exit.log}) ---\n'
      f'{exit.tail()}'
      for exit in failed
      if exit.log
    )
    raise RuntimeError(
      f'train_sharded: {len(failed)} of {args.processes} processes failed'
      f' or were killed (timeout {args.timeout:g} s): '
      + '; '.join(exit.describe() for exit in exits)
      + details
    )
  return {**results[0], 'processes': results}


def train(parser, args):
  """Trains on this process's share of the mesh; returns its results."""
  joining = (args.coordinator_address, args.num_processes, args.process_id)
  if not args.distributed and joining != (None, None, None):
    parser.error(
      '--coordinator-address, --num-processes and --process-id need'
      ' --distributed.'
    )
  # Only before JAX starts its backends, and not over an explicit XLA flag.
  if 'xla_force_host_platform_device_count' not in os.environ.get(
    'XLA_FLAGS', ''
  ):
    jax.config.update('jax_num_cpu_devices', args.cpu_devices)
  if args.distributed:
    fd.sharding.initialize(
      args.coordinator_address,
      args.num_processes,
      args.process_id,
      initialization_timeout=args.initialization_timeout or 300,
      heartbeat_timeout=args.heartbeat_timeout or 100,
    )
  devices = jax.device_count()
  data_parallel, model_parallel = check_layout(
    parser,
    args,
    devices,
    f'{devices} devices of {jax.process_count()} process(es)'
    f' x {jax.local_device_count()}',
  )
  mesh = make_mesh(data_parallel, model_parallel)
  leader = jax.process_index() == 0

  map_key, train_key, test_key = jax.random.split(jax.random.key(args.seed), 3)
  true_maps = jax.random.normal(
    map_key, (args.positions, args.in_features, args.classes)
  )
  model = fd.sharding.logically_partitioned(fd.PerPositionDense(args.classes))
  optimizer = optax.adam(args.learning_rate)
  state, shardings = init_state(
    model,
    optimizer,
    mesh,
    jax.random.key(args.seed),
    args.positions,
    args.in_features,
  )
  step = jax.jit(
    functools.partial(train_step, model, optimizer),
    out_shardings=(shardings, None),
    donate_argnums=0,
  )
  kernel = state[0]['kernel']
  if leader:
    print(
      f'JAX backend: {jax.default_backend()}; {jax.process_count()}'
      f' process(es); mesh {dict(mesh.shape)}; kernel {kernel.shape} split'
      f' {kernel.sharding.spec} into shards of'
      f' {kernel.addressable_shards[0].data.shape} on'
      f' {len(kernel.sharding.device_set)} devices'
    )

  # The train state is all a checkpoint holds: the data of a step depends
  # on the step alone, so a resumed run goes on exactly as if never stopped.
  first_step, restored = 0, None
  saved_step = args.checkpoint_dir and fd.checkpoint.latest_step(
    args.checkpoint_dir
  )
  if saved_step:
    # Onto this run's shardings, whatever the mesh and processes that saved.
    saved = fd.checkpoint.restore(
      args.checkpoint_dir,
      target={'params': state[0], 'opt_state': state[1]},
    )
    first_step, state = saved_step, (saved['params'], saved['opt_state'])
    restored = digests(state)
    if leader:
      print(f'resumed at step {first_step} from {args.checkpoint_dir}')

  losses, feed_seconds, step_seconds, saved_digests = [], [], [], {}
  batches = args.train_samples // args.batch_size
  for index in tqdm(
    range(first_step, args.steps),
    disable=args.quiet or not leader,
    initial=first_step,
    total=args.steps,
  ):
    start = time.perf_counter()
    start_row = (index % batches) * args.batch_size
    x, y = feed(train_key, true_maps, start_row, args.batch_size, mesh)
    fed = time.perf_counter()
    try:
      state, loss = step(state, x, y)
      losses.append(float(loss))
    except jax.errors.JaxRuntimeError as error:
      if jax.process_count() == 1:
        raise
      raise RuntimeError(
        f'train_sharded: process {jax.process_index()} of'
        f' {jax.process_count()}: step {index + 1} failed, most likely'
        ' because another process died. Start all processes again to'
        ' resume from the newest checkpoint'
        f' ({args.checkpoint_dir or "none: --checkpoint-dir is not set"}).'
      ) from error
    feed_seconds.append(fed - start)
    step_seconds.append(time.perf_counter() - fed)
    done = index + 1
    if args.checkpoint_dir and (
      done % args.checkpoint_every == 0 or done == args.steps
    ):
      fd.checkpoint.save(
        args.checkpoint_dir,
        {'params': state[0], 'opt_state': state[1]},
        step=done,
      )
      saved_digests[str(done)] = digests(state)

  @jax.jit
  def accuracy(params, x, y):
    logits = model.apply({'params': params}, x)
    return jnp.mean(jnp.argmax(logits, -1) == y)

  test_x, test_y = feed(test_key, true_maps, 0, args.test_samples, mesh)
  held_out = float(accuracy(state[0], test_x, test_y))
  # The first steps compile.
  median_step = float(np.median(step_seconds[2:] or step_seconds or [0]))
  median_feed = float(np.median(feed_seconds[2:] or feed_seconds or [0]))
  if leader and losses:
    print(
      f'loss {losses[0]:.3f} -> {losses[-1]:.3f} in steps {first_step + 1}'
      f' to {args.steps}, median step {median_step * 1e3:.2f} ms (and'
      f' {median_feed * 1e3:.2f} ms to make its batch);'
      f' held-out accuracy {held_out:.3f} (chance {1 / args.classes:.3f})'
    )
  return {
    'losses': losses,
    'accuracy': held_out,
    'digest': digests(state),
    'restored_digest': restored,
    'saved_digests': saved_digests,
    'resumed_from': first_step,
    # Medians: the jitted step to its loss, and making and placing this
    # process's rows of the batch.
    'step_seconds': median_step,
    'feed_seconds': median_feed,
    'process_index': jax.process_index(),
    'process_count': jax.process_count(),
    'mesh': dict(mesh.shape),
    'batch_bytes': process_bytes((x, y)) if step_seconds else 0,
    'global_batch_bytes': x.nbytes + y.nbytes if step_seconds else 0,
    'state_bytes': process_bytes(state),
    'global_state_bytes': sum(leaf.nbytes for leaf in jax.tree.leaves(state)),
    # Python, JAX and XLA included; ru_maxrss is in KiB, on macOS in bytes.
    'max_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    * (1 if sys.platform == 'darwin' else 1024),
  }


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  parser, args = parse(argv)
  if args.processes is not None:
    return launched(parser, args, argv)
  results = train(parser, args)
  if args.results_file:
    with open(args.results_file, 'w') as file:
      json.dump(results, file)
  return results


if __name__ == '__main__':
  main()
