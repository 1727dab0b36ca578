"""ConstProduct: values, frozen vs trainable weights, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flax_dense as fd
from flax_dense.functional import const_product


class ProductNet(nn.Module):
  """The classic 75 -> 75 -> 3 -> product -> 1 network."""

  weights: object = None
  trainable: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(75)(x))
    x = nn.tanh(nn.Dense(3)(x))
    x = fd.ConstProduct(self.weights, trainable=self.trainable)(x)
    return nn.Dense(1)(x)


@pytest.mark.parametrize('weights', [[0.5, -2.0, 3.0], [[0.5, -2.0, 3.0]]])
@pytest.mark.parametrize('trainable', [False, True])
def test_values_match_numpy(weights, trainable, key):
  x = jax.random.normal(key, (4, 2, 3))
  layer = fd.ConstProduct(weights, trainable=trainable)
  variables = layer.init(key, x)
  collection = 'params' if trainable else 'constants'
  assert list(variables) == [collection]
  np.testing.assert_array_equal(
    variables[collection]['kernel'], np.ravel(weights)
  )
  expected = np.prod(np.asarray(x) * np.ravel(weights), axis=-1, keepdims=True)
  y = layer.apply(variables, x)
  assert y.shape == (4, 2, 1)
  np.testing.assert_allclose(y, expected, rtol=1e-6)
  np.testing.assert_allclose(
    jax.vmap(jax.vmap(const_product, (0, None)), (0, None))(
      x, jnp.ravel(jnp.asarray(weights))
    ),
    expected,
    rtol=1e-6,
  )


def test_trainable_random_init_is_keras_uniform(key):
  layer = fd.ConstProduct(trainable=True)
  kernel = layer.init(key, jnp.ones((1, 1000)))['params']['kernel']
  assert kernel.shape == (1000,)
  assert -0.05 <= float(kernel.min()) < -0.045
  assert 0.045 < float(kernel.max()) < 0.05


@pytest.mark.parametrize(
  'weights,trainable,total,trainable_count,non_trainable',
  [
    ([[0.0, 1.0, 2.0]], False, 5933, 5930, 3),
    ([[0.0, 1.0, 2.0]], True, 5933, 5933, 0),
    (None, True, 5933, 5933, 0),
  ],
)
def test_classic_network_counts(
  weights, trainable, total, trainable_count, non_trainable, key
):
  info = fd.summary(ProductNet(weights, trainable), jnp.ones((1, 75)))
  assert (
    info.total_params,
    info.trainable_params,
    info.non_trainable_params,
  ) == (total, trainable_count, non_trainable)
  row = next(r for r in info.rows if r.type == 'ConstProduct')
  assert (row.params, row.trainable_params) == (3, trainable_count - 5930)
  if weights is not None:
    variables = ProductNet(weights, trainable).init(key, jnp.ones((1, 75)))
    collection = 'params' if trainable else 'constants'
    np.testing.assert_array_equal(
      variables[collection]['ConstProduct_0']['kernel'], [0.0, 1.0, 2.0]
    )


def test_frozen_weights_get_no_update_but_the_rest_trains(key):
  model = ProductNet([[0.5, 1.0, 2.0]])
  x = jax.random.normal(key, (16, 75))
  y = jnp.sum(x[:, :3], axis=-1, keepdims=True)
  variables = model.init(key, x)
  params, constants = variables['params'], variables['constants']
  optimizer = optax.adam(0.1)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(params):
      pred = model.apply({'params': params, 'constants': constants}, x)
      return jnp.mean((pred - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  new_params, _, _ = step(params, opt_state)
  assert 'ConstProduct_0' not in params  # optax never sees the constants
  assert not np.allclose(
    new_params['Dense_0']['kernel'], params['Dense_0']['kernel']
  )
  # The constants are read from the variables, so they are what is used.
  doubled = {
    'params': params,
    'constants': jax.tree.map(lambda c: 2 * c, constants),
  }
  assert not np.allclose(model.apply(doubled, x), model.apply(variables, x))
  np.testing.assert_array_equal(
    constants['ConstProduct_0']['kernel'], [0.5, 1.0, 2.0]
  )


def test_trainable_weights_receive_gradients(key):
  layer = fd.ConstProduct([1.0, 2.0], trainable=True)
  x = jnp.array([[3.0, 5.0]])
  params = layer.init(key, x)['params']
  grads = jax.grad(lambda p: layer.apply({'params': p}, x).sum())(params)
  # d/dw0 of (x0 w0)(x1 w1) = x0 * x1 * w1.
  np.testing.assert_allclose(grads['kernel'], [3 * 5 * 2.0, 3 * 5 * 1.0])


# --- errors -----------------------------------------------------------------


def test_frozen_without_weights(key):
  with pytest.raises(
    ValueError, match='ConstProduct: frozen weights .* need initial values'
  ):
    fd.ConstProduct().init(key, jnp.ones((2, 3)))


@pytest.mark.parametrize('weights', [[1.0, 2.0], [[1.0], [2.0], [3.0]], 1.0])
def test_weights_of_wrong_size(weights, key):
  with pytest.raises(
    ValueError,
    match=r'ConstProduct: weights must have shape \(3,\) or \(1, 3\)',
  ):
    fd.ConstProduct(weights).init(key, jnp.ones((2, 3)))


def test_inputs_not_matching_weights(key):
  layer = fd.ConstProduct([1.0, 2.0, 3.0])
  variables = layer.init(key, jnp.ones((2, 3)))
  with pytest.raises(
    ValueError,
    match=r'inputs of shape \(2, 4\) have 4 features but the weights were built with shape \(3,\)',
  ):
    layer.apply(variables, jnp.ones((2, 4)))


def test_scalar_input(key):
  with pytest.raises(ValueError, match='ConstProduct: inputs must have shape'):
    fd.ConstProduct([1.0]).init(key, jnp.ones(()))


@pytest.mark.parametrize(
  'weights', [[[0.5, 1.0, 2.0]], np.array([0.5, 1.0, 2.0]), jnp.ones(3)]
)
def test_module_with_given_weights_is_hashable_for_nn_jit(weights, key):
  layer = fd.ConstProduct(weights)
  assert hash(layer) == hash(fd.ConstProduct(weights))

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.jit(fd.ConstProduct)(weights)(x)

  x = jnp.full((2, 3), 2.0)
  variables = Model().init(key, x)
  np.testing.assert_allclose(
    Model().apply(variables, x), layer.apply(layer.init(key, x), x)
  )
