"""fd.checkpoint of NNX state: bit-exact round trips and a bit-exact resume.

The direct path, ``save(path, nnx.state(model))`` then ``restore(path,
target=nnx.state(other))`` and ``nnx.update(other, restored)``, with no
conversion to pure dicts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flax_dense as fd

BATCH, POSITIONS, FEATURES, CLASSES = 4, 5, 4, 3
# One transformation for every optimizer: a new one is new static data of
# the optimizer, so nnx.jit would compile the step again for each.
ADAM = optax.adam(1e-2)


class Model(nnx.Module):
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
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    return str(leaf.dtype), exact(jax.random.key_data(leaf))
  leaf = np.asarray(leaf)
  return leaf.dtype, leaf.shape, leaf.tobytes()


def assert_identical(restored, saved):
  """Same variables, of the same types, bit for bit."""
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
  model = Model(nnx.Rngs(seed))
  return model, nnx.Optimizer(model, ADAM, wrt=nnx.Param)


def test_model_state_round_trip_is_bit_exact(tmp_path):
  model = Model(nnx.Rngs(0))
  model(batch(0)[0])  # one dropout draw: the rng count is 1
  fd.checkpoint.save(tmp_path, nnx.state(model))
  other = Model(nnx.Rngs(5))
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


def test_restore_into_an_abstract_model(tmp_path):
  model = Model(nnx.Rngs(0))
  fd.checkpoint.save(tmp_path, nnx.state(model))
  # Shapes only: no weights drawn just to be overwritten.
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Model(nnx.Rngs(5))))
  restored = fd.checkpoint.restore(tmp_path, target=abstract)
  assert_identical(nnx.state(nnx.merge(graphdef, restored)), nnx.state(model))


def test_optimizer_state_round_trip_is_bit_exact(tmp_path):
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


@pytest.mark.parametrize('interrupted_at', [1, 3])
def test_resume_is_bit_exact(tmp_path, interrupted_at):
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


def test_restore_into_other_shapes_names_the_variable(tmp_path):
  fd.checkpoint.save(tmp_path, nnx.state(Model(nnx.Rngs(0))))
  other = Model(nnx.Rngs(0), positions=POSITIONS + 1)
  with pytest.raises(
    ValueError,
    match=r'variable dense/bias\S* has shape \(5, 3\) in the checkpoint but'
    r' \(6, 3\) in the target; variable dense/kernel\S* has shape'
    r' \(5, 4, 3\) in the checkpoint but \(6, 4, 3\) in the target',
  ):
    fd.checkpoint.restore(tmp_path, target=nnx.state(other))
