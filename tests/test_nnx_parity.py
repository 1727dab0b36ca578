"""Every layer's NNX twin, given the linen layer's weights, computes the same.

For each public layer the NNX module that ``fd.nnx.from_linen`` builds from
a linen layer and its variables is checked against the linen layer itself
(the independent reference here is the linen front end, whose own tests
check it against NumPy and Keras): outputs, gradients with respect to the
weights and the inputs, under ``nnx.jit`` / ``jax.jit``, ``nnx.vmap`` /
``jax.vmap`` and ``nnx.grad`` / ``jax.grad``; sown losses; dropout masks
drawn from the same key; constants that no optimizer touches; and the round
trip back with ``fd.nnx.to_linen``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cases import CASES, ids, named, random
from flax import nnx

import flax_dense as fd
from flax_dense._src.variables import frozen


def normal(shape, seed=0):
  return jnp.asarray(random(shape, seed))


KEY = jax.random.key(3)

REGULARIZED = [
  named('PerPositionDense-regularized'),
  named('ActivityRegularization'),
]


def by_id(cases):
  return pytest.mark.parametrize('case', cases, ids=ids(cases))


class Built:
  """A case's linen module, inputs, variables, call arguments, NNX twin."""

  def __init__(self, case):
    self.module = case.linen()
    self.inputs = case.inputs()
    self.linen_kwargs = case.linen_kwargs(KEY)
    self.nnx_kwargs = case.nnx_kwargs(KEY)
    self.variables = self.module.init(
      jax.random.key(0), *self.inputs, **self.linen_kwargs
    )
    self.twin = fd.nnx.from_linen(self.module, self.variables)


def assert_same(actual, expected):
  """Equal trees of equal values: both sides run the same ops, in the same
  order, so not even float rounding differs."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


def floats(inputs):
  """The indices of the inputs to differentiate (not the masks)."""
  return tuple(
    i for i, x in enumerate(inputs) if jnp.issubdtype(x.dtype, jnp.floating)
  )


def cotangent(outputs):
  """Fixed random weights of the outputs: a loss that sees every entry."""
  return jax.tree.map(lambda y: normal(y.shape, seed=5), outputs)


def weighted(outputs, weights):
  return sum(
    jnp.sum(y.astype(jnp.float32) * w)
    for y, w in zip(
      jax.tree.leaves(outputs), jax.tree.leaves(weights), strict=True
    )
  )


@by_id(CASES)
def test_outputs_match_eager_and_jitted(case):
  b = Built(case)
  module, variables, inputs = b.module, b.variables, b.inputs
  expected = module.apply(variables, *inputs, **b.linen_kwargs)
  assert_same(b.twin(*inputs, **b.nnx_kwargs), expected)
  jitted = jax.jit(lambda v, *x: module.apply(v, *x, **b.linen_kwargs))
  nnx_jitted = nnx.jit(lambda m, *x: m(*x, **b.nnx_kwargs))
  assert_same(nnx_jitted(b.twin, *inputs), jitted(variables, *inputs))


@by_id(CASES)
def test_gradients_match_for_weights_and_inputs(case):
  b = Built(case)
  module, variables = b.module, b.variables
  differentiated = floats(b.inputs)
  weights = cotangent(module.apply(variables, *b.inputs, **b.linen_kwargs))

  def with_inputs(inputs, differentiable):
    inputs = list(inputs)
    for index, x in zip(differentiated, differentiable, strict=True):
      inputs[index] = x
    return inputs

  def linen_loss(params, differentiable):
    inputs = with_inputs(b.inputs, differentiable)
    outputs = module.apply(
      {**variables, 'params': params}, *inputs, **b.linen_kwargs
    )
    return weighted(outputs, weights)

  def nnx_loss(model, differentiable):
    inputs = with_inputs(b.inputs, differentiable)
    return weighted(model(*inputs, **b.nnx_kwargs), weights)

  differentiable = tuple(b.inputs[i] for i in differentiated)
  linen_params, linen_inputs = jax.jit(jax.grad(linen_loss, argnums=(0, 1)))(
    variables.get('params', {}), differentiable
  )
  nnx_params, nnx_inputs = nnx.jit(
    nnx.grad(nnx_loss, argnums=(nnx.DiffState(0, nnx.Param), 1))
  )(b.twin, differentiable)
  assert_same(nnx_inputs, linen_inputs)
  nnx_params = nnx.to_pure_dict(nnx_params)
  if isinstance(b.twin, fd.nnx.KerasSequential | fd.nnx.KerasFunctional):
    # Layers by index, not name; linen names them (layers_0, ... unnamed).
    count = len(b.twin.layers)
    names = b.twin.names or [f'layers_{i}' for i in range(count)]
    nnx_params = {
      names[int(index)]: tree for index, tree in nnx_params['layers'].items()
    }
  assert_same(nnx_params, dict(linen_params))


@by_id(CASES)
def test_vmap_over_a_leading_axis_with_the_module_broadcast(case):
  b = Built(case)
  # Two examples of the case's inputs (masks included), batch reversed.
  stacked = tuple(jnp.stack([x, x[::-1]]) for x in b.inputs)
  expected = jax.vmap(
    lambda *x: b.module.apply(b.variables, *x, **b.linen_kwargs)
  )(*stacked)
  in_axes = (None,) + (0,) * len(stacked)
  actual = nnx.vmap(lambda m, *x: m(*x, **b.nnx_kwargs), in_axes=in_axes)(
    b.twin, *stacked
  )
  assert_same(actual, expected)


@by_id(CASES)
def test_round_trip_gives_back_the_variables(case):
  b = Built(case)
  module, back = fd.nnx.to_linen(b.twin)
  assert isinstance(module, type(b.module))
  assert_same(back, b.variables)
  assert jax.tree.map(lambda v: v.dtype, back) == jax.tree.map(
    lambda v: v.dtype, b.variables
  )
  assert_same(
    module.apply(back, *b.inputs, **b.linen_kwargs),
    b.module.apply(b.variables, *b.inputs, **b.linen_kwargs),
  )


@by_id(REGULARIZED)
def test_sown_losses_match(case):
  b = Built(case)
  module, variables, twin = b.module, b.variables, b.twin
  (x,) = b.inputs
  outputs, state = module.apply(variables, x, mutable=['losses'])
  expected = fd.collect_losses(state)
  assert float(expected) > 0
  captured_outputs, losses = nnx.capture(twin, fd.nnx.Loss)(x)
  assert_same(captured_outputs, outputs)
  assert_same(fd.collect_losses(losses), expected)
  # Outside nnx.capture nothing piles up in the model.
  twin(x)
  assert len(nnx.state(twin, fd.nnx.Loss)) == 0

  def linen_loss(params, x):
    outputs, state = module.apply(
      {**variables, 'params': params}, x, mutable=['losses']
    )
    return jnp.sum(outputs**2) + fd.collect_losses(state)

  def nnx_loss(model, x):
    outputs, losses = nnx.capture(model, fd.nnx.Loss)(x)
    return jnp.sum(outputs**2) + fd.collect_losses(losses)

  linen_grads = jax.jit(jax.grad(linen_loss, argnums=(0, 1)))(
    variables.get('params', {}), x
  )
  nnx_grads = nnx.jit(nnx.grad(nnx_loss, argnums=(0, 1)))(twin, x)
  assert_same(nnx_grads[1], linen_grads[1])
  assert_same(nnx.to_pure_dict(nnx_grads[0]), dict(linen_grads[0]))
  assert_same(
    nnx.jit(nnx_loss)(twin, x),
    jax.jit(linen_loss)(variables.get('params', {}), x),
  )


def test_twins_take_their_sizes_from_the_weights():
  twin = Built(named('PerPositionDense')).twin
  assert (twin.positions, twin.in_features, twin.features) == (5, 4, 3)
  assert isinstance(twin.kernel, nnx.Param)
  twin = Built(named('AttentionDecoder')).twin
  assert (twin.units, twin.output_dim, twin.in_features) == (5, 3, 4)
  twin = Built(named('ConstProduct')).twin
  assert isinstance(twin.kernel, fd.nnx.Constant)
  assert twin.in_features == 4 and not twin.trainable
  assert len(nnx.state(twin, nnx.Param)) == 0


@by_id([case for case in CASES if case.train])
def test_dropout_follows_train_and_eval(case):
  module = case.linen()
  (x,) = case.inputs()
  twin = fd.nnx.from_linen(module, {}, rngs=nnx.Rngs(dropout=1))
  assert twin.deterministic is False  # linen's None: training, switchable
  first, second = twin(x), twin(x)
  kept = np.asarray(first) != 0
  assert 0 < kept.mean() < 1
  # Kept units are scaled by 1 / (1 - rate): exactly 2 at rate 0.5.
  scaled = np.asarray(x)[kept] / np.float32(1 - module.rate)
  if module.rate == 0.5:
    np.testing.assert_array_equal(
      np.asarray(first)[kept], 2 * np.asarray(x)[kept]
    )
  np.testing.assert_allclose(np.asarray(first)[kept], scaled, rtol=1e-6)
  assert not np.array_equal(first, second)  # the stream moves on
  # The same stream as an NNX layer built directly with those rngs.
  direct = case.nnx(nnx.Rngs(dropout=1))
  np.testing.assert_array_equal(direct(x), first)
  twin.eval()
  np.testing.assert_array_equal(twin(x), x)
  np.testing.assert_array_equal(module.apply({}, x, deterministic=True), x)
  twin.train()
  np.testing.assert_array_equal(
    twin(x, rngs=KEY), module.apply({}, x, deterministic=False, rng=KEY)
  )
  # A layer built deterministic stays so, and back.
  fixed = fd.nnx.from_linen(module.clone(deterministic=True), {})
  assert fixed.deterministic is True
  assert fd.nnx.to_linen(fixed)[0].deterministic is True
  assert fd.nnx.to_linen(twin)[0].deterministic is None


def test_keras_sequential_dropouts_follow_the_container():
  b = Built(named('KerasSequential'))
  module, variables, twin = b.module, b.variables, b.twin
  (x,) = b.inputs
  # linen's container applies in inference by default: the twin starts in
  # eval mode.
  assert twin.layers[2].deterministic is True
  assert_same(twin(x), module.apply(variables, x))
  twin.train()
  dropped = twin(x, rngs=KEY)
  assert not np.array_equal(dropped, twin(x, deterministic=True))
  linen_dropped = module.apply(
    variables, x, deterministic=False, rngs={'dropout': KEY}
  )
  assert not np.array_equal(linen_dropped, module.apply(variables, x))
  # Back in linen the container decides again.
  back, _ = fd.nnx.to_linen(twin)
  assert back.layers[2].deterministic is None


def constant_model():
  """A linen model with trained params and two kinds of constants."""
  module = fd.KerasSequential(
    (
      frozen(fd.PerPositionDense(4)),  # as from_keras freezes a layer
      fd.PerPositionDense(3, activation='tanh'),
      fd.ConstProduct([0.5, 2.0, -1.0]),
    ),
    names=('frozen', 'dense', 'product'),
  )
  x = normal((2, 5, 4))
  return module, module.init(jax.random.key(0), x), x


def test_constants_are_constant_variables():
  module, variables, x = constant_model()
  assert set(variables['constants']) == {'frozen', 'product'}
  twin = fd.nnx.from_linen(module, variables)
  assert isinstance(twin, fd.nnx.KerasSequential)
  constants = nnx.to_pure_dict(nnx.state(twin, fd.nnx.Constant))
  assert jax.tree.map(jnp.shape, constants) == {
    'layers': {0: {'bias': (5, 4), 'kernel': (5, 4, 4)}, 2: {'kernel': (3,)}}
  }
  params = nnx.to_pure_dict(nnx.state(twin, nnx.Param))
  assert list(params['layers']) == [1]
  assert_same(twin(x), module.apply(variables, x))
  back_module, back = fd.nnx.to_linen(twin)
  assert_same(back, variables)
  assert_same(back_module.apply(back, x), module.apply(variables, x))


def test_grad_and_optimizer_leave_constants_untouched():
  module, variables, x = constant_model()
  twin = fd.nnx.from_linen(module, variables)
  constants = jax.tree.map(
    np.array, nnx.to_pure_dict(nnx.state(twin, fd.nnx.Constant))
  )
  params = jax.tree.map(np.array, nnx.to_pure_dict(nnx.state(twin, nnx.Param)))

  def loss(model, x):
    return jnp.sum(model(x) ** 2)

  grads = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(twin, x)
  assert len(nnx.filter_state(grads, fd.nnx.Constant)) == 0
  linen_grads = jax.grad(
    lambda p: jnp.sum(module.apply({**variables, 'params': p}, x) ** 2)
  )(variables['params'])
  assert_same(nnx.to_pure_dict(grads)['layers'][1], dict(linen_grads['dense']))

  optimizer = nnx.Optimizer(twin, optax.adam(0.1), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x):
    grads = nnx.grad(loss)(model, x)
    optimizer.update(model, grads)

  step(twin, optimizer, x)
  after = nnx.to_pure_dict(nnx.state(twin, fd.nnx.Constant))
  jax.tree.map(np.testing.assert_array_equal, after, constants)
  moved = nnx.to_pure_dict(nnx.state(twin, nnx.Param))
  assert not np.allclose(
    moved['layers'][1]['kernel'], params['layers'][1]['kernel']
  )
