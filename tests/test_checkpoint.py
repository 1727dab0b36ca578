"""Tests of fd.checkpoint: bit-exact round trips, atomic saves, clear errors.

Linen variables and NNX state (the ``api`` fixture) round-trip bit for bit,
NNX state directly: ``save(path, nnx.state(model))`` then ``restore(path,
target=nnx.state(other))`` and ``nnx.update(other, restored)``, with no
conversion to pure dicts.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import flax_dense as fd


class Model(nn.Module):
  """Trainable per-position weights and frozen constants."""

  @nn.compact
  def __call__(self, x):
    y = fd.PerPositionDense(3)(x)
    return fd.ConstProduct(weights=[0.5, 2.0, 4.0])(y)


BATCH, POSITIONS, FEATURES, CLASSES = 4, 5, 4, 3
# One transformation for every optimizer: a new one is new static data of
# the optimizer, so nnx.jit would compile the step again for each.
ADAM = optax.adam(1e-2)


class NnxModel(nnx.Module):
  """Trained weights, frozen constants, a dropout's rng state, bfloat16."""

  def __init__(self, rngs, positions=POSITIONS):
    self.dense = fd.nnx.PerPositionDense(
      positions, FEATURES, CLASSES, rngs=rngs
    )
    self.dropout = fd.nnx.Dropout(0.5, rngs=rngs)
    self.product = fd.nnx.ConstProduct(CLASSES, weights=[0.5, 2.0, 4.0])
    self.half = fd.nnx.ConstProduct(
      CLASSES, trainable=True, param_dtype=jnp.bfloat16, rngs=rngs
    )

  def __call__(self, x):
    y = self.dropout(self.dense(x))
    return self.product(y) + self.half(y)


def exact(leaf):
  """A leaf's dtype, shape and bytes; a typed PRNG key's with its data's."""
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
    leaf.dtype, jax.dtypes.prng_key
  ):
    return str(leaf.dtype), exact(jax.random.key_data(leaf))
  leaf = np.asarray(leaf)
  return leaf.dtype, leaf.shape, leaf.tobytes()


def versions(path):
  """What ``path`` holds besides the lock file of its saves, sorted."""
  return sorted(set(os.listdir(path)) - {'.flax_dense.lock'})


def assert_identical(restored, saved):
  assert jax.tree.structure(restored) == jax.tree.structure(saved)
  assert list(map(exact, jax.tree.leaves(restored))) == list(
    map(exact, jax.tree.leaves(saved))
  )


def batch(step):
  rng = np.random.default_rng(step)
  x = rng.standard_normal((BATCH, POSITIONS, FEATURES), np.float32)
  y = rng.standard_normal((BATCH, POSITIONS, 1), np.float32)
  return x, y


@nnx.jit
def train_step(model, optimizer, x, y):
  def loss_fn(model):
    return jnp.mean((model(x) - y) ** 2)

  loss, grads = nnx.value_and_grad(loss_fn)(model)
  optimizer.update(model, grads)
  return loss


def make(seed):
  model = NnxModel(nnx.Rngs(seed))
  return model, nnx.Optimizer(model, ADAM, wrt=nnx.Param)


@pytest.fixture
def state(key):
  """Variables of every collection, an optax state, and odd dtypes."""
  variables = Model().init(key, jnp.ones((2, 5, 4)))
  optimizer = optax.adam(1e-3)
  odd = {
    'bfloat16': jax.random.normal(key, (7,), jnp.bfloat16),
    'float16': jnp.array([0.1, -0.0, jnp.inf, jnp.nan], jnp.float16),
    'int8': jnp.arange(-3, 3, dtype=jnp.int8),
    'uint32': jnp.array([0, 2**32 - 1], jnp.uint32),
    'key': jax.random.key(42),
    'raw_key': jax.random.PRNGKey(7),
  }
  return {
    'variables': variables,
    'opt_state': optimizer.init(variables['params']),
    'odd': odd,
  }


def test_model_state_round_trip_is_bit_exact(api, tmp_path, state):
  if api == 'linen':
    fd.checkpoint.save(tmp_path, state)
    restored = fd.checkpoint.restore(tmp_path, target=state)
    assert set(restored['variables']) == {'params', 'constants'}
    assert isinstance(restored['opt_state'][0], optax.ScaleByAdamState)
    assert_identical(restored, state)
    return
  model = NnxModel(nnx.Rngs(0))
  model(batch(0)[0])  # one dropout draw: the rng count is 1
  fd.checkpoint.save(tmp_path, nnx.state(model))
  other = NnxModel(nnx.Rngs(5))
  assert exact(other.dense.kernel[...]) != exact(model.dense.kernel[...])
  restored = fd.checkpoint.restore(tmp_path, target=nnx.state(other))
  assert isinstance(restored, nnx.State)
  nnx.update(other, restored)
  assert_identical(nnx.state(other), nnx.state(model))
  # The variable types survive: frozen weights stay constants.
  assert isinstance(other.product.kernel, fd.nnx.Constant)
  assert isinstance(other.half.kernel, nnx.Param)
  assert other.half.kernel[...].dtype == jnp.bfloat16
  assert int(other.dropout.rngs.count[...]) == 1
  x = batch(1)[0]
  np.testing.assert_array_equal(other(x), model(x))  # the same next draw


def test_restore_into_an_abstract_target(api, tmp_path, state):
  if api == 'linen':
    fd.checkpoint.save(tmp_path, state)
    abstract = jax.eval_shape(lambda: state)
    assert_identical(fd.checkpoint.restore(tmp_path, target=abstract), state)
    raw = fd.checkpoint.restore(tmp_path)
    # Without a target: dicts, lists for tuples, None for empty optax states.
    assert raw['opt_state'][1] is None
    assert_identical(raw['opt_state'][0]['mu'], state['opt_state'][0].mu)
    assert_identical(raw['variables'], state['variables'])
    assert_identical(raw['odd'], state['odd'])
    return
  model = NnxModel(nnx.Rngs(0))
  fd.checkpoint.save(tmp_path, nnx.state(model))
  # Shapes only: no weights drawn just to be overwritten.
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: NnxModel(nnx.Rngs(5))))
  restored = fd.checkpoint.restore(tmp_path, target=abstract)
  assert_identical(nnx.state(nnx.merge(graphdef, restored)), nnx.state(model))


def test_optimizer_state_round_trip_is_bit_exact(api, tmp_path, key):
  if api == 'linen':
    model = fd.PerPositionDense(3)
    x = jnp.ones((2, 5, 4))
    params = model.init(key, x)['params']
    optimizer = optax.adam(1e-2)
    trained = train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=optimizer
    )
    grads = jax.tree.map(jnp.ones_like, params)
    trained = trained.apply_gradients(grads=grads)
    fd.checkpoint.save(tmp_path, trained)
    fresh = train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=optimizer
    )
    restored = fd.checkpoint.restore(tmp_path, target=fresh)
    assert isinstance(restored, train_state.TrainState)
    assert int(restored.step) == 1
    assert_identical(restored, trained)
    return
  model, optimizer = make(0)
  for step in range(2):
    train_step(model, optimizer, *batch(step))
  saved = {'model': nnx.state(model), 'optimizer': nnx.state(optimizer)}
  fd.checkpoint.save(tmp_path, saved)
  other, other_optimizer = make(5)
  restored = fd.checkpoint.restore(
    tmp_path,
    target={'model': nnx.state(other), 'optimizer': nnx.state(other_optimizer)},
  )
  nnx.update(other, restored['model'])
  nnx.update(other_optimizer, restored['optimizer'])
  assert int(other_optimizer.step[...]) == 2
  adam = other_optimizer.opt_state[0]
  assert isinstance(adam, optax.ScaleByAdamState)
  assert np.abs(np.asarray(adam.mu['dense']['kernel'][...])).max() > 0
  assert_identical(nnx.state(other), saved['model'])
  assert_identical(nnx.state(other_optimizer), saved['optimizer'])


def test_partitioned_variables_are_saved_unboxed(tmp_path, key):
  layer = fd.sharding.logically_partitioned(fd.PerPositionDense(3))
  variables = layer.init(key, jnp.ones((2, 5, 4)))
  fd.checkpoint.save(tmp_path, variables)
  plain = fd.PerPositionDense(3).init(key, jnp.ones((2, 5, 4)))
  restored = fd.checkpoint.restore(tmp_path, target=plain)
  assert_identical(restored, nn.unbox(variables))


def test_versions_keep_only_the_newest(tmp_path):
  assert fd.checkpoint.latest_step(tmp_path / 'absent') is None
  assert fd.checkpoint.save(tmp_path, {'w': jnp.zeros(3)}) == 0
  assert fd.checkpoint.save(tmp_path, {'w': jnp.ones(3)}) == 1
  assert fd.checkpoint.save(tmp_path, {'w': jnp.full(3, 7.0)}, step=10) == 10
  assert fd.checkpoint.latest_step(tmp_path) == 10
  assert versions(tmp_path) == ['10']
  restored = fd.checkpoint.restore(tmp_path, target={'w': jnp.zeros(3)})
  np.testing.assert_array_equal(restored['w'], 7.0)


def test_restore_into_other_shapes_names_the_variable(api, tmp_path, key):
  if api == 'linen':
    variables = fd.PerPositionDense(3).init(key, jnp.ones((2, 5, 4)))
    fd.checkpoint.save(tmp_path, variables)
    other = fd.PerPositionDense(3).init(key, jnp.ones((2, 6, 4)))
    with pytest.raises(
      ValueError,
      match=r'variable params/bias has shape \(5, 3\) in the checkpoint but'
      r' \(6, 3\) in the target; variable params/kernel has shape \(5, 4, 3\)'
      r' in the checkpoint but \(6, 4, 3\) in the target',
    ):
      fd.checkpoint.restore(tmp_path, target=other)
    return
  fd.checkpoint.save(tmp_path, nnx.state(NnxModel(nnx.Rngs(0))))
  other = NnxModel(nnx.Rngs(0), positions=POSITIONS + 1)
  with pytest.raises(
    ValueError,
    match=r'variable dense/bias\S* has shape \(5, 3\) in the checkpoint but'
    r' \(6, 3\) in the target; variable dense/kernel\S* has shape'
    r' \(5, 4, 3\) in the checkpoint but \(6, 4, 3\) in the target',
  ):
    fd.checkpoint.restore(tmp_path, target=nnx.state(other))


@pytest.mark.parametrize('interrupted_at', [1, 3])
def test_nnx_resume_is_bit_exact(tmp_path, interrupted_at):
  steps = 5
  model, optimizer = make(0)
  for step in range(steps):
    train_step(model, optimizer, *batch(step))

  resumed, resumed_optimizer = make(0)
  for step in range(interrupted_at):
    train_step(resumed, resumed_optimizer, *batch(step))
  fd.checkpoint.save(
    tmp_path,
    {'model': nnx.state(resumed), 'optimizer': nnx.state(resumed_optimizer)},
    step=interrupted_at,
  )
  del resumed, resumed_optimizer  # the run dies here

  # A new process: fresh objects, other seeds, everything from the file.
  fresh, fresh_optimizer = make(7)
  start = fd.checkpoint.latest_step(tmp_path)
  assert start == interrupted_at
  restored = fd.checkpoint.restore(
    tmp_path,
    target={'model': nnx.state(fresh), 'optimizer': nnx.state(fresh_optimizer)},
  )
  nnx.update(fresh, restored['model'])
  nnx.update(fresh_optimizer, restored['optimizer'])
  for step in range(start, steps):
    train_step(fresh, fresh_optimizer, *batch(step))

  # Params, constants, dropout rng state and Adam state: bit for bit.
  assert_identical(nnx.state(fresh), nnx.state(model))
  assert_identical(nnx.state(fresh_optimizer), nnx.state(optimizer))
  assert int(fresh.dropout.rngs.count[...]) == steps


def test_restore_with_other_variables_or_dtypes(tmp_path, key):
  x = jnp.ones((2, 3))
  frozen = fd.ConstProduct(weights=[1.0, 2.0, 3.0]).init(key, x)
  fd.checkpoint.save(tmp_path, frozen)
  trainable = fd.ConstProduct(trainable=True).init(key, x)
  with pytest.raises(
    ValueError,
    match='the checkpoint has no params/kernel; the target has no'
    ' constants/kernel',
  ):
    fd.checkpoint.restore(tmp_path, target=trainable)
  half = jax.tree.map(lambda w: w.astype(jnp.bfloat16), frozen)
  with pytest.raises(
    ValueError,
    match='variable constants/kernel has dtype float32 in the checkpoint but'
    ' bfloat16 in the target',
  ):
    fd.checkpoint.restore(tmp_path, target=half)


def test_missing_checkpoint_and_bad_steps(tmp_path):
  with pytest.raises(FileNotFoundError, match='no complete checkpoint in'):
    fd.checkpoint.restore(tmp_path / 'absent')
  fd.checkpoint.save(tmp_path, {'w': jnp.zeros(3)}, step=5)
  with pytest.raises(FileNotFoundError, match=r'no step 4 .* steps \[5\]'):
    fd.checkpoint.restore(tmp_path, step=4)
  with pytest.raises(ValueError, match=r'newest step saved in .* \(5\), got 5'):
    fd.checkpoint.save(tmp_path, {'w': jnp.zeros(3)}, step=5)


# A child process that saves a second, large version of the checkpoint and
# is killed before that save completes. ``hold`` blocks the save at Orbax's
# commit (the rename of the finished temporary directory), so the kill lands
# after every byte is written but before the commit, deterministically.
SAVER = textwrap.dedent(
  """
  import sys, time
  import numpy as np
  import flax_dense as fd
  from orbax.checkpoint._src.path import async_path

  path, hold = sys.argv[1], sys.argv[2] == 'hold'

  async def held_rename(*args, **kwargs):
    print('committing', flush=True)
    time.sleep(600)

  if hold:
    async_path.rename = held_rename
  big = np.random.default_rng(0).standard_normal(2**24, np.float32)
  print('saving', flush=True)
  fd.checkpoint.save(path, {'w': big}, overwrite=True)
  print('saved', flush=True)
  """
)


def temporary_bytes(path):
  """Bytes written so far under the temporary directories in ``path``."""
  total = 0
  for folder, _, names in os.walk(path):
    if 'tmp' in os.path.relpath(folder, path):
      for name in names:
        # The save may commit, renaming the directory, while this looks.
        with contextlib.suppress(FileNotFoundError):
          total += os.path.getsize(os.path.join(folder, name))
  return total


def kill_saver(path, hold, wait_for):
  """Starts ``SAVER`` and SIGKILLs it once it prints ``wait_for``."""
  child = subprocess.Popen(
    [sys.executable, '-c', SAVER, str(path), 'hold' if hold else 'race'],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    for line in child.stdout:
      if line.strip() == wait_for:
        break
    else:
      pytest.fail(f'the saver exited before printing {wait_for!r}')
    # Unheld, kill once the new version's array data is being written.
    deadline = time.monotonic() + 60
    while (
      not hold and time.monotonic() < deadline and temporary_bytes(path) < 2**20
    ):
      time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
  finally:
    child.wait()
  return child.returncode


@pytest.mark.parametrize('hold', [True, False], ids=['at_commit', 'mid_write'])
def test_killed_save_leaves_the_previous_checkpoint(tmp_path, hold):
  previous = {'w': jnp.arange(2**24, dtype=jnp.float32)}
  fd.checkpoint.save(tmp_path, {'w': jnp.arange(8, dtype=jnp.float32)})
  assert kill_saver(tmp_path, hold, 'committing' if hold else 'saving') == (
    -signal.SIGKILL
  )
  step = fd.checkpoint.latest_step(tmp_path)
  if hold:
    # The killed save left its temporary directory, never a version.
    assert step == 0
    assert any('tmp' in name for name in os.listdir(tmp_path))
  target = {'w': jnp.zeros(8 if step == 0 else 2**24, jnp.float32)}
  restored = fd.checkpoint.restore(tmp_path, target=target)
  if step == 0:
    np.testing.assert_array_equal(restored['w'], np.arange(8))
  else:  # The kill came too late: the new version is then complete.
    expected = np.random.default_rng(0).standard_normal(2**24, np.float32)
    np.testing.assert_array_equal(restored['w'], expected)
  # The next save goes through, past the debris.
  assert fd.checkpoint.save(tmp_path, previous, overwrite=True) == step + 1
  assert_identical(fd.checkpoint.restore(tmp_path, target=previous), previous)


NOT_INTEGERS = [3.0, np.float32(3.0), 2.5, True, np.bool_(True), '3']


def not_an_integer(function, step):
  return (
    rf'checkpoint\.{function}: step must be a non-negative integer \(a Python'
    rf' or NumPy int\), got {re.escape(repr(step))} of type'
  )


@pytest.mark.parametrize('step', NOT_INTEGERS, ids=repr)
def test_step_must_be_an_integer(tmp_path, step):
  fd.checkpoint.save(tmp_path, {'w': jnp.arange(3.0)})
  with pytest.raises(TypeError, match=not_an_integer('save', step)):
    fd.checkpoint.save(tmp_path, {'w': jnp.arange(3.0)}, step=step)
  with pytest.raises(TypeError, match=not_an_integer('restore', step)):
    fd.checkpoint.restore(tmp_path, step=step)
  # Refused before anything was written or deleted: step 0 is intact.
  assert versions(tmp_path) == ['0']
  assert fd.checkpoint.latest_step(tmp_path) == 0
  restored = fd.checkpoint.restore(tmp_path, target={'w': jnp.zeros(3)})
  np.testing.assert_array_equal(restored['w'], [0.0, 1.0, 2.0])


def test_numpy_integer_steps_and_negative_steps(tmp_path):
  with pytest.raises(
    ValueError, match=r'checkpoint\.save: step must be a non-negative .* -1'
  ):
    fd.checkpoint.save(tmp_path, {'w': jnp.zeros(3)}, step=-1)
  assert not os.listdir(tmp_path)
  saved = fd.checkpoint.save(tmp_path, {'w': jnp.ones(3)}, step=np.int32(4))
  assert saved == 4 and type(saved) is int
  assert versions(tmp_path) == ['4']
  assert fd.checkpoint.latest_step(tmp_path) == 4
  restored = fd.checkpoint.restore(tmp_path, step=np.uint8(4))
  np.testing.assert_array_equal(restored['w'], 1.0)
  with pytest.raises(
    ValueError, match=r'checkpoint\.restore: step must be a non-negative .* -2'
  ):
    fd.checkpoint.restore(tmp_path, step=np.int64(-2))


def test_the_same_variables_save_again(tmp_path, state):
  assert fd.checkpoint.save(tmp_path, state) == 0
  assert fd.checkpoint.save(tmp_path, state) == 1
  assert_identical(fd.checkpoint.restore(tmp_path, target=state), state)


def test_save_refuses_to_replace_another_model(tmp_path, key):
  x = jnp.ones((2, 5, 4))
  variables = fd.PerPositionDense(3).init(key, x)
  fd.checkpoint.save(tmp_path, variables)
  wider = fd.PerPositionDense(4).init(key, x)
  half = jax.tree.map(lambda w: w.astype(jnp.bfloat16), variables)
  other = fd.ConstProduct(trainable=True).init(key, jnp.ones((2, 3)))
  for tree, difference in [
    (
      wider,
      r'variable params/bias has shape \(5, 3\) in the checkpoint but'
      r' \(5, 4\) in the tree; variable params/kernel has shape'
      r' \(5, 4, 3\) in the checkpoint but \(5, 4, 4\) in the tree',
    ),
    (
      half,
      r'variable params/bias has dtype float32 in the checkpoint but'
      r' bfloat16 in the tree',
    ),
    (other, r'the tree has no params/bias'),
  ]:
    with pytest.raises(
      ValueError,
      match=rf'checkpoint\.save: the tree does not match the newest step 0 of'
      rf' the checkpoint {re.escape(str(tmp_path))}: {difference}.*'
      r'pass overwrite=True to replace it',
    ):
      fd.checkpoint.save(tmp_path, tree)
    assert versions(tmp_path) == ['0']
    assert_identical(
      fd.checkpoint.restore(tmp_path, target=variables), variables
    )
  assert fd.checkpoint.save(tmp_path, wider, overwrite=True) == 1
  assert versions(tmp_path) == ['1']
  assert_identical(fd.checkpoint.restore(tmp_path, target=wider), wider)


def zero_size_arrays():
  return {
    'empty': jnp.zeros((0, 3)),
    'bfloat16': jnp.zeros((2, 0), jnp.bfloat16),
    'numpy': np.zeros((0,), np.int16),
    'keys': jax.random.split(jax.random.key(0), 0),
    'nested': [jnp.zeros((4, 0, 2), jnp.int8)],
    'w': jnp.arange(3.0),
  }


@pytest.mark.parametrize('target', ['none', 'concrete', 'abstract'])
def test_zero_size_arrays_round_trip(tmp_path, target):
  tree = zero_size_arrays()
  fd.checkpoint.save(tmp_path, tree)
  given = {
    'none': None,
    'concrete': tree,
    'abstract': jax.eval_shape(lambda: tree),
  }
  restored = fd.checkpoint.restore(tmp_path, target=given[target])
  if target == 'abstract':  # A ShapeDtypeStruct comes back a jax.Array.
    tree = {**tree, 'numpy': jnp.asarray(tree['numpy'])}
  assert_identical(restored, tree)
  assert type(restored['numpy']) is type(tree['numpy'])
  assert restored['keys'].devices() == {jax.devices()[0]}
  assert fd.checkpoint.save(tmp_path, tree) == 1  # The same variables.
  other = {**tree, 'empty': jnp.zeros((0, 4))}
  with pytest.raises(
    ValueError,
    match=r'variable empty has shape \(0, 3\) in the checkpoint but \(0, 4\)',
  ):
    fd.checkpoint.restore(tmp_path, target=other)


def test_only_zero_size_arrays(tmp_path):
  tree = {'a': jnp.zeros((0,)), 'b': np.zeros((3, 0), np.float64)}
  fd.checkpoint.save(tmp_path, tree)
  assert_identical(fd.checkpoint.restore(tmp_path), tree)


@pytest.mark.parametrize('tree', [{}, {'a': None}, [], ()], ids=repr)
def test_empty_tree_is_refused(tmp_path, tree):
  path = tmp_path / 'checkpoint'
  with pytest.raises(
    ValueError,
    match=rf'checkpoint\.save: tree holds no array or scalar to save, got'
    rf' {re.escape(repr(tree))}',
  ):
    fd.checkpoint.save(path, tree)
  assert not path.exists()


# Saves the variables of a layer, sharded over a ('data', 'model') mesh of 8
# simulated devices.
MESH_SAVER = textwrap.dedent(
  """
  import sys
  import jax, jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec
  import flax_dense as fd

  assert jax.device_count() == 8, jax.devices()
  mesh = jax.make_mesh((4, 2), ('data', 'model'))
  variables = fd.PerPositionDense(6).init(jax.random.key(0), jnp.ones((2, 8, 4)))
  shardings = {'params': {
    'bias': NamedSharding(mesh, PartitionSpec('data', 'model')),
    'kernel': NamedSharding(mesh, PartitionSpec('data', None, 'model')),
  }}
  sharded = jax.device_put(variables, shardings)
  assert all(len(leaf.sharding.device_set) == 8 for leaf in jax.tree.leaves(sharded))
  fd.checkpoint.save(sys.argv[1], sharded)
  """
)


def test_restore_a_checkpoint_of_another_topology(tmp_path, key):
  import orbax.checkpoint as ocp

  flags = os.environ.get('XLA_FLAGS', '')
  env = dict(
    os.environ,
    XLA_FLAGS=f'{flags} --xla_force_host_platform_device_count=8',
    JAX_PLATFORMS='cpu',
  )
  subprocess.run(
    [sys.executable, '-c', MESH_SAVER, str(tmp_path)],
    env=env,
    check=True,
    timeout=300,
  )
  layer, x = fd.PerPositionDense(6), jnp.ones((2, 8, 4))
  target = jax.eval_shape(layer.init, key, x)
  assert all(leaf.sharding is None for leaf in jax.tree.leaves(target))
  # Orbax alone refuses this target: the saved mesh is not on this machine.
  with ocp.CheckpointManager(tmp_path) as manager:
    with pytest.raises(ValueError, match='Topology mismatch'):
      manager.restore(0, args=ocp.args.StandardRestore(target))
  expected = layer.init(key, x)
  for given in (target, None):
    restored = fd.checkpoint.restore(tmp_path, target=given)
    assert_identical(restored, expected)
    for leaf in jax.tree.leaves(restored):
      assert leaf.sharding == jax.sharding.SingleDeviceSharding(
        jax.devices()[0]
      )
