"""Bidirectional against Keras 3, for linen and NNX."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd

APIS = ('linen', 'nnx')
WEIGHTS = ('kernel', 'recurrent_kernel', 'bias')
BATCH, STEPS, FEATURES, UNITS = 5, 6, 3, 4
X = np.random.default_rng(0).normal(size=(BATCH, STEPS, FEATURES))
X = X.astype(np.float32)
# Rows: no padding, left, middle, right padding, everything masked.
MASK = np.ones((BATCH, STEPS), bool)
MASK[1, :2] = MASK[2, 2:4] = MASK[3, 4:] = MASK[4, :] = False
MERGE_MODES = ('concat', 'sum', 'mul', 'ave', None)
# return_sequences, return_state.
FLAGS = ((True, False), (False, True), (True, True))


@pytest.fixture
def keras_bidirectional(keras_allowed):
  """``keras_bidirectional(name, merge_mode, **config)``: a built Keras
  Bidirectional over ``name`` with non-trivial random weights."""

  def build(name, merge_mode, **config):
    layer = keras.layers.Bidirectional(
      getattr(keras.layers, name)(UNITS, **config), merge_mode=merge_mode
    )
    with keras_allowed():
      layer.build((None, STEPS, FEATURES))
    rng = np.random.default_rng(1)
    layer.set_weights(
      [0.5 * rng.normal(size=w.shape) for w in layer.get_weights()]
    )
    return layer

  return build


def ours(api, name, merge_mode, **config):
  """``run(weights, x, mask, initial_state)``; weights: forward, backward."""
  if api == 'linen':
    module = fd.Bidirectional(
      getattr(fd, name)(UNITS, **config), merge_mode=merge_mode
    )

    def run(weights, x, mask=None, initial_state=None):
      params = {
        'forward_layer': dict(zip(WEIGHTS, weights[:3], strict=True)),
        'backward_layer': dict(zip(WEIGHTS, weights[3:], strict=True)),
      }
      return module.apply({'params': params}, x, mask, initial_state)

    return run
  layer = fd.nnx.Bidirectional(
    getattr(fd.nnx, name)(FEATURES, UNITS, **config, rngs=nnx.Rngs(0)),
    merge_mode=merge_mode,
    rngs=nnx.Rngs(1),
  )
  graphdef, state = nnx.split(layer)

  def run(weights, x, mask=None, initial_state=None):
    model = nnx.merge(graphdef, state)
    for half, values in (
      (model.forward_layer, weights[:3]),
      (model.backward_layer, weights[3:]),
    ):
      for name, value in zip(WEIGHTS, values, strict=True):
        setattr(half, name, nnx.Param(value))
    return model(x, mask, initial_state)

  return run


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'flags', FLAGS, ids=lambda f: 'rs{:d}-st{:d}'.format(*f)
)
@pytest.mark.parametrize('merge_mode', MERGE_MODES)
def test_lstm_matches_keras_with_masks(
  api,
  flags,
  merge_mode,
  keras_bidirectional,
  keras_call,
  keras_allowed,
  linear_loss,
  tree_close,
):
  return_sequences, return_state = flags
  config = {'return_sequences': return_sequences, 'return_state': return_state}
  layer = keras_bidirectional('LSTM', merge_mode, **config)
  mask = jnp.asarray(MASK)
  probe = keras_call(layer, X, mask=mask)
  linear = linear_loss(probe)
  variables = [v.value for v in layer.trainable_variables]
  fixed = [v.value for v in layer.non_trainable_variables]

  def keras_loss(weights, x):
    outputs, _ = layer.stateless_call(weights, fixed, x, mask=mask)
    return linear(outputs), outputs

  with keras_allowed():
    (_, expected), expected_grads = jax.value_and_grad(
      keras_loss, argnums=(0, 1), has_aux=True
    )(variables, jnp.asarray(X))
  run = ours(api, 'LSTM', merge_mode, **config)

  def loss(weights, x):
    outputs = run(weights, x, mask)
    return linear(outputs), outputs

  weights = [jnp.asarray(w) for w in layer.get_weights()]
  (_, actual), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
    weights, jnp.asarray(X)
  )
  if merge_mode is None or return_state:
    assert isinstance(actual, tuple)
    outputs = 2 if merge_mode is None else 1
    assert len(actual) == outputs + (4 if return_state else 0)
  tree_close(actual, expected)
  tree_close(grads, expected_grads)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('name', ['SimpleRNN', 'GRU'])
def test_initial_state_matches_keras(
  api, name, keras_bidirectional, keras_call, tree_close
):
  config = {'return_sequences': True, 'return_state': True}
  layer = keras_bidirectional(name, 'concat', **config)
  rng = np.random.default_rng(5)
  states = [
    rng.normal(size=(BATCH, UNITS)).astype(np.float32) for _ in range(2)
  ]
  expected = keras_call(layer, X, initial_state=states, mask=MASK)
  run = ours(api, name, 'concat', **config)
  weights = [jnp.asarray(w) for w in layer.get_weights()]
  tree_close(run(weights, X, jnp.asarray(MASK), states), expected)


@pytest.mark.parametrize('api', APIS)
def test_given_backward_layer(api):
  if api == 'linen':
    layer = fd.Bidirectional(
      fd.LSTM(UNITS, return_sequences=True),
      backward_layer=fd.GRU(3, return_sequences=True, go_backwards=True),
    )
    variables = layer.init(jax.random.key(0), X)
    shapes = jax.tree.map(jnp.shape, variables['params'])
    assert shapes['backward_layer']['bias'] == (2, 9)
    assert shapes['forward_layer']['bias'] == (4 * UNITS,)
    assert layer.apply(variables, X).shape == (BATCH, X.shape[1], UNITS + 3)
  else:
    backward = fd.nnx.GRU(
      FEATURES, 3, return_sequences=True, go_backwards=True, rngs=nnx.Rngs(1)
    )
    layer = fd.nnx.Bidirectional(
      fd.nnx.LSTM(FEATURES, UNITS, return_sequences=True, rngs=nnx.Rngs(0)),
      backward_layer=backward,
    )
    assert layer.backward_layer is backward
    assert layer(X).shape == (BATCH, X.shape[1], UNITS + 3)


@pytest.mark.parametrize('api', APIS)
def test_bad_arguments(api):
  if api == 'linen':

    def make(layer, **kwargs):
      return fd.Bidirectional(layer, **kwargs).init(jax.random.key(0), X)

    lstm, dense = fd.LSTM(UNITS), fd.PerPositionDense(3)
    forward_twin = fd.LSTM(UNITS)
  else:

    def make(layer, **kwargs):
      return fd.nnx.Bidirectional(layer, rngs=nnx.Rngs(1), **kwargs)

    lstm = fd.nnx.LSTM(FEATURES, UNITS, rngs=nnx.Rngs(0))
    dense = fd.nnx.PerPositionDense(6, FEATURES, 3, rngs=nnx.Rngs(0))
    forward_twin = fd.nnx.LSTM(FEATURES, UNITS, rngs=nnx.Rngs(0))
  with pytest.raises(
    TypeError,
    match=r'Bidirectional: layer must be a recurrent layer \(SimpleRNN, LSTM,'
    r' GRU\), got a PerPositionDense\.',
  ):
    make(dense)
  with pytest.raises(
    ValueError, match=r"Bidirectional: merge_mode must be one of .*'max'"
  ):
    make(lstm, merge_mode='max')
  with pytest.raises(
    ValueError,
    match='Bidirectional: the forward and backward layers must have'
    ' different go_backwards, got False for both',
  ):
    make(lstm, backward_layer=forward_twin)


@pytest.mark.parametrize('api', APIS)
def test_dropout_reaches_both_layers(api):
  if api == 'linen':
    layer = fd.Bidirectional(fd.GRU(UNITS, dropout=0.5), merge_mode=None)
    variables = layer.init(jax.random.key(0), X, deterministic=True)

    def call(deterministic, seed=0):
      return layer.apply(
        variables,
        X,
        deterministic=deterministic,
        rngs={'dropout': jax.random.key(seed)},
      )

    on, again, off = call(False), call(False, 1), call(True)
  else:
    layer = fd.nnx.Bidirectional(
      fd.nnx.GRU(FEATURES, UNITS, dropout=0.5, rngs=nnx.Rngs(0)),
      merge_mode=None,
      rngs=nnx.Rngs(1),
    )
    on, again = layer(X), layer(X)
    layer.eval()
    off = layer(X)
    assert layer.backward_layer.deterministic
  for half in range(2):  # each layer drops, differently at each draw
    assert not np.allclose(on[half], off[half])
    assert not np.allclose(on[half], again[half])


def _dropping_keras_model(rate, keras_allowed):
  """Keras Bidirectional(LSTM) with input and recurrent dropout, then LSTM."""
  with keras_allowed():
    model = keras.Sequential(
      [
        keras.Input(X.shape[1:]),
        keras.layers.Bidirectional(
          keras.layers.LSTM(
            UNITS, dropout=rate, recurrent_dropout=rate, return_sequences=True
          )
        ),
        keras.layers.LSTM(2),
      ]
    )
  return model


@pytest.mark.parametrize('rate', [0.0, 0.5])
def test_imported_bidirectional_drops_in_training_linen(
  rate, keras_allowed, keras_call, tree_close
):
  # The container's deterministic reaches the two directions: off by
  # default (Keras's predict), on when training, and only if they drop.
  model = _dropping_keras_model(rate, keras_allowed)
  module, variables = fd.from_keras(model)
  expected = keras_call(model, X)
  tree_close(module.apply(variables, X), expected)

  def train(seed):
    return module.apply(
      variables,
      X,
      deterministic=False,
      rngs={'dropout': jax.random.key(seed)},
    )

  if rate:
    assert not np.allclose(train(0), expected, atol=1e-4)
    assert not np.allclose(train(0), train(1), atol=1e-4)
    np.testing.assert_array_equal(train(0), train(0))
  else:
    tree_close(train(0), expected)


def test_imported_bidirectional_drops_in_training_nnx(
  keras_allowed, keras_call, tree_close
):
  model = _dropping_keras_model(0.5, keras_allowed)
  expected = keras_call(model, X)
  layers = fd.from_keras(model, api='nnx', rngs=nnx.Rngs(dropout=0))
  # Converted from the linen model too: both start in eval mode.
  module, variables = fd.from_keras(model)
  converted = fd.nnx.from_linen(module, variables, rngs=nnx.Rngs(dropout=0))
  for twin in (layers, converted):
    tree_close(twin(X), expected)
    bidirectional = twin.layers[0]
    assert bidirectional.forward_layer.deterministic
    assert bidirectional.backward_layer.deterministic
    # The call's mode and keys reach the two directions (and the last
    # LSTM, which takes them too): the same key draws the same masks.
    on = twin(X, deterministic=False, rngs=jax.random.key(3))
    again = twin(X, deterministic=False, rngs=jax.random.key(3))
    other = twin(X, deterministic=False, rngs=nnx.Rngs(dropout=4))
    assert not np.allclose(on, expected, atol=1e-4)
    assert not np.allclose(on, other, atol=1e-4)
    np.testing.assert_array_equal(on, again)
    tree_close(twin(X), expected)  # the override lasted one call
    twin.train()
    assert not np.allclose(twin(X), expected, atol=1e-4)


def test_nnx_call_keys_are_split_between_the_directions(tree_close):
  layer = fd.nnx.Bidirectional(
    fd.nnx.LSTM(FEATURES, UNITS, dropout=0.5, rngs=nnx.Rngs(0)),
    merge_mode=None,
    rngs=nnx.Rngs(1),
  )
  key = jax.random.key(5)
  forward_key, backward_key = jax.random.split(key)
  forward, backward = layer(X, rngs=key)
  tree_close(forward, layer.forward_layer(X, rngs=forward_key))
  tree_close(
    backward,
    layer.backward_layer(X, zero_output_for_mask=False, rngs=backward_key),
  )
  assert not np.allclose(
    layer.forward_layer(X, rngs=forward_key),
    layer.forward_layer(X, rngs=backward_key),
  )


@pytest.mark.parametrize('given', [0, 'dropout', [jax.random.key(0)]])
def test_nnx_call_rngs_of_the_wrong_type(given):
  layer = fd.nnx.LSTM(FEATURES, UNITS, dropout=0.5, rngs=nnx.Rngs(0))
  with pytest.raises(
    TypeError,
    match=r'^LSTM: rngs must be an nnx.Rngs, an nnx.RngStream or a key, got',
  ):
    layer(X, rngs=given)
