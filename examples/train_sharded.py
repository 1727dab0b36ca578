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
TPUs the same command uses the real ones. On several hosts run the same
command on every host with ``--distributed``: ``jax.distributed.initialize()``
finds the coordinator on Cloud TPU, SLURM and Open MPI, or reads
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
the mesh then spans every host's devices and each host feeds only its own
shards of every batch.

  python examples/train_sharded.py --help
  python examples/train_sharded.py --data-parallel 2 --model-parallel 4
"""

import argparse
import functools
import os
import sys
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
from train_per_position import add_task_flags, sample  # noqa: E402

#: Logical axis names of the inputs (batch, positions, features) and labels.
INPUT_AXES = PartitionSpec('batch', 'positions', 'embed')
LABEL_AXES = PartitionSpec('batch', 'positions')


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


def put(array, mesh, axes):
  """Places a global host array on ``mesh``; each process feeds its shards."""
  sharding = nn.logical_to_mesh_sharding(axes, mesh, fd.sharding.DEFAULT_RULES)
  return jax.make_array_from_callback(
    array.shape, sharding, lambda index: array[index]
  )


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
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
    help='CPU devices to simulate when no accelerator is present',
  )
  parser.add_argument(
    '--distributed',
    action='store_true',
    help='multi-host: call jax.distributed.initialize() first',
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  return parser, parser.parse_args(argv)


def main(argv=None):
  parser, args = parse(argv)
  if args.distributed:
    jax.distributed.initialize()
  # Only before JAX starts its backends, and not over an explicit XLA flag.
  if 'xla_force_host_platform_device_count' not in os.environ.get(
    'XLA_FLAGS', ''
  ):
    jax.config.update('jax_num_cpu_devices', args.cpu_devices)
  devices = jax.device_count()
  data_parallel = args.data_parallel or (2 if devices % 2 == 0 else 1)
  model_parallel = args.model_parallel or devices // data_parallel
  if data_parallel * model_parallel != devices:
    parser.error(
      f'--data-parallel {data_parallel} x --model-parallel {model_parallel}'
      f' must equal the {devices} devices.'
    )
  for flag, size, parallel in (
    ('--batch-size', args.batch_size, data_parallel),
    ('--test-samples', args.test_samples, data_parallel),
    ('--positions', args.positions, model_parallel),
  ):
    if size % parallel:
      parser.error(f'{flag} {size} must be a multiple of {parallel}.')
  mesh = make_mesh(data_parallel, model_parallel)
  leader = jax.process_index() == 0

  # Every process draws the same data from the seed and feeds its shards.
  map_key, train_key, test_key = jax.random.split(jax.random.key(args.seed), 3)
  true_maps = jax.random.normal(
    map_key, (args.positions, args.in_features, args.classes)
  )
  inputs, labels = map(
    np.asarray, sample(train_key, true_maps, args.train_samples)
  )
  test_inputs, test_labels = map(
    np.asarray, sample(test_key, true_maps, args.test_samples)
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

  losses = []
  batches = inputs.shape[0] // args.batch_size
  start_time = time.perf_counter()
  for index in tqdm(range(args.steps), disable=args.quiet or not leader):
    start = (index % batches) * args.batch_size
    x = put(inputs[start : start + args.batch_size], mesh, INPUT_AXES)
    y = put(labels[start : start + args.batch_size], mesh, LABEL_AXES)
    state, loss = step(state, x, y)
    losses.append(float(loss))

  @jax.jit
  def accuracy(params, x, y):
    logits = model.apply({'params': params}, x)
    return jnp.mean(jnp.argmax(logits, -1) == y)

  held_out = float(
    accuracy(
      state[0],
      put(test_inputs, mesh, INPUT_AXES),
      put(test_labels, mesh, LABEL_AXES),
    )
  )
  if leader:
    print(
      f'loss {losses[0]:.3f} -> {losses[-1]:.3f} in {args.steps} steps,'
      f' {time.perf_counter() - start_time:.1f} s; held-out accuracy'
      f' {held_out:.3f} (chance {1 / args.classes:.3f})'
    )
  return {'losses': losses, 'accuracy': held_out}


if __name__ == '__main__':
  main()
