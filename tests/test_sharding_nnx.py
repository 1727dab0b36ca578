"""Sharding of NNX models: the layers' logical axis names, mapped on a mesh.

The mesh tests need 8 devices. ``test_on_8_simulated_devices`` reruns this
file in a subprocess with ``--xla_force_host_platform_device_count=8``, as
tests/test_sharding.py does for linen; in a process with fewer devices they
skip.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from test_sharding import (
  SIMULATED,
  B,
  D,
  K,
  P,
  collectives,
  holds_kernel_data,
  run_mesh_tests_on_8_devices,
  train_sharded,
)

import flax_dense as fd

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


def test_module_without_axis_names():
  with pytest.raises(
    ValueError,
    match='logically_partitioned: no variable of Linear or its submodules has'
    ' default logical axis names',
  ):
    fd.sharding.logically_partitioned(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))


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


def test_on_8_simulated_devices():
  run_mesh_tests_on_8_devices(__file__)


@pytest.fixture(scope='module')
def mesh():
  if jax.device_count() < 8:
    if os.environ.get(SIMULATED):
      pytest.fail(f'{SIMULATED} is set but JAX sees {jax.device_count()}.')
    pytest.skip('needs 8 devices; run by test_on_8_simulated_devices')
  return train_sharded.make_mesh(2, 4)


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


def test_mesh_jitted_init_is_split_over_positions(mesh):
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


def test_mesh_device_put_and_update(mesh):
  layer = fd.sharding.logically_partitioned(per_position())
  state = nnx.state(layer)
  nnx.update(
    layer, jax.device_put(state, fd.sharding.mesh_shardings(state, mesh))
  )
  assert_split_over_positions(layer, mesh)
  assert_same_bytes(layer, per_position())


def test_mesh_shardings_are_those_of_flax_eager_sharding(mesh):
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


def test_mesh_train_step_matches_one_device(mesh, batch):
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
    # loss and gradients): equal to rounding, as in tests/test_sharding.py.
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


def test_mesh_train_step_never_gathers_the_kernel(mesh, batch):
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


def test_mesh_checkpoint_restores_onto_another_layout(mesh, tmp_path):
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
