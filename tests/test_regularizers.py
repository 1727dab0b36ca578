"""Activity and weight penalties, constraints: Keras 3 parity and errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flax_dense as fd

keras = pytest.importorskip('keras')


def normal(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype('float32')


def keras_losses(layer, *inputs):
  """Sum of a Keras layer's (or model's) losses after calling it."""
  with jax.numpy_rank_promotion('allow'):
    layer(*inputs)
    return float(sum(np.asarray(loss) for loss in layer.losses))


@pytest.mark.parametrize('l1,l2', [(0.01, 0.0), (0.0, 0.02), (0.03, 0.5)])
@pytest.mark.parametrize('shape', [(4, 3), (2, 5, 3), (3, 2, 2, 2), (5,)])
def test_activity_regularization_matches_keras(l1, l2, shape):
  x = normal(shape)
  y, state = fd.ActivityRegularization(l1, l2).apply({}, x, mutable=[fd.LOSSES])
  np.testing.assert_array_equal(y, x)
  expected = keras_losses(keras.layers.ActivityRegularization(l1, l2), x)
  np.testing.assert_allclose(fd.collect_losses(state), expected, rtol=1e-5)
  # Keras 3 divides by the batch size: check that against NumPy too.
  numpy = (l1 * np.abs(x).sum() + l2 * np.square(x).sum()) / shape[0]
  np.testing.assert_allclose(fd.collect_losses(state), numpy, rtol=1e-5)


@pytest.mark.parametrize('activation', [None, 'softmax'])
def test_per_position_dense_activity_regularizer_matches_einsum_dense(
  activation,
):
  x = normal((3, 4, 5))
  keras_layer = keras.layers.EinsumDense(
    'abc,bcd->abd',
    output_shape=(4, 2),
    bias_axes='bd',
    activation=activation,
    activity_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.1),
  )
  keras_layer.build(x.shape)
  kernel, bias = normal((4, 5, 2), 1), normal((4, 2), 2)
  keras_layer.set_weights([kernel, bias])
  layer = fd.PerPositionDense(
    2, activation=activation, activity_regularizer=fd.l1_l2(0.01, 0.1)
  )
  params = {'params': {'kernel': kernel, 'bias': bias}}
  y, state = layer.apply(params, x, mutable=['losses'])
  np.testing.assert_allclose(
    fd.collect_losses(state), keras_losses(keras_layer, x), rtol=1e-5
  )
  assert jax.tree.map(jnp.shape, state) == {
    'losses': {'activity_regularizer': ((),)}
  }


class Stack(nn.Module):
  """Two penalised layers, one of them called twice (shared weights)."""

  @nn.compact
  def __call__(self, x):
    dense = fd.PerPositionDense(3, activity_regularizer=fd.l1_l2(l2=0.1))
    x = fd.ActivityRegularization(l1=0.05)(x)
    x = dense(jnp.tanh(dense(x)))
    return x


def test_collect_losses_sums_every_sown_loss_like_keras_model_losses(key):
  x = normal((2, 4, 3))
  model = Stack()
  variables = model.init(key, x)
  assert set(variables) == {'params'}  # init sows nothing
  _, state = model.apply(variables, x, mutable=['losses'])
  params = variables['params']['PerPositionDense_0']
  keras_dense = keras.layers.EinsumDense(
    'abc,bcd->abd',
    (4, 3),
    bias_axes='bd',
    activity_regularizer=keras.regularizers.L2(0.1),
  )
  keras_dense.build(x.shape)
  keras_dense.set_weights([np.asarray(params['kernel']), params['bias']])
  inputs = keras.Input((4, 3), batch_size=2)
  hidden = keras.layers.ActivityRegularization(l1=0.05)(inputs)
  outputs = keras_dense(keras.layers.Activation('tanh')(keras_dense(hidden)))
  keras_model = keras.Model(inputs, outputs)
  np.testing.assert_allclose(
    fd.collect_losses(state), keras_losses(keras_model, x), rtol=1e-5
  )
  assert len(jax.tree.leaves(state)) == 3


def test_nothing_sown_without_mutable_and_nothing_to_collect(key):
  x = normal((2, 4, 3))
  model = Stack()
  variables = model.init(key, x)
  np.testing.assert_array_equal(
    model.apply(variables, x),
    model.apply(variables, x, mutable=['losses'])[0],
  )
  _, state = fd.Activation('tanh').apply({}, x, mutable=['losses'])
  assert float(fd.collect_losses(state)) == 0.0


def test_penalty_gradient_jit_and_summary(key):
  x = normal((2, 4, 3))
  model = Stack()
  params = model.init(key, x)['params']

  def penalty(params, x):
    _, state = model.apply({'params': params}, x, mutable=['losses'])
    return fd.collect_losses(state)

  np.testing.assert_allclose(
    jax.jit(penalty)(params, x), penalty(params, x), rtol=1e-6
  )
  grads = jax.grad(penalty, argnums=1)(params, x)
  # The L1 term of ActivityRegularization alone gives 0.05 * sign(x) / 2.
  only_l1 = jax.grad(
    lambda x: fd.collect_losses(
      fd.ActivityRegularization(l1=0.05).apply({}, x, mutable=['losses'])[1]
    )
  )(x)
  np.testing.assert_allclose(only_l1, 0.05 * np.sign(x) / 2, rtol=1e-6)
  assert np.all(np.isfinite(grads)) and not np.allclose(grads, only_l1)
  info = fd.summary(model, x)
  assert info.total_params == 4 * 3 * 3 + 4 * 3
  assert ('ActivityRegularization', (2, 4, 3)) in [
    (row.type, row.output_shape) for row in info.rows
  ]


def test_weight_penalty_matches_keras_kernel_and_bias_regularizers():
  keras_layer = keras.layers.Dense(
    3,
    kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
    bias_regularizer=keras.regularizers.L2(0.3),
  )
  keras_layer.build((None, 4))
  kernel, bias = normal((4, 3), 1), normal((3,), 2)
  keras_layer.set_weights([kernel, bias])
  params = {'Dense_0': {'kernel': kernel, 'bias': bias}}
  ours = fd.weight_penalty(
    params, fd.l1_l2(l1=0.01, l2=0.02), 'kernel'
  ) + fd.weight_penalty(params, fd.l1_l2(l2=0.3), 'bias')
  expected = sum(np.asarray(loss) for loss in keras_layer.losses)
  np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_weight_penalty_selects_by_name_or_path_and_is_differentiable():
  params = {
    'Encoder': {'Dense_0': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}},
    'Dense_1': {'kernel': jnp.full((2, 1), 2.0)},
  }
  l1 = fd.l1_l2(l1=1.0)
  assert float(fd.weight_penalty(params, l1)) == 4 + 4
  assert float(fd.weight_penalty(params, l1, 'Dense_1/kernel')) == 4
  assert float(fd.weight_penalty(params, l1, ['bias', 'Dense_1/kernel'])) == 6
  boxed = nn.Partitioned(jnp.ones((2, 2)), names=('a', 'b'))
  assert float(fd.weight_penalty({'kernel': boxed}, l1)) == 4
  grads = jax.grad(fd.weight_penalty)(params, fd.l1_l2(l2=0.5))
  np.testing.assert_array_equal(grads['Dense_1']['kernel'], 2.0)
  np.testing.assert_array_equal(grads['Encoder']['Dense_0']['bias'], 0.0)


@pytest.mark.parametrize(
  'ours,theirs',
  [
    (fd.non_neg(), keras.constraints.NonNeg()),
    (fd.max_norm(1.5), keras.constraints.MaxNorm(1.5)),
    (fd.max_norm(0.5, axis=1), keras.constraints.MaxNorm(0.5, axis=1)),
    (fd.unit_norm(), keras.constraints.UnitNorm()),
    (fd.unit_norm(axis=[0, 2]), keras.constraints.UnitNorm(axis=[0, 2])),
    (
      fd.min_max_norm(0.5, 1.0, 0.7, axis=1),
      keras.constraints.MinMaxNorm(0.5, 1.0, 0.7, axis=1),
    ),
  ],
)
def test_constraints_match_keras(ours, theirs):
  w = normal((4, 3, 2))
  with jax.numpy_rank_promotion('allow'):
    expected = np.asarray(theirs(w))
  np.testing.assert_allclose(ours(w), expected, rtol=1e-6, atol=1e-7)


def test_constrain_matches_keras_optimizer_step():
  kernel, grads = normal((4, 3), 1), normal((4, 3), 2)
  bias = normal((3,), 3)
  keras_layer = keras.layers.Dense(
    3,
    kernel_constraint=keras.constraints.MaxNorm(1.0),
    bias_constraint=keras.constraints.NonNeg(),
  )
  keras_layer.build((None, 4))
  keras_layer.set_weights([kernel, bias])
  with jax.numpy_rank_promotion('allow'):
    keras.optimizers.SGD(0.5).apply_gradients(
      [(grads, keras_layer.kernel), (grads[0], keras_layer.bias)]
    )
  params = {'Dense_0': {'kernel': kernel, 'bias': bias}}
  optimizer = optax.chain(
    optax.sgd(0.5),
    fd.constrain(fd.max_norm(1.0), 'kernel'),
    fd.constrain(fd.non_neg(), 'bias'),
  )
  updates, _ = optimizer.update(
    {'Dense_0': {'kernel': grads, 'bias': grads[0]}},
    optimizer.init(params),
    params,
  )
  new = jax.jit(optax.apply_updates)(params, updates)['Dense_0']
  expected_kernel, expected_bias = keras_layer.get_weights()
  np.testing.assert_allclose(new['kernel'], expected_kernel, rtol=1e-5)
  np.testing.assert_allclose(new['bias'], expected_bias, atol=1e-6)
  assert np.all(np.asarray(new['bias']) >= 0)


def test_constrain_trains_a_per_position_dense_within_its_norm(key):
  x = normal((8, 4, 5))
  layer = fd.PerPositionDense(3)
  params = layer.init(key, x)['params']
  # Each output unit of each position: the norm over D (axis 1) <= 0.1.
  optimizer = optax.chain(optax.adam(0.1), fd.constrain(fd.max_norm(0.1, 1)))
  state = optimizer.init(params)

  @jax.jit
  def step(params, state):
    grads = jax.grad(lambda p: -layer.apply({'params': p}, x).sum())(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(3):
    params, state = step(params, state)
  norms = jnp.linalg.norm(params['kernel'], axis=1)
  assert float(norms.max()) <= 0.1 + 1e-6
  assert float(jnp.abs(params['bias']).max()) > 0.1  # bias unconstrained


@pytest.mark.parametrize(
  'call,match',
  [
    (lambda: fd.l1_l2(l1=-0.1), r'l1_l2: l1 must be a non-negative finite'),
    (lambda: fd.l1_l2(l2=float('inf')), r'l1_l2: l2 must be a non-negative'),
    (
      lambda: fd.ActivityRegularization(l2=-1.0).apply({}, jnp.ones(2)),
      r'ActivityRegularization: l2 must be a non-negative finite float, got'
      r' -1.0',
    ),
    (
      lambda: fd.weight_penalty({'Dense_0': {'kernel': 1.0}}, abs, 'kernal'),
      r"weight_penalty: no parameter is named 'kernal'.*'Dense_0/kernel'",
    ),
    (
      lambda: fd.constrain(fd.non_neg(), 'bias').init({'kernel': 1.0}),
      r"constrain: no parameter is named 'bias'",
    ),
    (
      lambda: fd.constrain(fd.non_neg()).update({'kernel': 1.0}, None),
      r'constrain: the update needs the params',
    ),
    (
      lambda: fd.collect_losses((1.0, {})),
      r'collect_losses: state must be the mapping of collections',
    ),
  ],
)
def test_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_an_activity_regularizer_that_is_not_a_function_is_a_type_error():
  layer = fd.PerPositionDense(2, activity_regularizer=0.01)
  with pytest.raises(
    TypeError,
    match=r'PerPositionDense: activity_regularizer must be None or a function'
    r'.*got 0.01 of type float',
  ):
    layer.init(jax.random.key(0), jnp.ones((1, 2, 3)))


def test_weight_penalty_and_constrain_read_nnx_states_like_linen_params():
  from flax import nnx

  model = fd.nnx.PerPositionDense(3, 4, 2, rngs=nnx.Rngs(0))
  model.kernel[...] = normal((3, 4, 2), seed=1)
  params = {'kernel': np.asarray(model.kernel[...]), 'bias': normal((3, 2), 2)}
  model.bias[...] = params['bias']
  penalty = fd.l1_l2(l1=0.1, l2=0.5)
  expected = (
    0.1 * np.abs(params['kernel']).sum()
    + 0.5 * np.square(params['kernel']).sum()
  )
  for names in ('kernel', ('kernel',)):
    np.testing.assert_allclose(
      fd.weight_penalty(nnx.state(model, nnx.Param), penalty, names),
      expected,
      rtol=1e-6,
    )
  # An nnx.Optimizer chained with fd.constrain projects the selected param
  # only: every kernel entry ends up non-negative, the bias is left free.
  tx = optax.chain(optax.sgd(10.0), fd.constrain(fd.non_neg(), 'kernel'))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.asarray(normal((5, 3, 4), seed=3))
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
  optimizer.update(model, grads)
  assert float(model.kernel[...].min()) == 0.0
  assert float(model.bias[...].min()) < 0.0
