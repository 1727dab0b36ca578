"""Python's error types for every layer's arguments, linen and NNX.

An argument of the wrong type (a string, float or list where an integer is
expected, a string where a flag is, something not callable where a function
is) raises ``TypeError``; one of the right type with a bad value raises
``ValueError``. Both name the layer and the argument. NumPy integers and
bools are accepted like Python's and give the same result.

The layers are those of tests/cases.py, each called on its main case's
example inputs; a test fails when a layer of the case table is missing.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import main_cases
from flax import nnx

import flax_dense as fd

KEY = jax.random.key(0)
#: The main case of each layer in tests/cases.py: its example inputs are
#: the inputs each layer here is called on.
MAIN = {case.name: case for case in main_cases()}


def features(name):
  """The feature size of the first input of ``name``'s main case."""
  return MAIN[name].shapes[0][-1]


#: Wrong types for an integer argument, and bad integer values.
NOT_INTS = ['3', 2.5, 3.0, [3], None, True]
BAD_INTS = [0, -1]
#: Wrong types for a flag.
NOT_BOOLS = ['False', 'no', 1, 0, None, [True]]
#: Not initializers (Keras's names are not ours: ours are functions).
NOT_INITIALIZERS = [None, 'glorot_uniform', 3]
#: Not activations (a name is fine, a number or a list is not).
NOT_ACTIVATIONS = [3, 1.5, ['relu']]
#: Wrong types for a real number.
NOT_REALS = ['0.1', None, 1j, [0.1], True]


def rngs():
  return nnx.Rngs(0)


class Layer:
  """How to build and run one layer with an argument replaced."""

  def __init__(
    self,
    name,
    linen=None,
    nnx_kwargs=None,
    ints=(),
    bools=(),
    initializers=(),
    activation=False,
    linen_only=(),
    nnx_only=(),
    dropout=False,
  ):
    self.name = name
    self.inputs = MAIN[name].inputs()
    self.linen = linen or {}
    self.nnx = nnx_kwargs or {}
    self.ints = ints
    self.bools = bools
    self.initializers = initializers
    self.activation = activation
    self.linen_only = set(linen_only)
    self.nnx_only = set(nnx_only)
    self.dropout = dropout

  def takes(self, api, argument):
    other = self.nnx_only if api == 'linen' else self.linen_only
    return argument not in other

  def run(self, api, **overrides):
    """Builds the layer (and applies it), with ``overrides`` as arguments."""
    if api == 'linen':
      layer = getattr(fd, self.name)(**{**self.linen, **overrides})
      rng = {'params': KEY, 'dropout': KEY}
      variables = layer.init(rng, *self.inputs)
      return layer.apply(variables, *self.inputs, rngs={'dropout': KEY})
    kwargs = {**self.nnx, **overrides}
    if 'rngs' in kwargs and kwargs['rngs'] is None:
      kwargs['rngs'] = rngs()
    layer = getattr(fd.nnx, self.name)(**kwargs)
    return layer(*self.inputs)


# ``rngs=None`` in NNX defaults stands for a fresh nnx.Rngs(0). The NNX
# sizes are those of each layer's main case's inputs.
RECURRENT_BOOLS = (
  'use_bias',
  'return_sequences',
  'return_state',
  'go_backwards',
  'zero_output_for_mask',
)
LAYERS = [
  Layer(
    'PerPositionDense',
    linen={'features': 4},
    nnx_kwargs={
      'positions': MAIN['PerPositionDense'].shapes[0][0],
      'in_features': features('PerPositionDense'),
      'features': 4,
      'rngs': None,
    },
    ints=('positions', 'in_features', 'features'),
    bools=('use_bias',),
    initializers=('kernel_init', 'bias_init'),
    activation=True,
    nnx_only=('positions', 'in_features'),
  ),
  Layer(
    'LocallyConnected1D',
    linen={'filters': 2, 'kernel_size': 2},
    nnx_kwargs={
      'input_length': MAIN['LocallyConnected1D'].shapes[0][0],
      'in_features': features('LocallyConnected1D'),
      'filters': 2,
      'kernel_size': 2,
      'rngs': None,
    },
    ints=('input_length', 'in_features', 'filters', 'kernel_size', 'strides'),
    bools=('use_bias',),
    initializers=('kernel_init', 'bias_init'),
    activation=True,
    nnx_only=('input_length', 'in_features'),
  ),
  Layer(
    'AttentionDecoder',
    linen={'units': 4, 'output_dim': 3},
    nnx_kwargs={
      'units': 4,
      'output_dim': 3,
      'in_features': features('AttentionDecoder'),
      'rngs': None,
    },
    ints=('units', 'output_dim', 'in_features'),
    bools=('return_probabilities',),
    initializers=('kernel_init', 'recurrent_init', 'bias_init'),
    nnx_only=('in_features',),
  ),
  Layer(
    'MultiIODense',
    linen={'features': 3},
    nnx_kwargs={
      'in_features': features('MultiIODense'),
      'features': 3,
      'rngs': None,
    },
    ints=('in_features', 'features'),
    initializers=('kernel_init',),
    nnx_only=('in_features',),
  ),
  Layer(
    'ConstProduct',
    linen={'weights': [1.0, 2.0, 3.0, -1.0]},
    nnx_kwargs={
      'in_features': features('ConstProduct'),
      'weights': [1.0, 2.0, 3.0, -1.0],
    },
    ints=('in_features',),
    bools=('trainable',),
    nnx_only=('in_features',),
  ),
  Layer('RepeatVector', linen={'n': 2}, nnx_kwargs={'n': 2}, ints=('n',)),
  Layer('GlobalAveragePooling1D', bools=('keepdims',)),
  Layer('GlobalMaxPooling1D', bools=('keepdims',)),
  Layer(
    'Dropout',
    linen={'rate': 0.5, 'deterministic': False},
    nnx_kwargs={'rate': 0.5, 'rngs': None},
    bools=('deterministic',),
    dropout=True,
  ),
  *[
    Layer(
      f'SpatialDropout{n}D',
      linen={'rate': 0.5, 'deterministic': False},
      nnx_kwargs={'rate': 0.5, 'rngs': None},
      bools=('deterministic',),
      dropout=True,
    )
    for n in (1, 2, 3)
  ],
  Layer('Activation', linen={'activation': 'relu'}, activation=True),
  Layer('Flatten'),
  Layer('Masking'),
  Layer('Reshape', linen={'target_shape': (20,)}),
  Layer('Permute', linen={'dims': (2, 1)}),
  Layer('Lambda', linen={'function': jnp.tanh}),
  Layer('ActivityRegularization'),
  Layer(
    'Embedding',
    linen={'input_dim': MAIN['Embedding'].vocabulary, 'output_dim': 3},
    nnx_kwargs={
      'input_dim': MAIN['Embedding'].vocabulary,
      'output_dim': 3,
      'rngs': None,
    },
    ints=('input_dim', 'output_dim'),
    bools=('mask_zero',),
    initializers=('embeddings_init',),
  ),
  *[
    Layer(
      name,
      linen={'units': 3},
      nnx_kwargs={'in_features': features(name), 'units': 3, 'rngs': None},
      ints=('in_features', 'units'),
      bools=RECURRENT_BOOLS + extra_bools,
      initializers=('kernel_init', 'recurrent_kernel_init', 'bias_init'),
      activation=True,
      nnx_only=('in_features',),
    )
    for name, extra_bools in [
      ('SimpleRNN', ()),
      ('LSTM', ('unit_forget_bias',)),
      ('GRU', ('reset_after',)),
    ]
  ],
  Layer(
    'TimeDistributed',
    linen={'layer': fd.PerPositionDense(3)},
    nnx_kwargs={
      'layer': fd.nnx.PerPositionDense(
        *MAIN['TimeDistributed'].shapes[0][1:], 3, rngs=nnx.Rngs(0)
      )
    },
  ),
  Layer(
    'Bidirectional',
    linen={'layer': fd.LSTM(3)},
    nnx_kwargs={
      'layer': fd.nnx.LSTM(features('Bidirectional'), 3, rngs=nnx.Rngs(0)),
      'rngs': None,
    },
  ),
]
for _layer in LAYERS:  # layers whose NNX arguments are the linen fields
  if not _layer.nnx and _layer.linen:
    _layer.nnx = dict(_layer.linen)
BY_NAME = {layer.name: layer for layer in LAYERS}
APIS = ['linen', 'nnx']

#: Layers of tests/cases.py that are not in LAYERS, and why.
NOT_HERE = {
  # flax's own nn.Dense and nnx.Linear: their arguments are Flax's.
  'Dense',
  # Containers of layers: their names and mask flows are fuzzed in
  # tests/test_fuzz.py, their graphs checked in tests/test_keras_graph.py.
  'KerasSequential',
  'KerasFunctional',
}


def test_every_layer_of_the_case_table_is_here():
  layers = {case.name for case in main_cases()}
  missing = layers - NOT_HERE - set(BY_NAME)
  assert not missing, f'add {sorted(missing)} to LAYERS (or to NOT_HERE)'
  assert NOT_HERE <= layers, f'no case for {sorted(NOT_HERE - layers)}'
  assert not NOT_HERE & set(BY_NAME), sorted(NOT_HERE & set(BY_NAME))


def expect(error, layer, argument, api, **overrides):
  """``layer`` built with ``overrides`` raises ``error`` naming both."""
  pattern = rf'{re.escape(layer.name)}\b.*\b{re.escape(argument)}\b'
  with pytest.raises(error, match=pattern) as raised:
    layer.run(api, **overrides)
  assert type(raised.value) is error  # not a subclass such as Flax's


def cases(kind, values, error):
  return [
    pytest.param(
      layer.name,
      argument,
      value,
      api,
      error,
      id=f'{api}-{layer.name}-{argument}={value!r}',
    )
    for layer in LAYERS
    for argument in getattr(layer, kind)
    for api in APIS
    if layer.takes(api, argument)
    for value in values
    # A linen dropout's deterministic=None means: given when calling.
    if not (layer.dropout and api == 'linen' and value is None)
    # Keras's sizes may be tuples of one.
    if not (argument in ('kernel_size', 'strides') and value == [3])
  ]


ARGUMENT_CASES = (
  cases('ints', NOT_INTS, TypeError)
  + cases('ints', BAD_INTS, ValueError)
  + cases('bools', NOT_BOOLS, TypeError)
  + cases('initializers', NOT_INITIALIZERS, TypeError)
)


@pytest.mark.parametrize('name,argument,value,api,error', ARGUMENT_CASES)
def test_typed_arguments(name, argument, value, api, error):
  expect(error, BY_NAME[name], argument, api, **{argument: value})


ACTIVATION_CASES = [
  pytest.param(layer.name, value, api, id=f'{api}-{layer.name}-{value!r}')
  for layer in LAYERS
  if layer.activation
  for api in APIS
  for value in NOT_ACTIVATIONS
]


@pytest.mark.parametrize('name,value,api', ACTIVATION_CASES)
def test_an_activation_that_is_no_function_nor_name_is_a_type_error(
  name, value, api
):
  expect(TypeError, BY_NAME[name], 'activation', api, activation=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'name', [layer.name for layer in LAYERS if layer.activation]
)
def test_an_unknown_activation_name_is_a_value_error(name, api):
  expect(ValueError, BY_NAME[name], 'activation', api, activation='nope')


DROPOUTS = [layer.name for layer in LAYERS if layer.dropout]


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('name', DROPOUTS)
@pytest.mark.parametrize(
  'rate,error',
  [
    *[(value, TypeError) for value in NOT_REALS],
    (-0.5, ValueError),
    (1.0, ValueError),
    (1.2, ValueError),
    (float('nan'), ValueError),
    (float('inf'), ValueError),
  ],
)
def test_dropout_rates(name, api, rate, error):
  expect(error, BY_NAME[name], 'rate', api, rate=rate)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('name', DROPOUTS)
@pytest.mark.parametrize('value', ['False', 'True', 0])
def test_dropout_deterministic_in_the_call_is_a_bool(name, api, value):
  layer = BY_NAME[name]
  x = layer.inputs[0]
  pattern = rf'{name}\b.*\bdeterministic\b'
  with pytest.raises(TypeError, match=pattern):
    if api == 'linen':
      getattr(fd, name)(0.5).apply(
        {}, x, deterministic=value, rngs={'dropout': KEY}
      )
    else:
      getattr(fd.nnx, name)(0.5, rngs=rngs())(x, deterministic=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'name', [*DROPOUTS, 'Flatten', 'GlobalAveragePooling1D', 'GlobalMaxPooling1D']
)
@pytest.mark.parametrize(
  'value,error',
  [(3, TypeError), (None, TypeError), ('channels_middle', ValueError)],
)
def test_data_format(name, api, value, error):
  if name == 'Dropout':
    pytest.skip('Dropout has no data_format')
  expect(error, BY_NAME[name], 'data_format', api, data_format=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'value,error',
  [
    (12, TypeError),
    ('15', TypeError),
    ((15.0,), TypeError),
    (None, TypeError),
    ((-2, 15), ValueError),
    ((-1, -1), ValueError),
    ((4, 4), ValueError),
  ],
)
def test_reshape_target_shape(api, value, error):
  expect(error, BY_NAME['Reshape'], 'target_shape', api, target_shape=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'value,error',
  [
    (2, TypeError),
    ('21', TypeError),
    ((2.0, 1.0), TypeError),
    (None, TypeError),
    ((0, 1), ValueError),  # 0-based by mistake: refused, not transposed
    ((1, 1), ValueError),
    ((1, 3), ValueError),
  ],
)
def test_permute_dims(api, value, error):
  expect(error, BY_NAME['Permute'], 'dims', api, dims=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'value,error',
  [
    (3, TypeError),
    (True, TypeError),
    (['sum'], TypeError),
    ('max', ValueError),
    ('SUM', ValueError),  # Keras's names are lower case
  ],
)
def test_bidirectional_merge_mode(api, value, error):
  layer = BY_NAME['Bidirectional']
  expect(error, layer, 'merge_mode', api, merge_mode=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('value', [3, None, 'tanh'])
def test_lambda_function_must_be_callable(api, value):
  expect(TypeError, BY_NAME['Lambda'], 'function', api, function=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('argument', ['l1', 'l2'])
@pytest.mark.parametrize(
  'value,error',
  [
    *[(value, TypeError) for value in NOT_REALS],
    (-0.1, ValueError),
    (float('inf'), ValueError),
    (float('nan'), ValueError),
  ],
)
def test_activity_regularization_factors(api, argument, value, error):
  layer = BY_NAME['ActivityRegularization']
  expect(error, layer, argument, api, **{argument: value})


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('value', ['0', None, 1j, [0.0], True])
def test_masking_mask_value_is_a_real_number(api, value):
  expect(TypeError, BY_NAME['Masking'], 'mask_value', api, mask_value=value)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'weights,error',
  [
    ('123', TypeError),
    ([1j, 2.0, 3.0], TypeError),  # would lose the imaginary part
    (['a', 'b', 'c'], TypeError),
    ([1.0, 2.0], ValueError),
  ],
)
def test_const_product_weights(api, weights, error):
  expect(error, BY_NAME['ConstProduct'], 'weights', api, weights=weights)


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize(
  'name,argument,value,error',
  [
    ('LocallyConnected1D', 'padding', 3, TypeError),
    ('LocallyConnected1D', 'padding', 'same', ValueError),
    ('LocallyConnected1D', 'kernel_size', (2, 2), ValueError),
    ('LocallyConnected1D', 'kernel_size', 8, ValueError),  # > 7 steps
    ('PerPositionDense', 'activity_regularizer', 0.1, TypeError),
  ],
)
def test_other_arguments(api, name, argument, value, error):
  expect(error, BY_NAME[name], argument, api, **{argument: value})


# NumPy integers and bools are integers and bools: the same layer results.
NUMPY_CASES = [
  ('PerPositionDense', 'features', np.int64(4)),
  ('PerPositionDense', 'use_bias', np.bool_(False)),
  ('LocallyConnected1D', 'kernel_size', np.int32(2)),
  ('LocallyConnected1D', 'strides', np.int64(2)),
  ('AttentionDecoder', 'units', np.int16(4)),
  ('MultiIODense', 'features', np.uint8(3)),
  ('RepeatVector', 'n', np.int64(2)),
  ('GlobalMaxPooling1D', 'keepdims', np.bool_(True)),
  ('Reshape', 'target_shape', (np.int64(20),)),
  ('Permute', 'dims', (np.int64(2), np.int32(1))),
  ('Masking', 'mask_value', np.float32(0.5)),
  ('ActivityRegularization', 'l2', np.float64(0.1)),
  ('Dropout', 'rate', np.float32(0.25)),
]


@pytest.mark.parametrize('api', APIS)
@pytest.mark.parametrize('name,argument,value', NUMPY_CASES)
def test_numpy_numbers_work_like_python_numbers(api, name, argument, value):
  layer = BY_NAME[name]
  if not layer.takes(api, argument):
    pytest.skip(f'{api} {name} has no {argument}')
  python_value = (
    tuple(v.item() for v in value) if isinstance(value, tuple) else value.item()
  )
  expected = layer.run(api, **{argument: python_value})
  got = layer.run(api, **{argument: value})
  jax.tree.map(np.testing.assert_array_equal, got, expected)
