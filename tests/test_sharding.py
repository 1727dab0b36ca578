"""Tests of sharding: logical axis names, and training on a device mesh.

The mesh tests need 8 devices. ``test_on_8_simulated_devices`` reruns this
file in a subprocess with ``--xla_force_host_platform_device_count=8`` (XLA
reads it once, before JAX starts its CPU backend); in a process with fewer
devices they skip.
"""

import functools
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import flax_dense as fd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'examples'))
import train_sharded  # noqa: E402

# Batch, positions, in_features and features: D and K differ from every other
# size, so an array with both a D and a K axis can only be kernel data.
B, P, D, K = 8, 16, 6, 5
SIMULATED = 'FLAX_DENSE_SIMULATED_DEVICES'


def test_default_axis_names(key):
  assert fd.PerPositionDense.kernel_axes == ('positions', 'embed', 'classes')
  assert fd.PerPositionDense.bias_axes == ('positions', 'classes')
  assert fd.ConstProduct.kernel_axes == ('embed',)
  layer = fd.sharding.logically_partitioned(fd.PerPositionDense(K))
  variables = jax.eval_shape(layer.init, key, jnp.ones((B, P, D)))
  specs = nn.get_partition_spec(variables)
  assert specs == {
    'params': {
      'bias': PartitionSpec('positions', 'classes'),
      'kernel': PartitionSpec('positions', 'embed', 'classes'),
    }
  }


def test_user_wrapped_initializer(key):
  init = nn.with_logical_partitioning(
    nn.initializers.lecun_normal(batch_axis=(0,)),
    fd.PerPositionDense.kernel_axes,
  )
  layer = fd.PerPositionDense(K, kernel_init=init)
  x = jnp.ones((B, P, D))
  variables = layer.init(key, x)
  kernel = variables['params']['kernel']
  assert isinstance(kernel, nn.LogicallyPartitioned)
  assert kernel.names == ('positions', 'embed', 'classes')
  # Applying boxed variables is the plain layer applied to unboxed ones.
  np.testing.assert_array_equal(
    layer.apply(variables, x),
    fd.PerPositionDense(K).apply(nn.unbox(variables), x),
  )


def test_const_product(key):
  x = jnp.ones((B, 3))
  trainable = fd.sharding.logically_partitioned(fd.ConstProduct(trainable=True))
  assert nn.get_partition_spec(jax.eval_shape(trainable.init, key, x)) == {
    'params': {'kernel': PartitionSpec('embed')}
  }
  # Given weights carry no names: they are replicated.
  frozen = fd.sharding.logically_partitioned(fd.ConstProduct(weights=[1, 2, 3]))
  assert nn.get_partition_spec(jax.eval_shape(frozen.init, key, x)) == {
    'constants': {'kernel': PartitionSpec()}
  }


def test_attention_decoder_accepts_wrapped_initializers(key):
  # Its kernel_init serves matrices and the vector V_a alike, so no single
  # tuple of names fits it; the recurrent and bias initializers do fit.
  layer = fd.AttentionDecoder(
    units=4,
    output_dim=3,
    recurrent_init=nn.with_logical_partitioning(
      nn.initializers.orthogonal(), (None, 'units')
    ),
    bias_init=nn.with_logical_partitioning(
      nn.initializers.zeros_init(), ('units',)
    ),
  )
  x = jnp.ones((1, 2, 6))
  # Shapes only: its eager init is slow, and the boxes are all we check.
  variables = jax.eval_shape(layer.init, key, x)
  specs = nn.get_partition_spec(variables)['params']
  assert specs['U_r'] == PartitionSpec(None, 'units')
  assert specs['b_a'] == PartitionSpec('units')
  assert variables['params']['U_r'].value.shape == (4, 4)
  outputs = jax.eval_shape(layer.apply, variables, x)
  assert outputs.shape == (1, 2, 3)


def test_module_without_axis_names():
  with pytest.raises(
    ValueError,
    match='logically_partitioned: Dense declares no default logical axis names',
  ):
    fd.sharding.logically_partitioned(nn.Dense(3))


def run_mesh_tests_on_8_devices(test_file):
  """Runs the ``mesh`` tests of ``test_file`` in an 8-device subprocess."""
  flags = os.environ.get('XLA_FLAGS', '')
  env = dict(
    os.environ,
    XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count=8',
    JAX_PLATFORMS='cpu',
    **{SIMULATED: '8'},
  )
  result = subprocess.run(
    [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider']
    + [test_file, '-k', 'mesh'],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'skipped' not in result.stdout, result.stdout


def test_on_8_simulated_devices():
  run_mesh_tests_on_8_devices(__file__)


@pytest.fixture(scope='module')
def mesh():
  if jax.device_count() < 8:
    if os.environ.get(SIMULATED):
      pytest.fail(f'{SIMULATED} is set but JAX sees {jax.device_count()}.')
    pytest.skip('needs 8 devices; run by test_on_8_simulated_devices')
  return train_sharded.make_mesh(2, 4)


@pytest.fixture(scope='module')
def problem(mesh):
  """A sharded model, its state, and a sharded batch, with host copies.

  Shared by the tests of this module, which must not donate its arrays.
  """
  model = fd.sharding.logically_partitioned(fd.PerPositionDense(K))
  optimizer = optax.adam(1e-2)
  state, shardings = train_sharded.init_state(
    model, optimizer, mesh, jax.random.key(0), P, D
  )
  rng = np.random.default_rng(0)
  x = rng.standard_normal((B, P, D), np.float32)
  y = rng.integers(0, K, (B, P), np.int32)
  return {
    'model': model,
    'optimizer': optimizer,
    'state': state,
    'shardings': shardings,
    'x': x,
    'y': y,
    'sharded_x': train_sharded.put(x, mesh, train_sharded.INPUT_AXES),
    'sharded_y': train_sharded.put(y, mesh, train_sharded.LABEL_AXES),
  }


def on_one_device(tree):
  return jax.device_put(tree, jax.devices()[0])


def test_mesh_kernel_is_split_over_positions(problem):
  params = problem['state'][0]
  kernel, bias = params['kernel'], params['bias']
  assert kernel.sharding.spec == PartitionSpec('model', None, None)
  assert kernel.sharding.device_set == set(jax.devices())
  # Each device holds the kernels of 4 of the 16 positions, no more.
  assert {shard.data.shape for shard in kernel.addressable_shards} == {
    (P // 4, D, K)
  }
  assert {shard.data.shape for shard in bias.addressable_shards} == {
    (P // 4, K)
  }
  assert not kernel.sharding.is_fully_replicated
  # The Adam moments follow their params.
  adam = problem['state'][1][0]
  assert adam.mu['kernel'].sharding == kernel.sharding
  assert adam.count.sharding.is_fully_replicated


def test_mesh_step_matches_one_device(problem):
  model, optimizer = problem['model'], problem['optimizer']
  value_and_grad = jax.jit(
    jax.value_and_grad(functools.partial(train_sharded.loss_fn, model))
  )
  params = problem['state'][0]
  loss, grads = value_and_grad(
    params, problem['sharded_x'], problem['sharded_y']
  )
  single_loss, single_grads = value_and_grad(
    on_one_device(params), on_one_device(problem['x']), problem['y']
  )
  assert grads['kernel'].sharding.is_equivalent_to(params['kernel'].sharding, 3)
  np.testing.assert_allclose(loss, single_loss, rtol=1e-6)
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(
      grads[name], single_grads[name], rtol=1e-6, atol=1e-9
    )

  step = jax.jit(functools.partial(train_sharded.train_step, model, optimizer))
  state, single_state = problem['state'], on_one_device(problem['state'])
  for _ in range(3):
    state, loss = step(state, problem['sharded_x'], problem['sharded_y'])
    single_state, single_loss = step(
      single_state, on_one_device(problem['x']), problem['y']
    )
    np.testing.assert_allclose(loss, single_loss, rtol=1e-6)
  np.testing.assert_allclose(
    state[0]['kernel'], single_state[0]['kernel'], rtol=1e-5, atol=1e-7
  )


def collectives(compiled_hlo):
  """``(op, result type)`` of every cross-device collective in the HLO."""
  pattern = re.compile(
    r'= (.+?) (all-gather|all-reduce|all-to-all|collective-permute'
    r'|reduce-scatter)(?:-start)?\('
  )
  return [
    (match.group(2), match.group(1))
    for match in map(pattern.search, compiled_hlo.splitlines())
    if match
  ]


def holds_kernel_data(result_type):
  """Whether an HLO result type has the kernel's D and K axes (or D * K)."""
  shapes = re.findall(r'\[([\d,]*)\]', result_type)
  for shape in shapes:
    dims = [int(d) for d in shape.split(',') if d]
    if (D in dims and K in dims) or D * K in dims:
      return True
  return False


# Small, and big enough (an 8 MB batch) for a formulation that works through
# the positions in cache-sized chunks to take more than one chunk. Only
# compiled, never run: the batch is abstract.
@pytest.mark.parametrize('batch, positions', [(B, P), (4096, 64)])
@pytest.mark.parametrize('program', ['forward', 'train_step'])
def test_mesh_never_gathers_the_kernel(mesh, program, batch, positions):
  model = fd.sharding.logically_partitioned(fd.PerPositionDense(K))
  optimizer = optax.adam(1e-2)
  state, _ = train_sharded.init_state(
    model, optimizer, mesh, jax.random.key(0), positions, D
  )

  def abstract(shape, dtype, axes):
    sharding = nn.logical_to_mesh_sharding(
      axes, mesh, fd.sharding.DEFAULT_RULES
    )
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

  x = abstract((batch, positions, D), jnp.float32, train_sharded.INPUT_AXES)
  y = abstract((batch, positions), jnp.int32, train_sharded.LABEL_AXES)
  if program == 'forward':
    forward = jax.jit(lambda params, x: model.apply({'params': params}, x))
    lowered = forward.lower(state[0], x)
  else:
    step = functools.partial(train_sharded.train_step, model, optimizer)
    lowered = jax.jit(step).lower(state, x, y)
  found = collectives(lowered.compile().as_text())
  kernel_gathers = [
    (op, result)
    for op, result in found
    if op == 'all-gather' and holds_kernel_data(result)
  ]
  assert not kernel_gathers, (
    f'the {program} of PerPositionDense gathers kernel data across devices'
    f' although the kernel and inputs are split alike over positions:'
    f' {found}'
  )
  if program == 'forward':
    # Stronger: position-parallel layers need no communication at all.
    assert not found, f'the forward pass communicates: {found}'
  else:
    # Data parallelism sums the gradients (and the loss): all-reduces only.
    assert {op for op, _ in found} == {'all-reduce'}, found


def test_mesh_holds_kernel_data_detects_a_gather(problem):
  # The check itself: a replicated kernel forced out of its shards is seen.
  replicated = NamedSharding(train_sharded.make_mesh(2, 4), PartitionSpec())
  gather = jax.jit(lambda k: k * 2, out_shardings=replicated)
  found = collectives(
    gather.lower(problem['state'][0]['kernel']).compile().as_text()
  )
  assert any(op == 'all-gather' and holds_kernel_data(t) for op, t in found)


def test_mesh_checkpoint_restores_onto_a_given_sharding(problem, tmp_path):
  state = problem['state']
  fd.checkpoint.save(tmp_path, state)
  # Onto another mesh layout: positions over 2 devices, batch over 4.
  other = train_sharded.make_mesh(4, 2)
  target = jax.tree.map(
    lambda leaf, sharding: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=NamedSharding(other, sharding.spec)
    ),
    state,
    problem['shardings'],
  )
  restored = fd.checkpoint.restore(tmp_path, target=target)
  kernel = restored[0]['kernel']
  assert kernel.sharding == target[0]['kernel'].sharding
  assert {shard.data.shape for shard in kernel.addressable_shards} == {
    (P // 2, D, K)
  }
  for got, want in zip(
    jax.tree.leaves(restored), jax.tree.leaves(state), strict=True
  ):
    assert got.dtype == want.dtype
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()


def test_mesh_example_trains(mesh, capsys):
  del mesh  # Only for its 8 devices.
  results = train_sharded.main(
    ['--positions', '16', '--in-features', '6', '--classes', '5']
    + ['--train-samples', '256', '--test-samples', '64', '--batch-size', '32']
    + ['--steps', '40', '--quiet']
  )
  out = capsys.readouterr().out
  assert "mesh {'data': 2, 'model': 4}" in out
  assert 'shards of (4, 6, 5) on 8 devices' in out
  assert results['losses'][-1] < 0.7 * results['losses'][0]
  assert results['accuracy'] > 0.5
