"""Tests of sharding: logical axis names, and training on a device mesh.

Linen and NNX models alike: the layers' logical axis names, mapped on a
mesh. The mesh tests need 8 devices. ``test_on_8_simulated_devices`` reruns
this file's mesh tests of each front end in a subprocess with
``--xla_force_host_platform_device_count=8`` (XLA reads it once, before JAX
starts its CPU backend); in a process with fewer devices they skip.
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
from flax import nnx
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


#: The error of a module without axis names, on each front end.
NO_AXIS_NAMES = {
  'linen': (
    lambda: nn.Dense(3),
    'logically_partitioned: Dense declares no default logical axis names',
  ),
  'nnx': (
    lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
    'logically_partitioned: no variable of Linear or its submodules has'
    ' default logical axis names',
  ),
}


def test_module_without_axis_names(api):
  make, message = NO_AXIS_NAMES[api]
  with pytest.raises(ValueError, match=message):
    fd.sharding.logically_partitioned(make())


def run_mesh_tests_on_8_devices(test_file, select):
  """Runs the tests of ``test_file`` that ``-k select`` picks in an 8-device
  subprocess."""
  flags = os.environ.get('XLA_FLAGS', '')
  env = dict(
    os.environ,
    XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count=8',
    JAX_PLATFORMS='cpu',
    **{SIMULATED: '8'},
  )
  result = subprocess.run(
    [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider']
    + [test_file, '-k', select],
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'skipped' not in result.stdout, result.stdout


def test_on_8_simulated_devices(api):
  # The NNX mesh tests are named test_mesh_nnx_*.
  select = 'mesh and nnx' if api == 'nnx' else 'mesh and not nnx'
  run_mesh_tests_on_8_devices(__file__, select)


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


# ---------------------------------------------------------------------------
# NNX models.

# One transformation for every optimizer, so that nnx.jit compiles the step
# once per placement, not once per optimizer (it is static data of each).
ADAM = optax.adam(1e-2)


def per_position(seed=0, **kwargs):
  return fd.nnx.PerPositionDense(P, D, K, rngs=nnx.Rngs(seed), **kwargs)


def one_by_one_mesh():
  """A mesh of one device with the axes of the 2-D mesh."""
  return train_sharded.make_mesh(1, 1)


def test_nnx_layers_declare_the_linen_names():
  for name in ('PerPositionDense', 'ConstProduct'):
    nnx_class, linen_class = getattr(fd.nnx, name), getattr(fd, name)
    assert nnx_class.kernel_axes == linen_class.kernel_axes
  assert fd.nnx.PerPositionDense.bias_axes == fd.PerPositionDense.bias_axes


def test_names_are_set_in_place():
  layer = per_position()
  assert fd.sharding.logically_partitioned(layer) is layer
  assert layer.kernel.out_sharding == ('positions', 'embed', 'classes')
  assert layer.bias.out_sharding == ('positions', 'classes')
  assert nnx.get_partition_spec(nnx.state(layer)) == nnx.State(
    {
      'bias': layer.bias.replace(PartitionSpec('positions', 'classes')),
      'kernel': layer.kernel.replace(
        PartitionSpec('positions', 'embed', 'classes')
      ),
    }
  )


class Model(nnx.Module):
  """Named layers, a bias-less one, and a layer that declares no names."""

  def __init__(self, rngs):
    self.first = fd.nnx.PerPositionDense(P, D, K, rngs=rngs)
    self.second = fd.nnx.PerPositionDense(P, K, K, use_bias=False, rngs=rngs)
    self.mix = nnx.Linear(K, K, rngs=rngs)
    self.scale = fd.nnx.ConstProduct(K, trainable=True, rngs=rngs)
    self.frozen = fd.nnx.ConstProduct(K, weights=np.arange(1.0, K + 1))

  def __call__(self, x):
    y = self.mix(self.second(self.first(x)))
    return self.scale(y) + self.frozen(y)


def test_every_submodule_is_named_and_others_are_left_alone():
  model = fd.sharding.logically_partitioned(Model(nnx.Rngs(0)))
  assert model.first.kernel.out_sharding == fd.nnx.PerPositionDense.kernel_axes
  assert model.second.kernel.out_sharding == fd.nnx.PerPositionDense.kernel_axes
  assert model.second.bias is None
  assert model.scale.kernel.out_sharding == ('embed',)
  # Frozen weights are named too (linen's, created without an initializer,
  # are not); DEFAULT_RULES replicate 'embed' either way.
  assert isinstance(model.frozen.kernel, fd.nnx.Constant)
  assert model.frozen.kernel.out_sharding == ('embed',)
  assert 'out_sharding' not in model.mix.kernel.get_metadata()
  shardings = fd.sharding.mesh_shardings(nnx.state(model), one_by_one_mesh())
  spec = lambda variable: variable.get_value().spec  # noqa: E731
  assert spec(shardings['first']['kernel']) == PartitionSpec(
    'model', None, None
  )
  assert spec(shardings['first']['bias']) == PartitionSpec('model', None)
  assert spec(shardings['mix']['kernel']) == PartitionSpec()
  assert spec(shardings['frozen']['kernel']) == PartitionSpec(None)


def test_names_given_by_the_user_are_kept():
  names = ('positions', None, None)
  layer = fd.sharding.logically_partitioned(
    per_position(
      kernel_metadata={'out_sharding': names, 'eager_sharding': False}
    )
  )
  assert layer.kernel.out_sharding == names
  assert layer.bias.out_sharding == fd.nnx.PerPositionDense.bias_axes


def test_shardings_match_linen():
  mesh = one_by_one_mesh()
  linen = fd.sharding.logically_partitioned(fd.PerPositionDense(K))
  abstract = jax.eval_shape(linen.init, jax.random.key(0), jnp.ones((B, P, D)))
  want = fd.sharding.mesh_shardings(abstract, mesh)['params']
  layer = fd.sharding.logically_partitioned(per_position())
  got = fd.sharding.mesh_shardings(layer, mesh)  # the module: its state
  assert jax.tree.structure(got) == jax.tree.structure(nnx.state(layer))
  for name in ('kernel', 'bias'):
    assert got[name].get_value() == want[name]


def test_optimizer_state_carries_the_names_unplaced():
  # No mesh in context: the moments, copies of the named params, are
  # created unplaced (eager_sharding=False), named alike.
  layer = fd.sharding.logically_partitioned(per_position())
  optimizer = nnx.Optimizer(layer, ADAM, wrt=nnx.Param)
  adam = optimizer.opt_state[0]
  assert adam.mu['kernel'].out_sharding == layer.kernel.out_sharding
  assert adam.nu['bias'].out_sharding == layer.bias.out_sharding
  shardings = fd.sharding.mesh_shardings(optimizer, one_by_one_mesh())
  adam = shardings['opt_state'][0]
  assert adam['mu']['kernel'].get_value().spec == PartitionSpec(
    'model', None, None
  )
  assert adam['count'].get_value().spec == PartitionSpec()
  assert shardings['step'].get_value().spec == PartitionSpec()


def split_over_positions(mesh):
  """``kernel`` and ``bias`` shardings: positions over ``model``."""
  return {
    'kernel': NamedSharding(mesh, PartitionSpec('model', None, None)),
    'bias': NamedSharding(mesh, PartitionSpec('model', None)),
  }


def assert_split_over_positions(layer, mesh):
  for name, sharding in split_over_positions(mesh).items():
    array = getattr(layer, name).get_value()
    assert array.sharding.is_equivalent_to(sharding, array.ndim), name
    assert array.sharding.device_set == set(jax.devices())
    # Each device holds 4 of the 16 positions, no more.
    assert {shard.data.shape for shard in array.addressable_shards} == {
      (P // 4, *array.shape[1:])
    }


def assert_same_bytes(got, want):
  for name in ('kernel', 'bias'):
    got_array = np.asarray(getattr(got, name).get_value())
    want_array = np.asarray(getattr(want, name).get_value())
    assert got_array.tobytes() == want_array.tobytes(), name


def test_mesh_nnx_jitted_init_is_split_over_positions(mesh):
  @nnx.jit
  def create():
    layer = fd.sharding.logically_partitioned(per_position())
    state = nnx.state(layer)
    shardings = fd.sharding.mesh_shardings(state, mesh)
    nnx.update(layer, jax.lax.with_sharding_constraint(state, shardings))
    return layer

  layer = create()
  assert_split_over_positions(layer, mesh)
  assert_same_bytes(layer, per_position())
  # An optimizer built from it has its moments in the params' shards.
  optimizer = nnx.Optimizer(layer, ADAM, wrt=nnx.Param)
  mu = optimizer.opt_state[0].mu['kernel'].get_value()
  assert mu.sharding.is_equivalent_to(layer.kernel.get_value().sharding, 3)


def test_mesh_nnx_device_put_and_update(mesh):
  layer = fd.sharding.logically_partitioned(per_position())
  state = nnx.state(layer)
  nnx.update(
    layer, jax.device_put(state, fd.sharding.mesh_shardings(state, mesh))
  )
  assert_split_over_positions(layer, mesh)
  assert_same_bytes(layer, per_position())


def test_mesh_nnx_shardings_are_those_of_flax_eager_sharding(mesh):
  # Flax places named variables as it creates them, under a mesh and rules.
  with jax.set_mesh(mesh), nnx.logical_axis_rules(fd.sharding.DEFAULT_RULES):
    layer = per_position(
      kernel_metadata={'out_sharding': fd.nnx.PerPositionDense.kernel_axes},
      bias_metadata={'out_sharding': fd.nnx.PerPositionDense.bias_axes},
    )
  assert_split_over_positions(layer, mesh)
  shardings = fd.sharding.mesh_shardings(layer, mesh)
  for name in ('kernel', 'bias'):
    array = getattr(layer, name).get_value()
    assert (
      shardings[name].get_value().is_equivalent_to(array.sharding, array.ndim)
    )


def loss_fn(layer, x, y):
  logits = layer(x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(layer, optimizer, x, y):
  loss, grads = nnx.value_and_grad(loss_fn)(layer, x, y)
  optimizer.update(layer, grads)
  return loss


def sharded_layer_and_optimizer(mesh):
  layer = fd.sharding.logically_partitioned(per_position())
  optimizer = nnx.Optimizer(layer, ADAM, wrt=nnx.Param)
  for node in (layer, optimizer):
    state = nnx.state(node)
    shardings = fd.sharding.mesh_shardings(state, mesh)
    nnx.update(node, jax.device_put(state, shardings))
  return layer, optimizer


@pytest.fixture(scope='module')
def batch():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((B, P, D), np.float32)
  y = rng.integers(0, K, (B, P), np.int32)
  return x, y


def test_mesh_nnx_train_step_matches_one_device(mesh, batch):
  x, y = batch
  layer, optimizer = sharded_layer_and_optimizer(mesh)
  adam = optimizer.opt_state[0]
  assert adam.mu['kernel'].get_value().sharding == (
    layer.kernel.get_value().sharding
  )
  single = per_position()  # on the default device, from the same seed
  single_optimizer = nnx.Optimizer(single, ADAM, wrt=nnx.Param)
  sharded_x = train_sharded.put(x, mesh, train_sharded.INPUT_AXES)
  sharded_y = train_sharded.put(y, mesh, train_sharded.LABEL_AXES)
  for _ in range(3):
    loss = train_step(layer, optimizer, sharded_x, sharded_y)
    single_loss = train_step(single, single_optimizer, x, y)
    # float32 sums in another order (the data-parallel all-reduce of the
    # loss and gradients): equal to rounding, as for linen above.
    np.testing.assert_allclose(loss, single_loss, rtol=1e-6)
  assert int(optimizer.step.get_value()) == 3
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(
      getattr(layer, name).get_value(),
      getattr(single, name).get_value(),
      rtol=1e-5,
      atol=1e-7,
    )
  # The step keeps the params and the Adam moments in their shards.
  assert_split_over_positions(layer, mesh)
  mu = optimizer.opt_state[0].mu['kernel'].get_value()
  assert mu.sharding.is_equivalent_to(layer.kernel.get_value().sharding, 3)


def test_mesh_nnx_train_step_never_gathers_the_kernel(mesh, batch):
  layer, optimizer = sharded_layer_and_optimizer(mesh)
  graphdef, state = nnx.split((layer, optimizer))
  x = train_sharded.put(batch[0], mesh, train_sharded.INPUT_AXES)
  y = train_sharded.put(batch[1], mesh, train_sharded.LABEL_AXES)

  def step(state, x, y):
    layer, optimizer = nnx.merge(graphdef, state)
    loss = train_step(layer, optimizer, x, y)
    return nnx.state((layer, optimizer)), loss

  found = collectives(jax.jit(step).lower(state, x, y).compile().as_text())
  assert not [
    (op, result)
    for op, result in found
    if op == 'all-gather' and holds_kernel_data(result)
  ], found
  # Data parallelism sums the gradients (and the loss): all-reduces only.
  assert {op for op, _ in found} == {'all-reduce'}, found


def test_mesh_nnx_checkpoint_restores_onto_another_layout(mesh, tmp_path):
  layer, optimizer = sharded_layer_and_optimizer(mesh)
  saved = {'layer': nnx.state(layer), 'optimizer': nnx.state(optimizer)}
  fd.checkpoint.save(tmp_path, saved)
  # Onto another mesh: positions over 2 devices, batch over 4; the target
  # is abstract, each variable a jax.ShapeDtypeStruct with its sharding.
  other = train_sharded.make_mesh(4, 2)
  target = jax.tree.map(
    lambda array, sharding: jax.ShapeDtypeStruct(
      array.shape, array.dtype, sharding=sharding
    ),
    saved,
    fd.sharding.mesh_shardings(saved, other),
  )
  restored = fd.checkpoint.restore(tmp_path, target=target)
  fresh = fd.sharding.logically_partitioned(per_position(seed=5))
  nnx.update(fresh, restored['layer'])
  kernel = fresh.kernel.get_value()
  assert kernel.sharding == target['layer']['kernel'].get_value().sharding
  assert {shard.data.shape for shard in kernel.addressable_shards} == {
    (P // 2, D, K)
  }
  for got, want in zip(
    jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True
  ):
    assert got.dtype == want.dtype
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
