"""fd.to_keras: flax_dense modules hosted inside Keras 3 models (JAX backend).

Oracles: the Flax module applied to the same variables, and Keras itself
(a Keras model imported with from_keras and hosted back must match it).
"""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd

L = keras.layers


@pytest.fixture(autouse=True)
def _keras_broadcasts():
  # Keras's own layers broadcast by rank (a bias added to (B, T, K)).
  with jax.numpy_rank_promotion('allow'):
    yield


class ProductNet(nn.Module):
  """The seed net of examples/const_product.py: 75 -> 75 -> 3 -> product -> 1."""

  weights: object = None
  trainable: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(75)(x))
    x = nn.tanh(nn.Dense(3)(x))
    x = fd.ConstProduct(self.weights, trainable=self.trainable)(x)
    return nn.Dense(1)(x)


class TrainingFlag(nn.Module):
  """A user's module whose __call__ takes Keras's own ``training``."""

  @nn.compact
  def __call__(self, x, training: bool = False):
    return fd.Dropout(0.5)(nn.Dense(4)(x), deterministic=not training)


def _data(shape, seed=0):
  return np.random.RandomState(seed).normal(size=shape).astype(np.float32)


def _product_net():
  module = ProductNet([[0.5, 1.0, 2.0]])
  variables = module.init(jax.random.key(0), jnp.ones((1, 75)))
  return module, variables


def test_seed_net_counts_and_names():
  module, variables = _product_net()
  model = keras.Sequential(
    [keras.Input((75,)), fd.to_keras(module, variables, name='net')]
  )
  assert model.count_params() == 5933
  assert sum(np.size(w) for w in model.trainable_weights) == 5930
  assert sum(np.size(w) for w in model.non_trainable_weights) == 3
  assert [w.path for w in model.non_trainable_weights] == [
    'net/ConstProduct_0/kernel'
  ]
  assert 'net/Dense_0/kernel' in [w.path for w in model.trainable_weights]
  x = _data((8, 75))
  np.testing.assert_allclose(
    model.predict(x, verbose=0), module.apply(variables, x), atol=1e-6
  )


def test_fit_trains_the_params_and_keeps_the_constants():
  module, variables = _product_net()
  layer = fd.to_keras(module, variables, name='net')
  model = keras.Sequential([keras.Input((75,)), layer])
  model.compile(keras.optimizers.Adam(1e-2), 'mse')
  x = _data((64, 75))
  y = np.prod(np.tanh(x[:, :3]), axis=-1, keepdims=True)
  losses = model.fit(x, y, epochs=4, batch_size=64, verbose=0).history['loss']
  assert losses[-1] < losses[0]
  np.testing.assert_array_equal(
    model.non_trainable_weights[0].numpy(), [0.5, 1.0, 2.0]
  )
  # The trained Keras weights are the Flax variables, leaf for leaf.
  trained = fd._src.keras.config.nest_variables(
    layer._specs, [w.numpy() for w in layer.flax_variables]
  )
  assert not np.allclose(
    trained['params']['Dense_0']['kernel'],
    variables['params']['Dense_0']['kernel'],
  )
  np.testing.assert_allclose(
    model.predict(x, verbose=0), module.apply(trained, x), atol=1e-5
  )


def _imported():
  """A Keras model with masking, dropout and an activity penalty."""
  keras.utils.set_random_seed(0)
  model = keras.Sequential(
    [
      keras.Input((5, 3)),
      L.Masking(0.0),
      L.Dense(4, activation='tanh', activity_regularizer='l2'),
      L.Dropout(0.5),
      L.GlobalAveragePooling1D(),
      L.Dense(1),
    ]
  )
  return model, *fd.from_keras(model)


def test_hosted_import_matches_keras_outputs_and_losses():
  original, module, variables = _imported()
  hosted = keras.Sequential(
    [keras.Input((5, 3)), fd.to_keras(module, variables)]
  )
  x = _data((6, 5, 3))
  x[:, 3:] = 0.0
  y = _data((6, 1), seed=1)
  np.testing.assert_allclose(
    hosted.predict(x, verbose=0), original.predict(x, verbose=0), atol=1e-6
  )
  # Keras adds the activity penalty to the objective: evaluate shows it.
  for model in (original, hosted):
    model.compile('sgd', 'mse')
  np.testing.assert_allclose(
    hosted.evaluate(x, y, verbose=0),
    original.evaluate(x, y, verbose=0),
    rtol=1e-5,
  )
  outputs = hosted(x)
  assert len(hosted.losses) == 1
  _, state = module.apply(variables, x, mutable=['losses'])
  np.testing.assert_allclose(
    hosted.losses[0], fd.collect_losses(state), rtol=1e-6
  )
  assert outputs.shape == (6, 1)


def test_dropout_follows_training_and_the_seed_generator():
  module = fd.Dropout(0.5)
  layer = fd.to_keras(module, {}, seed=3)
  x = np.ones((4, 50), np.float32)
  np.testing.assert_array_equal(layer(x), x)
  np.testing.assert_array_equal(layer(x, training=False), x)
  first, second = layer(x, training=True), layer(x, training=True)
  assert set(np.unique(first)) == {0.0, 2.0}
  assert not np.array_equal(first, second)  # the generator advanced
  # A module whose __call__ takes `training` gets Keras's flag as is.
  user = TrainingFlag()
  variables = user.init(jax.random.key(0), x)
  hosted = fd.to_keras(user, variables)
  np.testing.assert_allclose(hosted(x), user.apply(variables, x), atol=1e-6)
  assert (np.asarray(hosted(x, training=True)) == 0.0).any()


def test_two_inputs_and_nnx_modules():
  module = fd.MultiIODense(4)
  a, b = _data((3, 2)), _data((3, 4), seed=1)
  variables = module.init(jax.random.key(0), a, b)
  layer = fd.to_keras(module, variables)
  got = layer([a, b])
  for g, e in zip(got, module.apply(variables, a, b), strict=True):
    np.testing.assert_allclose(g, e, atol=1e-6)
  twin = fd.nnx.PerPositionDense(5, 4, 3, rngs=nnx.Rngs(0))
  x = _data((2, 5, 4))
  np.testing.assert_allclose(fd.to_keras(twin)(x), twin(x), atol=1e-6)


def test_keras_file_round_trip(tmp_path):
  _, module, variables = _imported()
  model = keras.Sequential(
    [keras.Input((5, 3)), fd.to_keras(module, variables)]
  )
  x = _data((4, 5, 3))
  path = tmp_path / 'hosted.keras'
  model.save(path)
  # Only flax_dense and Flax classes: loads in Keras's safe mode.
  loaded = keras.models.load_model(
    path, custom_objects=fd.keras_custom_objects()
  )
  np.testing.assert_array_equal(
    loaded.predict(x, verbose=0), model.predict(x, verbose=0)
  )
  assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


def test_keras_file_of_a_user_module_needs_safe_mode_off(tmp_path):
  module, variables = _product_net()
  model = keras.Sequential([keras.Input((75,)), fd.to_keras(module, variables)])
  path = tmp_path / 'net.keras'
  model.save(path)
  # Keras wraps our ValueError in its own TypeError, message included.
  with pytest.raises(TypeError, match='outside the trusted packages'):
    keras.models.load_model(path)
  loaded = keras.models.load_model(path, safe_mode=False)
  x = _data((3, 75))
  np.testing.assert_array_equal(
    loaded.predict(x, verbose=0), model.predict(x, verbose=0)
  )


def test_any_module_is_hosted_and_only_a_keras_file_needs_its_class(tmp_path):
  class Local(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(x)

  x = _data((4, 3))
  local = Local()
  variables = local.init(jax.random.key(0), x)
  model = keras.Sequential([keras.Input((3,)), fd.to_keras(local, variables)])
  np.testing.assert_allclose(
    model.predict(x, verbose=0), local.apply(variables, x), atol=1e-6
  )
  model.compile(keras.optimizers.SGD(0.1), 'mse')
  before = model.get_weights()
  model.fit(x, np.zeros((4, 2), np.float32), epochs=1, verbose=0)
  assert not np.allclose(model.get_weights()[0], before[0])
  model.save_weights(tmp_path / 'local.weights.h5')
  with pytest.raises(ValueError) as error:
    model.save(tmp_path / 'local.keras')
  message = str(error.value)
  assert "layer 'flax_module': module is a" in message
  assert '<locals>.Local' in message
  assert 'define the class at the top level' in message
  lambda_layer = fd.to_keras(fd.Lambda(lambda x: x * 2.0), {})
  lambda_model = keras.Sequential([keras.Input((3,)), lambda_layer])
  np.testing.assert_allclose(lambda_model.predict(x, verbose=0), 2.0 * x)
  with pytest.raises(ValueError, match=r'module\.function is <function'):
    lambda_model.save(tmp_path / 'lambda.keras')


def test_training_flag_must_be_a_bool():
  module = fd.Dropout(0.5)
  layer = fd.to_keras(module, {})
  x = _data((2, 3))
  np.testing.assert_array_equal(layer(x, training=False), x)
  with pytest.raises(TypeError, match="FlaxModule 'flax_module': training"):
    layer(x, training='False')


def test_variables_that_do_not_fit_the_inputs():
  module = fd.PerPositionDense(3)
  variables = module.init(jax.random.key(0), jnp.ones((1, 5, 4)))
  layer = fd.to_keras(module, variables)
  with pytest.raises(ValueError, match=r'params/kernel: given \(5, 4, 3\)'):
    keras.Sequential([keras.Input((6, 4)), layer])


def test_bad_arguments():
  module = fd.PerPositionDense(3)
  variables = module.init(jax.random.key(0), jnp.ones((1, 5, 4)))
  with pytest.raises(TypeError, match='to_keras: module must be'):
    fd.to_keras(object(), variables)
  with pytest.raises(ValueError, match='needs its variables'):
    fd.to_keras(module)
  with pytest.raises(TypeError, match='variables must be the mapping'):
    fd.to_keras(module, [1, 2])
  with pytest.raises(ValueError, match="collection 'batch_stats'"):
    fd.to_keras(module, {**variables, 'batch_stats': {'mean': jnp.ones(3)}})
  twin = fd.nnx.PerPositionDense(5, 4, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='holds its own weights'):
    fd.to_keras(twin, variables)


def test_another_keras_backend_is_refused():
  code = textwrap.dedent(
    """
    import flax_dense as fd
    for convert in (fd.to_keras, fd.to_keras_model):
      try:
        convert(fd.Masking(), {})
      except RuntimeError as error:
        print(error)
    """
  )
  result = subprocess.run(
    [sys.executable, '-c', code],
    env={**os.environ, 'KERAS_BACKEND': 'numpy'},
    capture_output=True,
    text=True,
    timeout=120,
    check=True,
  )
  for caller in ('to_keras', 'to_keras_model'):
    assert (
      f"{caller} needs Keras's JAX backend, but Keras runs on 'numpy'"
      in result.stdout
    )
  assert result.stdout.count('KERAS_BACKEND=jax') == 2
