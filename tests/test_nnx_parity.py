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

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flax_dense as fd
from flax_dense._src.variables import frozen


def normal(shape, seed=0):
  return jnp.asarray(
    np.random.default_rng(seed).normal(size=shape), jnp.float32
  )


def padded(shape, seed=0):
  """``(B, T, F)`` with trailing all-zero steps, none fully padded."""
  x = np.array(normal(shape, seed))
  lengths = np.random.default_rng(seed).integers(1, shape[1] + 1, shape[0])
  lengths[0] = shape[1] - 2
  for row, length in enumerate(lengths):
    x[row, length:] = 0.0
  return jnp.asarray(x)


def mask_of(x):
  return fd.compute_mask(x)


KEY = jax.random.key(3)


@dataclasses.dataclass
class Case:
  """A linen layer, its inputs, and the extra call arguments of each side."""

  id: str
  module: nn.Module
  inputs: tuple[Any, ...]
  linen_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  nnx_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


# Dropout drawn from an explicit key: linen's rng= call argument, NNX's rngs=.
DROP = {'linen_kwargs': {'deterministic': False, 'rng': KEY}}
DROP['nnx_kwargs'] = {'rngs': KEY}

X3 = normal((3, 5, 4))
PADDED = padded((3, 6, 4))

CASES = [
  Case('PerPositionDense', fd.PerPositionDense(3), (X3,)),
  Case(
    'PerPositionDense-no-bias', fd.PerPositionDense(3, use_bias=False), (X3,)
  ),
  *(
    Case(
      f'PerPositionDense-{name}',
      fd.PerPositionDense(3, activation=activation),
      (X3,),
    )
    for name, activation in [
      ('softmax', 'softmax'),
      ('tanh', 'tanh'),
      ('relu', 'relu'),
      ('callable', jax.nn.gelu),
    ]
  ),
  Case(
    'PerPositionDense-regularized',
    fd.PerPositionDense(3, activity_regularizer=fd.l1_l2(0.01, 0.02)),
    (X3,),
  ),
  Case(
    'PerPositionDense-bfloat16',
    fd.PerPositionDense(3, dtype=jnp.bfloat16),
    (X3,),
  ),
  Case(
    'PerPositionDense-nested-batch',
    fd.PerPositionDense(2),
    (normal((2, 3, 5, 4)),),
  ),
  Case('ConstProduct-frozen', fd.ConstProduct([0.5, 1.5, -2.0, 1.0]), (X3,)),
  Case(
    'ConstProduct-trainable',
    fd.ConstProduct([0.5, 1.5, -2.0, 1.0], trainable=True),
    (X3,),
  ),
  Case('ConstProduct-trainable-drawn', fd.ConstProduct(trainable=True), (X3,)),
  Case('Masking', fd.Masking(0.0), (PADDED,)),
  Case('Masking-value', fd.Masking(-1.0), (PADDED - 1.0,)),
  Case(
    'Dropout-noise-shape',
    fd.Dropout(0.4, noise_shape=(None, 1, None)),
    (X3,),
    **DROP,
  ),
  Case('Dropout', fd.Dropout(0.5), (X3,), **DROP),
  Case('Dropout-eval', fd.Dropout(0.5, deterministic=True), (X3,)),
  Case('SpatialDropout1D', fd.SpatialDropout1D(0.5), (X3,), **DROP),
  Case(
    'SpatialDropout1D-channels-first',
    fd.SpatialDropout1D(0.5, data_format='channels_first'),
    (X3,),
    **DROP,
  ),
  Case(
    'SpatialDropout2D',
    fd.SpatialDropout2D(0.5),
    (normal((2, 3, 4, 5)),),
    **DROP,
  ),
  Case(
    'SpatialDropout2D-channels-first',
    fd.SpatialDropout2D(0.5, data_format='channels_first'),
    (normal((2, 3, 4, 5)),),
    **DROP,
  ),
  Case(
    'SpatialDropout3D',
    fd.SpatialDropout3D(0.5),
    (normal((2, 3, 2, 2, 4)),),
    **DROP,
  ),
  Case(
    'SpatialDropout3D-channels-first',
    fd.SpatialDropout3D(0.5, data_format='channels_first'),
    (normal((2, 3, 2, 2, 4)),),
    **DROP,
  ),
  Case('Activation', fd.Activation('gelu'), (X3,)),
  Case('Activation-softmax', fd.Activation('softmax'), (X3,)),
  Case('Reshape', fd.Reshape((2, -1)), (X3,)),
  Case('Permute', fd.Permute((2, 1)), (X3,)),
  Case('Flatten', fd.Flatten(), (X3,)),
  Case('Flatten-channels-first', fd.Flatten('channels_first'), (X3,)),
  Case('RepeatVector', fd.RepeatVector(3), (X3[:, 0],)),
  Case('Lambda', fd.Lambda(lambda x: jnp.sin(x) * x[..., :1]), (X3,)),
  Case('ActivityRegularization', fd.ActivityRegularization(0.1, 0.3), (X3,)),
  Case(
    'GlobalAveragePooling1D-mask',
    fd.GlobalAveragePooling1D(),
    (PADDED, mask_of(PADDED)),
  ),
  Case(
    'GlobalAveragePooling1D-keepdims',
    fd.GlobalAveragePooling1D(keepdims=True),
    (PADDED,),
  ),
  Case(
    'GlobalMaxPooling1D-mask',
    fd.GlobalMaxPooling1D(),
    (PADDED, mask_of(PADDED)),
  ),
  Case(
    'GlobalMaxPooling1D-channels-first',
    fd.GlobalMaxPooling1D('channels_first', keepdims=True),
    (X3,),
  ),
  Case('MultiIODense', fd.MultiIODense(3), (normal((4, 2)), normal((4, 3), 1))),
  Case(
    'AttentionDecoder-mask',
    fd.AttentionDecoder(5, 3),
    (PADDED, mask_of(PADDED)),
  ),
  Case(
    'AttentionDecoder-probabilities',
    fd.AttentionDecoder(5, 3, return_probabilities=True),
    (PADDED, mask_of(PADDED)),
  ),
  # 7 steps in windows of 2 every 2: the weights fix 3 windows, not the 7.
  Case(
    'LocallyConnected1D-strides',
    fd.LocallyConnected1D(3, 2, strides=2, activation='relu'),
    (normal((3, 7, 4)),),
  ),
  Case(
    'LocallyConnected1D-channels-first-no-bias',
    fd.LocallyConnected1D(2, 3, data_format='channels_first', use_bias=False),
    (normal((3, 4, 6)),),
  ),
  Case('flax-Dense', nn.Dense(3), (X3,)),
  Case(
    'Embedding-mask-zero',
    fd.Embedding(6, 3, mask_zero=True),
    (jnp.array([[1, 2, 0, 5], [0, 3, 4, 0]]),),
  ),
  Case('SimpleRNN', fd.SimpleRNN(3, return_sequences=True), (PADDED,)),
  Case(
    'LSTM-mask-state',
    fd.LSTM(3, return_state=True, go_backwards=True),
    (PADDED, mask_of(PADDED)),
  ),
  Case('GRU-reset-before', fd.GRU(3, reset_after=False), (X3,)),
  Case(
    'GRU-mask-sequences',
    fd.GRU(2, return_sequences=True),
    (PADDED, mask_of(PADDED)),
  ),
  Case(
    'Bidirectional-backward-layer',
    fd.Bidirectional(
      fd.LSTM(3, return_sequences=True),
      merge_mode='sum',
      backward_layer=fd.LSTM(
        3, return_sequences=True, go_backwards=True, activation='relu'
      ),
    ),
    (PADDED, mask_of(PADDED)),
  ),
  Case('Bidirectional-GRU', fd.Bidirectional(fd.GRU(2)), (X3,)),
  Case(
    'KerasSequential',
    fd.KerasSequential(
      (
        fd.Masking(),
        fd.PerPositionDense(3, activation='tanh'),
        fd.Dropout(0.3),
        fd.GlobalAveragePooling1D(),
      ),
      names=('masking', 'dense', 'dropout', 'pooling'),
      mask_flow=('compute', 'propagate', 'propagate', 'consume'),
    ),
    (PADDED,),
  ),
]

REGULARIZED = [
  case
  for case in CASES
  if case.id in ('PerPositionDense-regularized', 'ActivityRegularization')
]


def by_id(cases):
  return pytest.mark.parametrize('case', cases, ids=[c.id for c in cases])


def build(case):
  """The linen variables of ``case`` and the NNX twin from_linen makes."""
  variables = case.module.init(
    jax.random.key(0), *case.inputs, **case.linen_kwargs
  )
  return variables, fd.nnx.from_linen(case.module, variables)


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
  variables, twin = build(case)
  expected = case.module.apply(variables, *case.inputs, **case.linen_kwargs)
  assert_same(twin(*case.inputs, **case.nnx_kwargs), expected)
  jitted = jax.jit(lambda v, *x: case.module.apply(v, *x, **case.linen_kwargs))
  nnx_jitted = nnx.jit(lambda m, *x: m(*x, **case.nnx_kwargs))
  assert_same(nnx_jitted(twin, *case.inputs), jitted(variables, *case.inputs))


@by_id(CASES)
def test_gradients_match_for_weights_and_inputs(case):
  variables, twin = build(case)
  differentiated = floats(case.inputs)
  weights = cotangent(
    case.module.apply(variables, *case.inputs, **case.linen_kwargs)
  )

  def with_inputs(inputs, differentiable):
    inputs = list(inputs)
    for index, x in zip(differentiated, differentiable, strict=True):
      inputs[index] = x
    return inputs

  def linen_loss(params, differentiable):
    inputs = with_inputs(case.inputs, differentiable)
    outputs = case.module.apply(
      {**variables, 'params': params}, *inputs, **case.linen_kwargs
    )
    return weighted(outputs, weights)

  def nnx_loss(model, differentiable):
    inputs = with_inputs(case.inputs, differentiable)
    return weighted(model(*inputs, **case.nnx_kwargs), weights)

  differentiable = tuple(case.inputs[i] for i in differentiated)
  linen_params, linen_inputs = jax.jit(jax.grad(linen_loss, argnums=(0, 1)))(
    variables.get('params', {}), differentiable
  )
  nnx_params, nnx_inputs = nnx.jit(
    nnx.grad(nnx_loss, argnums=(nnx.DiffState(0, nnx.Param), 1))
  )(twin, differentiable)
  assert_same(nnx_inputs, linen_inputs)
  nnx_params = nnx.to_pure_dict(nnx_params)
  if isinstance(twin, fd.nnx.KerasSequential):  # layers by index, not name
    names = case.module.names
    nnx_params = {
      names[int(index)]: tree for index, tree in nnx_params['layers'].items()
    }
  assert_same(nnx_params, dict(linen_params))


@by_id(CASES)
def test_vmap_over_a_leading_axis_with_the_module_broadcast(case):
  variables, twin = build(case)
  # Two examples of the case's inputs (masks included), batch reversed.
  stacked = tuple(jnp.stack([x, x[::-1]]) for x in case.inputs)
  expected = jax.vmap(
    lambda *x: case.module.apply(variables, *x, **case.linen_kwargs)
  )(*stacked)
  in_axes = (None,) + (0,) * len(stacked)
  actual = nnx.vmap(lambda m, *x: m(*x, **case.nnx_kwargs), in_axes=in_axes)(
    twin, *stacked
  )
  assert_same(actual, expected)


@by_id(CASES)
def test_round_trip_gives_back_the_variables(case):
  variables, twin = build(case)
  module, back = fd.nnx.to_linen(twin)
  assert isinstance(module, type(case.module))
  assert_same(back, variables)
  assert jax.tree.map(lambda v: v.dtype, back) == jax.tree.map(
    lambda v: v.dtype, variables
  )
  assert_same(
    module.apply(back, *case.inputs, **case.linen_kwargs),
    case.module.apply(variables, *case.inputs, **case.linen_kwargs),
  )


@by_id(REGULARIZED)
def test_sown_losses_match(case):
  variables, twin = build(case)
  (x,) = case.inputs
  outputs, state = case.module.apply(variables, x, mutable=['losses'])
  expected = fd.collect_losses(state)
  assert float(expected) > 0
  captured_outputs, losses = nnx.capture(twin, fd.nnx.Loss)(x)
  assert_same(captured_outputs, outputs)
  assert_same(fd.collect_losses(losses), expected)
  # Outside nnx.capture nothing piles up in the model.
  twin(x)
  assert len(nnx.state(twin, fd.nnx.Loss)) == 0

  def linen_loss(params, x):
    outputs, state = case.module.apply(
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
  variables, twin = build(CASES[0])
  assert (twin.positions, twin.in_features, twin.features) == (5, 4, 3)
  assert isinstance(twin.kernel, nnx.Param)
  decoder = next(c for c in CASES if c.id == 'AttentionDecoder-mask')
  _, twin = build(decoder)
  assert (twin.units, twin.output_dim, twin.in_features) == (5, 3, 4)
  product = next(c for c in CASES if c.id == 'ConstProduct-frozen')
  _, twin = build(product)
  assert isinstance(twin.kernel, fd.nnx.Constant)
  assert twin.in_features == 4 and not twin.trainable
  assert len(nnx.state(twin, nnx.Param)) == 0


@pytest.mark.parametrize(
  'module,shape',
  [
    (fd.Dropout(0.5), (4, 6, 3)),
    (fd.SpatialDropout1D(0.5), (4, 6, 3)),
    (fd.SpatialDropout2D(0.5), (4, 3, 3, 5)),
    (fd.SpatialDropout3D(0.5, data_format='channels_first'), (4, 5, 2, 2, 2)),
  ],
  ids=['Dropout', 'SpatialDropout1D', 'SpatialDropout2D', 'SpatialDropout3D'],
)
def test_dropout_follows_train_and_eval(module, shape):
  x = normal(shape)
  twin = fd.nnx.from_linen(module, {}, rngs=nnx.Rngs(dropout=1))
  assert twin.deterministic is False  # linen's None: training, switchable
  first, second = twin(x), twin(x)
  kept = np.asarray(first) != 0
  assert 0 < kept.mean() < 1
  np.testing.assert_array_equal(
    np.asarray(first)[kept], 2 * np.asarray(x)[kept]
  )
  assert not np.array_equal(first, second)  # the stream moves on
  # The same stream as an NNX layer built directly with those rngs.
  layout = (
    {'data_format': module.data_format}
    if hasattr(module, 'data_format')
    else {}
  )
  direct = type(twin)(0.5, rngs=nnx.Rngs(dropout=1), **layout)
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
  case = next(c for c in CASES if c.id == 'KerasSequential')
  variables, twin = build(case)
  (x,) = case.inputs
  # linen's container applies in inference by default: the twin starts in
  # eval mode.
  assert twin.layers[2].deterministic is True
  assert_same(twin(x), case.module.apply(variables, x))
  twin.train()
  dropped = twin(x, rngs=KEY)
  assert not np.array_equal(dropped, twin(x, deterministic=True))
  linen_dropped = case.module.apply(
    variables, x, deterministic=False, rngs={'dropout': KEY}
  )
  assert not np.array_equal(linen_dropped, case.module.apply(variables, x))
  # Back in linen the container decides again.
  module, _ = fd.nnx.to_linen(twin)
  assert module.layers[2].deterministic is None


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
