"""SimpleRNN, LSTM and GRU against Keras 3, for linen and NNX."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import flax_dense as fd
from flax_dense._src.ops import recurrent as recurrent_ops

APIS = ('linen', 'nnx')
# (class name, extra config): both GRU variants.
KINDS = (
  ('SimpleRNN', {}),
  ('LSTM', {}),
  ('GRU', {}),
  ('GRU', {'reset_after': False}),
)
KIND_IDS = ('simple_rnn', 'lstm', 'gru', 'gru_reset_before')
# return_sequences, return_state, go_backwards.
FLAGS = (
  (False, False, False),
  (True, True, False),
  (False, True, True),
  (True, False, True),
)
WEIGHTS = ('kernel', 'recurrent_kernel', 'bias')
BATCH, STEPS, FEATURES, UNITS = 5, 6, 3, 4


def _mask():
  """Rows: no padding, left, middle, right padding, everything masked."""
  mask = np.ones((BATCH, STEPS), bool)
  mask[1, :2] = False
  mask[2, 2:4] = False
  mask[3, 4:] = False
  mask[4, :] = False
  return mask


MASK = _mask()
X = np.random.default_rng(0).normal(size=(BATCH, STEPS, FEATURES))
X = X.astype(np.float32)


@pytest.fixture
def keras_layer(keras_allowed):
  """``keras_layer(name, **config)``: a built Keras layer with non-trivial
  random weights."""

  def build(name, **config):
    layer = getattr(keras.layers, name)(UNITS, **config)
    with keras_allowed():
      layer.build((None, STEPS, FEATURES))
    rng = np.random.default_rng(1)
    layer.set_weights(
      [0.5 * rng.normal(size=w.shape) for w in layer.get_weights()]
    )
    return layer

  return build


def ours(api, name, in_features=FEATURES, **config):
  """``run(params, x, mask, initial_state)`` of our layer ``name``."""
  if api == 'linen':
    module = getattr(fd, name)(UNITS, **config)

    def run(params, x, mask=None, initial_state=None):
      return module.apply({'params': params}, x, mask, initial_state)

    return run
  layer = getattr(fd.nnx, name)(in_features, UNITS, **config, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(layer)

  def run(params, x, mask=None, initial_state=None):
    model = nnx.merge(graphdef, state)
    for weight, value in params.items():
      setattr(model, weight, nnx.Param(value))
    return model(x, mask, initial_state)

  return run


def weights_of(layer):
  return dict(zip(WEIGHTS, layer.get_weights(), strict=False))


@pytest.fixture
def keras_values_and_grads(keras_allowed):
  """``keras_values_and_grads(layer, x, mask, linear, initial_state=None)``:
  Keras's outputs and the gradients of the fixed linear loss ``linear``."""

  def run(layer, x, mask, linear, initial_state=None):
    weights = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def loss(weights, x):
      kwargs = {'mask': None if mask is None else jnp.asarray(mask)}
      if initial_state is not None:
        kwargs['initial_state'] = initial_state
      outputs, _ = layer.stateless_call(weights, fixed, x, **kwargs)
      return linear(outputs), outputs

    with keras_allowed():
      (_, outputs), grads = jax.value_and_grad(
        loss, argnums=(0, 1), has_aux=True
      )(weights, jnp.asarray(x))
    return outputs, dict(zip(WEIGHTS, grads[0], strict=False)), grads[1]

  return run


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('masked', [False, True], ids=['unmasked', 'masked'])
@pytest.mark.parametrize(
  'flags', FLAGS, ids=lambda f: 'rs{:d}-st{:d}-gb{:d}'.format(*f)
)
@pytest.mark.parametrize(('name', 'config'), KINDS, ids=KIND_IDS)
def test_outputs_states_and_gradients_match_keras(
  api,
  masked,
  flags,
  name,
  config,
  keras_layer,
  keras_call,
  keras_values_and_grads,
  linear_loss,
  tree_close,
):
  return_sequences, return_state, go_backwards = flags
  config = dict(
    config,
    return_sequences=return_sequences,
    return_state=return_state,
    go_backwards=go_backwards,
  )
  layer = keras_layer(name, **config)
  mask = MASK if masked else None
  probe = keras_call(layer, X, mask=mask)
  linear = linear_loss(probe)
  expected, expected_grads, expected_x_grad = keras_values_and_grads(
    layer, X, mask, linear
  )
  run = ours(api, name, **config)
  params = {k: jnp.asarray(v) for k, v in weights_of(layer).items()}

  def loss(params, x):
    outputs = run(params, x, None if mask is None else jnp.asarray(mask))
    return linear(outputs), outputs

  (_, outputs), (grads, x_grad) = jax.value_and_grad(
    loss, argnums=(0, 1), has_aux=True
  )(params, jnp.asarray(X))
  if return_state:
    assert isinstance(outputs, tuple)
    assert len(outputs) == (3 if name == 'LSTM' else 2)
  tree_close(outputs, expected)
  tree_close(grads, expected_grads)
  tree_close(x_grad, expected_x_grad)
  # The fully masked example is finite everywhere, gradients included.
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(('name', 'config'), KINDS, ids=KIND_IDS)
def test_initial_state_matches_keras(
  api, name, config, keras_layer, keras_call, tree_close
):
  config = dict(config, return_sequences=True, return_state=True)
  layer = keras_layer(name, **config)
  rng = np.random.default_rng(3)
  count = 2 if name == 'LSTM' else 1
  states = [
    rng.normal(size=(BATCH, UNITS)).astype(np.float32) for _ in range(count)
  ]
  # Left padding: the first outputs are the initial h, as in Keras's scan.
  expected = keras_call(layer, X, initial_state=states, mask=MASK)
  run = ours(api, name, **config)
  params = {k: jnp.asarray(v) for k, v in weights_of(layer).items()}
  actual = run(params, X, jnp.asarray(MASK), states)
  tree_close(actual, expected)
  np.testing.assert_allclose(actual[0][1, 0], states[0][1], rtol=1e-6)
  if count == 1:  # a single array is accepted, as in Keras
    tree_close(run(params, X, jnp.asarray(MASK), states[0]), expected)


@pytest.mark.parametrize('api', APIS)
def test_lstm_weights_and_unit_forget_bias(api):
  if api == 'linen':
    variables = fd.LSTM(UNITS).init(jax.random.key(0), X)
    params = variables['params']
  else:
    layer = fd.nnx.LSTM(FEATURES, UNITS, rngs=nnx.Rngs(0))
    params = {name: getattr(layer, name)[...] for name in WEIGHTS}
  assert jax.tree.map(jnp.shape, dict(params)) == {
    'kernel': (FEATURES, 4 * UNITS),
    'recurrent_kernel': (UNITS, 4 * UNITS),
    'bias': (4 * UNITS,),
  }
  bias = np.asarray(params['bias'])
  np.testing.assert_array_equal(bias[UNITS : 2 * UNITS], 1.0)
  np.testing.assert_array_equal(np.delete(bias, np.s_[UNITS : 2 * UNITS]), 0)
  # The recurrent kernel is orthogonal (columns of U x 4U: rows orthonormal).
  recurrent = np.asarray(params['recurrent_kernel'])
  np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(UNITS), atol=1e-5)


def test_use_bias_false_matches_keras(keras_layer, keras_call, tree_close):
  layer = keras_layer('GRU', use_bias=False, return_sequences=True)
  kernel, recurrent = layer.get_weights()
  run = ours('linen', 'GRU', use_bias=False, return_sequences=True)
  actual = run({'kernel': kernel, 'recurrent_kernel': recurrent}, X)
  tree_close(actual, keras_call(layer, X))


def test_leading_axes_are_batch_axes():
  module = fd.LSTM(UNITS, return_sequences=True)
  variables = module.init(jax.random.key(0), X)
  flat = module.apply(variables, X, jnp.asarray(MASK))
  nested = module.apply(
    variables, X[:4].reshape(2, 2, STEPS, FEATURES), MASK[:4].reshape(2, 2, -1)
  )
  np.testing.assert_allclose(nested.reshape(4, STEPS, UNITS), flat[:4])
  single = module.apply(variables, X[1], jnp.asarray(MASK[1]))
  np.testing.assert_allclose(single, flat[1], rtol=1e-6)


def test_masked_nan_inputs_reach_nothing():
  module = fd.GRU(UNITS, return_sequences=True)
  variables = module.init(jax.random.key(0), X)
  poisoned = np.where(MASK[..., None], X, np.nan)

  def loss(x):
    return jnp.sum(module.apply(variables, x, jnp.asarray(MASK)))

  outputs = module.apply(variables, poisoned, jnp.asarray(MASK))
  np.testing.assert_array_equal(
    outputs, module.apply(variables, X, jnp.asarray(MASK))
  )
  grad = jax.grad(loss)(jnp.asarray(poisoned))
  assert np.isfinite(np.asarray(grad)).all()
  assert np.all(np.asarray(grad)[~MASK] == 0)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2))
    mask = np.array([True, False, True])
    shapes = fd.functional.recurrent_shapes('lstm', 2, 3)
    params = {name: 0.5 * rng.normal(size=s) for name, s in shapes.items()}

    def run(x, params):
      outputs, (h, c) = fd.functional.recurrent(
        x, **params, mask=mask, kind='lstm'
      )
      return outputs, h, c

    check_grads(jax.jit(run), (x, params), order=2, modes=['rev'])


# ---------------------------------------------------------------------------
# Dropout: one mask per sequence, as Keras 3's cells draw them.


def _identity_rnn(**config):
  """A linear SimpleRNN whose output shows the dropout masks."""
  module = fd.SimpleRNN(
    8, activation='linear', use_bias=False, return_sequences=True, **config
  )
  params = {'kernel': jnp.eye(8), 'recurrent_kernel': jnp.zeros((8, 8))}
  return module, params


def test_input_dropout_mask_is_the_same_at_every_step():
  module, params = _identity_rnn(dropout=0.25, deterministic=False)
  x = jnp.ones((400, 5, 8))
  outputs = module.apply(
    {'params': params}, x, rngs={'dropout': jax.random.key(1)}
  )
  outputs = np.asarray(outputs)
  assert set(np.unique(outputs)) == {0.0, np.float32(1 / 0.75)}
  # The same kept entries at every step.
  np.testing.assert_array_equal(outputs, outputs[:, :1].repeat(5, axis=1))
  keep_rate = np.mean(outputs[:, 0] > 0)
  assert abs(keep_rate - 0.75) < 0.02
  # Examples draw different masks.
  assert len({row.tobytes() for row in outputs[:, 0] > 0}) > 100


def test_recurrent_dropout_mask_is_the_same_at_every_step():
  module = fd.SimpleRNN(
    8,
    activation='linear',
    use_bias=False,
    return_sequences=True,
    recurrent_dropout=0.5,
    deterministic=False,
  )
  params = {'kernel': jnp.eye(8), 'recurrent_kernel': jnp.eye(8)}
  outputs = module.apply(
    {'params': params},
    jnp.ones((50, 4, 8)),
    rngs={'dropout': jax.random.key(2)},
  )
  # h_t = 1 + keep * h_{t-1}: a dropped unit stays 1, a kept one doubles up.
  kept = np.asarray(outputs[:, 1]) > 1
  expected = np.where(kept[..., None], [1.0, 3.0, 7.0, 15.0], 1.0)
  np.testing.assert_allclose(
    np.asarray(outputs), expected.transpose(0, 2, 1), rtol=1e-6
  )


@pytest.mark.parametrize('gates', [1, 4])
def test_dropout_multiplies_the_inputs_once_per_sequence(gates):
  # An input mask shared by the gates (Keras's implementation 2), or one
  # mask per gate that happen to be equal (implementation 1), is the same
  # as masking the sequence itself.
  rng = np.random.default_rng(4)
  x = rng.normal(size=(STEPS, FEATURES)).astype(np.float32)
  shapes = fd.functional.recurrent_shapes('lstm', FEATURES, UNITS)
  params = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
  keep = np.array([2.0, 0.0, 2.0], np.float32)
  dropped, _ = fd.functional.recurrent(
    x, **params, kind='lstm', input_keep=np.tile(keep, (gates, 1))
  )
  plain, _ = fd.functional.recurrent(x * keep, **params, kind='lstm')
  np.testing.assert_allclose(dropped, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['LSTM', 'GRU'])
def test_recurrent_dropout_draws_one_mask_per_gate(name):
  # Keras's implementation 1: with recurrent dropout, every gate has its own
  # masks; the result differs from one mask shared by the gates.
  module = getattr(fd, name)(
    UNITS, dropout=0.5, recurrent_dropout=0.5, deterministic=False
  )
  variables = module.init(jax.random.key(0), X)
  rngs = {'dropout': jax.random.key(3)}
  first = module.apply(variables, X, rngs=rngs)
  again = module.apply(variables, X, rngs=rngs)
  np.testing.assert_array_equal(first, again)
  off = module.apply(variables, X, deterministic=True)
  assert not np.allclose(first, off)
  np.testing.assert_array_equal(
    off, module.clone(dropout=0.0, recurrent_dropout=0.0).apply(variables, X)
  )


@pytest.mark.parametrize(
  ('name', 'config', 'rates'),
  [
    ('SimpleRNN', {}, (0.3, 0.4)),
    ('LSTM', {}, (0.3, 0.0)),
    ('LSTM', {}, (0.3, 0.4)),
    ('GRU', {}, (0.3, 0.4)),
    ('GRU', {'reset_after': False}, (0.3, 0.4)),
  ],
  ids=['simple_rnn', 'lstm_shared', 'lstm_per_gate', 'gru', 'gru_before'],
)
@pytest.mark.parametrize('hoisted', [False, True], ids=['in_step', 'hoisted'])
def test_given_dropout_masks_match_keras(
  name, config, rates, hoisted, monkeypatch, keras_layer, keras_call, tree_close
):
  # Both places of the input projection (see test_projection_placement).
  monkeypatch.setattr(recurrent_ops, '_HOISTED_ON_CPU', hoisted)
  # Keras's cells cache their masks for a call; planting them there makes
  # Keras use ours: one per gate (implementation 1, forced by recurrent
  # dropout) for LSTM and GRU, else one input mask for every gate.
  dropout, recurrent_dropout = rates
  layer = keras_layer(
    name,
    dropout=dropout,
    recurrent_dropout=recurrent_dropout,
    return_sequences=True,
    **config,
  )
  rng = np.random.default_rng(6)
  gates = {'SimpleRNN': 1, 'LSTM': 4, 'GRU': 3}[name]
  rows = gates if name != 'SimpleRNN' and recurrent_dropout else 1

  def draw(rate, size):
    keep = rng.random((BATCH, rows, size)) >= rate
    return (keep / (1 - rate)).astype(np.float32)

  input_keep = draw(dropout, FEATURES)
  recurrent_keep = draw(recurrent_dropout, UNITS) if recurrent_dropout else None
  cell = layer.cell
  per_gate = getattr(cell, 'dropout_mask_count', None) is not None

  def planted(keep):
    if per_gate:
      return [jnp.asarray(keep[:, gate]) for gate in range(rows)]
    return jnp.asarray(keep[:, 0])

  cell._dropout_mask = planted(input_keep)
  if recurrent_keep is not None:
    cell._recurrent_dropout_mask = planted(recurrent_keep)
  expected = keras_call(layer, X, mask=MASK, training=True)
  kind = {'SimpleRNN': 'simple_rnn', 'LSTM': 'lstm', 'GRU': 'gru'}[name]
  weights = weights_of(layer)

  def one(x, mask, input_keep, recurrent_keep):
    return fd.functional.recurrent(
      x,
      **weights,
      mask=mask,
      kind=kind,
      reset_after=config.get('reset_after', True),
      input_keep=input_keep,
      recurrent_keep=recurrent_keep,
    )[0]

  actual = jax.vmap(one)(X, MASK, input_keep, recurrent_keep)
  tree_close(actual, expected)


def test_linen_dropout_needs_deterministic():
  module = fd.LSTM(UNITS, dropout=0.5)
  variables = fd.LSTM(UNITS).init(jax.random.key(0), X)
  with pytest.raises(ValueError, match='LSTM: deterministic must be given'):
    module.apply(variables, X)


def test_nnx_train_and_eval_switch_dropout():
  layer = fd.nnx.GRU(FEATURES, UNITS, dropout=0.5, rngs=nnx.Rngs(0))
  first, second = layer(X), layer(X)
  assert not np.allclose(first, second)  # a new draw at every call
  layer.eval()
  plain = layer(X)
  np.testing.assert_array_equal(plain, layer(X))
  layer.train()
  assert not np.allclose(layer(X), plain)


# ---------------------------------------------------------------------------
# Compilation and export.


@pytest.mark.parametrize('api', APIS)
def test_eager_calls_compile_once(api, count_compiles):
  mask = jnp.asarray(MASK)
  if api == 'linen':
    module = fd.LSTM(UNITS, return_sequences=True)
    variables = module.init(jax.random.key(0), X)

    def call():
      return module.apply(variables, X, mask)
  else:
    layer = fd.nnx.LSTM(FEATURES, UNITS, rngs=nnx.Rngs(0))

    def call():
      return layer(X, mask)

  call()
  with count_compiles() as compiles:
    for _ in range(3):
      jax.block_until_ready(call())
  assert not compiles


def test_jax_export_with_symbolic_batch_and_timesteps():
  module = fd.GRU(UNITS, return_sequences=True, go_backwards=True)
  variables = module.init(jax.random.key(0), X)
  batch, steps = jax.export.symbolic_shape('b, t')
  exported = jax.export.export(jax.jit(module.apply))(
    variables,
    jax.ShapeDtypeStruct((batch, steps, FEATURES), jnp.float32),
    jax.ShapeDtypeStruct((batch, steps), jnp.bool_),
  )
  for size, length in ((2, STEPS), (5, 3)):
    x, mask = X[:size, :length], MASK[:size, :length]
    np.testing.assert_allclose(
      exported.call(variables, x, mask),
      module.apply(variables, x, mask),
      rtol=1e-6,
    )


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  ('config', 'error', 'match'),
  [
    ({'units': 0}, ValueError, 'LSTM: units must be a positive integer'),
    ({'units': 2.0}, TypeError, 'LSTM: units must be a positive integer'),
    ({'dropout': 1.0}, ValueError, r'LSTM: dropout must be a float in \[0, 1'),
    (
      {'recurrent_dropout': -0.1},
      ValueError,
      r'LSTM: recurrent_dropout must be a float in \[0, 1',
    ),
    (
      {'return_sequences': 'yes'},
      TypeError,
      'LSTM: return_sequences must be True or False',
    ),
    ({'activation': 'nope'}, ValueError, "LSTM: unknown activation 'nope'"),
  ],
)
def test_bad_config(api, config, error, match):
  config = {'units': UNITS, **config}
  with pytest.raises(error, match=match):
    if api == 'linen':
      fd.LSTM(**config).init(jax.random.key(0), X)
    else:
      units = config.pop('units')
      fd.nnx.LSTM(FEATURES, units, **config, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  ('call', 'error', 'match'),
  [
    (
      {'x': X[0, 0]},
      ValueError,
      r'LSTM: inputs must have shape \(\.\.\., timesteps, features\) with'
      r' rank >= 2, got shape \(3,\)',
    ),
    (
      {'x': X[:, :0]},
      ValueError,
      r'LSTM: inputs of shape \(5, 0, 3\) have 0 timesteps',
    ),
    (
      {'mask': MASK[:, :4]},
      ValueError,
      r'LSTM: mask must have shape \(5, 6\) .* got shape \(5, 4\)',
    ),
    (
      {'mask': MASK.astype(np.int32)},
      TypeError,
      'LSTM: mask must be a boolean array .* got dtype int32',
    ),
    (
      {'initial_state': [np.zeros((BATCH, UNITS))]},
      ValueError,
      r'LSTM: initial_state must hold 2 arrays \[h, c\], got 1',
    ),
    (
      {'initial_state': np.zeros((BATCH, UNITS))},
      TypeError,
      r'LSTM: initial_state must be a list of 2 arrays \[h, c\], got ndarray',
    ),
    (
      {'initial_state': [np.zeros((BATCH, UNITS)), np.zeros((BATCH, 3))]},
      ValueError,
      r'LSTM: initial_state\[1\] must have shape \(5, 4\) .* got shape'
      r' \(5, 3\)',
    ),
    (
      {'x': X[..., :2]},
      ValueError,
      r'LSTM: inputs of shape \(5, 6, 2\) need kernel of shape \(2, 16\),'
      r' but it was built with shape \(3, 16\)',
    ),
  ],
)
def test_bad_call(api, call, error, match):
  x = call.get('x', X)
  mask = call.get('mask')
  state = call.get('initial_state')
  if api == 'linen':
    module = fd.LSTM(UNITS)
    variables = module.init(jax.random.key(0), X)
    with pytest.raises(error, match=match):
      module.apply(variables, x, mask, state)
  else:
    layer = fd.nnx.LSTM(FEATURES, UNITS, rngs=nnx.Rngs(0))
    with pytest.raises(error, match=match):
      layer(x, mask, state)


@pytest.mark.parametrize(('name', 'config'), KINDS, ids=KIND_IDS)
def test_hoisted_projection_gives_the_gradients_of_the_step(
  name, config, monkeypatch, keras_layer, tree_close
):
  # The input projection before the scan (GPU, TPU) and inside it (CPU):
  # outputs and gradients of masked, backwards, dropped sequences agree.
  kind = KIND_IDS[[k for k, _ in KINDS].index(name)].removesuffix(
    '_reset_before'
  )
  rng = np.random.default_rng(7)
  layer = keras_layer(name, **config)
  weights = {k: jnp.asarray(v) for k, v in weights_of(layer).items()}
  keep = (rng.random((BATCH, 1, FEATURES)) > 0.3).astype(np.float32) / 0.7

  def loss(weights, x):
    def one(x, mask, keep):
      return fd.functional.recurrent(
        x,
        **weights,
        mask=mask,
        kind=kind,
        reset_after=config.get('reset_after', True),
        go_backwards=True,
        input_keep=keep,
      )

    outputs, states = jax.vmap(one)(x, MASK, keep)
    return jnp.sum(outputs**2) + jnp.sum(states[0]), outputs

  results, programs = {}, {}
  for hoisted in (False, True):
    monkeypatch.setattr(recurrent_ops, '_HOISTED_ON_CPU', hoisted)
    gradient = jax.value_and_grad(loss, (0, 1), has_aux=True)
    results[hoisted] = gradient(weights, jnp.asarray(X))
    programs[hoisted] = str(jax.make_jaxpr(gradient)(weights, jnp.asarray(X)))
  assert programs[True] != programs[False]
  tree_close(results[True], results[False])


def test_projection_placement():
  # Lowered for CPU the input projection is in the step, one (G*U,) row per
  # step; lowered for GPU it is one matmul over every step, (T, G*U).
  def one(x, kernel, recurrent_kernel, bias):
    return fd.functional.recurrent(x, kernel, recurrent_kernel, bias)[0]

  args = (
    jnp.zeros((STEPS, FEATURES)),
    jnp.zeros((FEATURES, 4 * UNITS)),
    jnp.zeros((UNITS, 4 * UNITS)),
    jnp.zeros((4 * UNITS,)),
  )
  hoisted = f'tensor<{STEPS}x{4 * UNITS}xf32>'

  def text(platform):
    exported = jax.export.export(jax.jit(one), platforms=(platform,))(*args)
    dots = [
      line
      for line in exported.mlir_module().splitlines()
      if 'dot_general' in line
    ]
    assert dots
    return '\n'.join(dots)

  assert hoisted not in text('cpu')
  assert hoisted in text('cuda')
  assert hoisted in text('tpu')
