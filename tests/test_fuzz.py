"""Fuzz test: every public entry point with random argument types and values.

Each entry point (every linen and NNX layer, every pure function of
``fd.functional``, the losses, regularizers and constraints) is called with
arguments drawn from a mix of valid values and anything a user might pass
by mistake: ints, NumPy ints, floats, NaN, Inf, bools, NumPy bools,
strings, ``None``, lists, tuples, complex numbers, negative and zero sizes,
inputs of the wrong rank. The test's own rule for each argument (written
here, independently of the library's checks) says whether the value is
valid. Then the outcome must be:

- for valid arguments, a correct result: the right shape, finite, and equal
  to a NumPy reference where one is cheap;
- for an invalid argument, a ``TypeError`` or ``ValueError`` whose message
  names the layer or function. Returning a result is a silent change of
  meaning (a string taken as a flag, a 0-based permutation taken as
  another transpose) and fails the test.

Where the rule cannot tell (``None`` in the rule), either outcome passes
but an error must still be one of ours. Any other exception type fails.

Set ``FD_FUZZ_REPORT=path`` to write the number of cases run and the
distinct error messages seen to ``path`` (JSON).
"""

import atexit
import json
import math
import os
import re
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cases import main_cases
from flax import nnx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import flax_dense as fd
from flax_dense._src.models.graph import MERGES, Node

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
#: The main case of each layer in tests/cases.py.
MAIN = {case.name: case for case in main_cases()}
X = jnp.asarray(RNG.normal(size=(2, 5, 3)), jnp.float32)
EXAMPLES = 12

# ---------------------------------------------------------------------------
# Values: what a user may pass by mistake, and the rules for valid ones.

NAN, INF = float('nan'), float('inf')
ANYTHING = st.sampled_from(
  [
    -1,
    0,
    1,
    2,
    3,
    np.int64(2),
    np.int32(0),
    2.0,
    2.5,
    -0.5,
    0.5,
    1.0,
    NAN,
    INF,
    -INF,
    np.float32(0.5),
    True,
    False,
    np.bool_(True),
    '3',
    'relu',
    'False',
    'valid',
    'channels_first',
    '',
    None,
    [2],
    [1, 2],
    (2, 1),
    (0, 1),
    (-1,),
    (),
    1 + 2j,
    {'a': 1},
  ]
)


def is_int(value):
  return isinstance(value, int | np.integer) and not isinstance(
    value, bool | np.bool_
  )


def is_real(value):
  return isinstance(value, int | float | np.integer | np.floating) and not (
    isinstance(value, bool | np.bool_)
  )


def is_bool(value):
  return isinstance(value, bool | np.bool_)


class Kind:
  """An argument: valid values (drawn more often), and the rule."""

  def __init__(self, valid, rule):
    self.strategy = st.one_of(st.sampled_from(valid), ANYTHING)
    self.rule = rule


def positive_int(*valid):
  return Kind(
    list(valid) + [np.int64(valid[0])], lambda v: is_int(v) and v >= 1
  )


BOOL = Kind([True, False, np.bool_(False)], is_bool)
RATE = Kind(
  [0.0, 0.25, 0.5, np.float32(0.5), 0],
  lambda v: is_real(v) and 0 <= v < 1,
)
FACTOR = Kind(
  [0.0, 0.01, 1, np.float64(0.5)],
  lambda v: is_real(v) and math.isfinite(v) and v >= 0,
)
DATA_FORMAT = Kind(
  ['channels_last', 'channels_first'],
  lambda v: v in ('channels_last', 'channels_first') and isinstance(v, str),
)


def _wrong_shape_init(key, shape, dtype=jnp.float32):
  return jnp.zeros((*shape, 2), dtype)


INIT = Kind(
  [jax.nn.initializers.zeros, jax.nn.initializers.lecun_normal()],
  callable,
)
INIT.strategy = st.one_of(INIT.strategy, st.just(_wrong_shape_init))
INIT_RULE = INIT.rule
INIT.rule = lambda v: None if v is _wrong_shape_init else INIT_RULE(v)


def _valid_activation(value):
  if value is None or callable(value):
    return True
  if isinstance(value, str):
    return value.lower() in fd.KERAS_ACTIVATIONS
  return False


ACTIVATION = Kind(
  [None, 'relu', 'tanh', 'softmax', jnp.tanh], _valid_activation
)
REGULARIZER = Kind(
  [None, fd.l1_l2(l2=0.01)], lambda v: v is None or callable(v)
)


def axis_kind(valid, rank):
  """Axes of an array of ``rank``: an int or a sequence of distinct ints."""

  def rule(value):
    axes = [value] if is_int(value) else value
    if not isinstance(axes, list | tuple) or not all(map(is_int, axes)):
      return False
    return all(-rank <= a < rank for a in axes) and len(
      {a % rank for a in axes}
    ) == len(axes)

  return Kind(valid, rule)


def inputs_kind(*valid_shapes, rule=None):
  """Arrays of the valid shapes, or of a wrong rank or a zero size."""
  shapes = list(valid_shapes) + [(), (3,), (2, 5), (2, 5, 3, 1), (2, 0, 3)]
  arrays = [
    jnp.asarray(RNG.normal(size=shape), jnp.float32) for shape in shapes
  ]
  kind = Kind(arrays[: len(valid_shapes)], rule or (lambda v: None))
  kind.strategy = st.sampled_from(arrays)
  if rule is None:
    kind.rule = lambda v: tuple(v.shape) in valid_shapes or None
  return kind


# ---------------------------------------------------------------------------
# Entry points. Each has a name (what its messages must say), its arguments,
# how to call it, and optionally a rule over all the arguments together and
# a check of a result against a reference.


class Entry:
  def __init__(self, name, arguments, call, combined=None, check=None):
    self.name = name
    self.arguments = arguments
    self.call = call
    self.combined = combined
    self.check = check


ENTRIES = {}


def entry(key, name, arguments, combined=None, check=None):
  def register(call):
    ENTRIES[key] = Entry(name, arguments, call, combined, check)
    return call

  return register


def rngs():
  return nnx.Rngs(0, dropout=1)


def linen_run(module, *inputs, **kwargs):
  variables = module.init({'params': KEY, 'dropout': KEY}, *inputs, **kwargs)
  return module.apply(variables, *inputs, rngs={'dropout': KEY}, **kwargs)


def finite_with_shape(shape):
  def check(args, out):
    out = np.asarray(out)
    expected = shape(args) if callable(shape) else shape
    assert out.shape == tuple(expected), (out.shape, expected)
    assert np.all(np.isfinite(out))

  return check


# -- dense family -------------------------------------------------------------


def _dense_check(args, out, kernel_bias):
  x = np.asarray(args['inputs'], np.float64)
  out = np.asarray(out)
  assert out.shape == x.shape[:-1] + (int(args['features']),)
  assert np.all(np.isfinite(out))
  if args.get('activation') is None and kernel_bias is not None:
    kernel, bias = kernel_bias
    expected = np.einsum('...pd,pdk->...pk', x, kernel)
    if bias is not None:
      expected = expected + bias
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


DENSE_INPUTS = inputs_kind((2, 5, 3))
DENSE_INPUTS.rule = lambda v: v.ndim >= 2 and 0 not in v.shape[-2:]


@entry(
  'linen.PerPositionDense',
  'PerPositionDense',
  {
    'features': positive_int(2, 4),
    'use_bias': BOOL,
    'activation': ACTIVATION,
    'kernel_init': INIT,
    'bias_init': INIT,
    'activity_regularizer': REGULARIZER,
    'inputs': DENSE_INPUTS,
  },
)
def _(inputs, **kwargs):
  module = fd.PerPositionDense(**kwargs)
  variables = module.init(KEY, inputs)
  out = module.apply(variables, inputs)
  params = variables['params']
  kernel = np.asarray(params['kernel'], np.float64)
  bias = params.get('bias')
  _dense_check(
    {**kwargs, 'inputs': inputs},
    out,
    (kernel, None if bias is None else np.asarray(bias, np.float64)),
  )
  return out


@entry(
  'nnx.PerPositionDense',
  'PerPositionDense',
  {
    'positions': positive_int(5),
    'in_features': positive_int(3),
    'features': positive_int(2, 4),
    'use_bias': BOOL,
    'activation': ACTIVATION,
    'kernel_init': INIT,
    'bias_init': INIT,
    'activity_regularizer': REGULARIZER,
  },
)
def _(**kwargs):
  layer = fd.nnx.PerPositionDense(**kwargs, rngs=rngs())
  inputs = jnp.ones((2, int(kwargs['positions']), int(kwargs['in_features'])))
  out = layer(inputs)
  bias = None if layer.bias is None else np.asarray(layer.bias[...])
  _dense_check(
    {**kwargs, 'inputs': inputs}, out, (np.asarray(layer.kernel[...]), bias)
  )
  return out


def _lc_rule(args):
  steps = 5
  size, strides = args['kernel_size'], args['strides']
  if not (_single_positive_int(size) and _single_positive_int(strides)):
    return None  # the argument rules decide
  size = size[0] if isinstance(size, list | tuple) else size
  return size <= steps


def _single_positive_int(value):
  """Keras's sizes: a positive integer or a tuple or list of one."""
  if isinstance(value, list | tuple) and len(value) == 1:
    value = value[0]
  return is_int(value) and value >= 1


LC_SIZE = Kind([1, 2, (2,), [3]], _single_positive_int)
LC_STRIDES = Kind([1, 2, (1,)], _single_positive_int)
PADDING = Kind(
  ['valid', 'VALID'], lambda v: isinstance(v, str) and v.lower() == 'valid'
)


def _lc_shape(args):
  size, strides = args['kernel_size'], args['strides']
  size = size[0] if isinstance(size, list | tuple) else size
  strides = strides[0] if isinstance(strides, list | tuple) else strides
  length = (5 - size) // strides + 1
  if args['data_format'] == 'channels_first':
    return (2, int(args['filters']), length)
  return (2, length, int(args['filters']))


@entry(
  'linen.LocallyConnected1D',
  'LocallyConnected1D',
  {
    'filters': positive_int(2),
    'kernel_size': LC_SIZE,
    'strides': LC_STRIDES,
    'padding': PADDING,
    'data_format': DATA_FORMAT,
    'use_bias': BOOL,
    'activation': ACTIVATION,
    'kernel_init': INIT,
  },
  combined=_lc_rule,
  check=finite_with_shape(_lc_shape),
)
def _(**kwargs):
  inputs = X
  if kwargs['data_format'] == 'channels_first':
    inputs = jnp.ones((2, 3, 5))
  return linen_run(fd.LocallyConnected1D(**kwargs), inputs)


@entry(
  'nnx.LocallyConnected1D',
  'LocallyConnected1D',
  {
    'filters': positive_int(2),
    'kernel_size': LC_SIZE,
    'strides': LC_STRIDES,
    'padding': PADDING,
    'data_format': DATA_FORMAT,
    'use_bias': BOOL,
    'activation': ACTIVATION,
    'bias_init': INIT,
  },
  combined=_lc_rule,
  check=finite_with_shape(_lc_shape),
)
def _(**kwargs):
  layer = fd.nnx.LocallyConnected1D(5, 3, **kwargs, rngs=rngs())
  if kwargs['data_format'] == 'channels_first':
    return layer(jnp.ones((2, 3, 5)))
  return layer(X)


def _attention_shape(args):
  last = 5 if args['return_probabilities'] else args['output_dim']
  return (2, 5, int(last))


def _sizes_fit(args, *names):
  """False if a valid size among ``names`` differs from the inputs' 3."""
  return not any(
    is_int(args[name]) and args[name] >= 1 and args[name] != 3 for name in names
  )


ATTENTION_ARGS = {
  'units': positive_int(2),
  'output_dim': positive_int(3),
  'return_probabilities': BOOL,
  'kernel_init': INIT,
  'recurrent_init': INIT,
}


@entry(
  'linen.AttentionDecoder',
  'AttentionDecoder',
  ATTENTION_ARGS,
  check=finite_with_shape(_attention_shape),
)
def _(**kwargs):
  return linen_run(fd.AttentionDecoder(**kwargs), X)


@entry(
  'nnx.AttentionDecoder',
  'AttentionDecoder',
  {**ATTENTION_ARGS, 'in_features': positive_int(3)},
  combined=lambda a: _sizes_fit(a, 'in_features'),
  check=finite_with_shape(_attention_shape),
)
def _(**kwargs):
  return fd.nnx.AttentionDecoder(**kwargs, rngs=rngs())(X)


@entry(
  'linen.MultiIODense',
  'MultiIODense',
  {'features': positive_int(3), 'kernel_init': INIT},
  combined=lambda a: _sizes_fit(a, 'features'),
)
def _(**kwargs):
  out, mean = linen_run(fd.MultiIODense(**kwargs), X, X)
  assert out.shape == (2, 5, 3) and mean.shape == (2, 5)
  return out


@entry(
  'nnx.MultiIODense',
  'MultiIODense',
  {
    'in_features': positive_int(3),
    'features': positive_int(3),
    'kernel_init': INIT,
  },
  combined=lambda a: _sizes_fit(a, 'features', 'in_features'),
)
def _(**kwargs):
  out, mean = fd.nnx.MultiIODense(**kwargs, rngs=rngs())(X, X)
  assert out.shape == (2, 5, 3) and mean.shape == (2, 5)
  return out


WEIGHTS = Kind(
  [[1.0, 2.0, 3.0], np.array([1.0, -1.0, 0.5]), [[1, 2, 3]]],
  lambda v: None,
)


def _weights_rule(value):
  if value is None:
    return True  # valid only when trainable: see _const_product_rule
  try:
    array = np.asarray(value)
  except Exception:
    return False
  if array.dtype.kind not in 'iuf':
    return False
  return array.shape in ((3,), (1, 3)) or False


WEIGHTS.rule = _weights_rule


def _const_product_check(args, out):
  out = np.asarray(out)
  assert out.shape == (2, 5, 1)
  if args['weights'] is not None:
    weights = np.asarray(args['weights'], np.float64).reshape(3)
    expected = np.prod(np.asarray(X, np.float64) * weights, -1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _const_product_rule(args):
  if args['weights'] is None and is_bool(args['trainable']):
    return bool(args['trainable'])
  return True


@entry(
  'linen.ConstProduct',
  'ConstProduct',
  {'weights': WEIGHTS, 'trainable': BOOL},
  combined=_const_product_rule,
  check=_const_product_check,
)
def _(**kwargs):
  return linen_run(fd.ConstProduct(**kwargs), X)


@entry(
  'nnx.ConstProduct',
  'ConstProduct',
  {'weights': WEIGHTS, 'trainable': BOOL, 'in_features': positive_int(3)},
  combined=lambda a: _sizes_fit(a, 'in_features') and _const_product_rule(a),
  check=_const_product_check,
)
def _(**kwargs):
  return fd.nnx.ConstProduct(**kwargs, rngs=rngs())(X)


# -- core layers ---------------------------------------------------------------


def _reshape_rule(args):
  shape = args['target_shape']
  if not isinstance(shape, list | tuple) or not all(map(is_int, shape)):
    return False
  if any(s < -1 for s in shape) or list(shape).count(-1) > 1:
    return False
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    return known > 0 and 15 % known == 0
  return known == 15


TARGET_SHAPE = Kind([(15,), (3, 5), [5, -1], (-1, 1, 3)], lambda v: None)


def _reshape_check(args, out):
  expected = np.reshape(np.asarray(X), (2, *args['target_shape']))
  np.testing.assert_array_equal(out, expected)


def _permute_rule(args):
  dims = args['dims']
  if not isinstance(dims, list | tuple) or not all(map(is_int, dims)):
    return False
  return sorted(dims) == [1, 2]


DIMS = Kind([(2, 1), (1, 2), [2, 1], (np.int64(2), 1)], lambda v: None)


def _permute_check(args, out):
  axes = [0] + [int(d) for d in args['dims']]
  np.testing.assert_array_equal(out, np.transpose(np.asarray(X), axes))


def _flatten_check(args, out):
  x = np.asarray(X)
  if args['data_format'] == 'channels_first':
    x = np.moveaxis(x, 1, -1)
  np.testing.assert_array_equal(out, x.reshape(2, -1))


def _repeat_check(args, out):
  x = np.asarray(X[:, 0])
  expected = np.repeat(x[:, None], int(args['n']), axis=1)
  np.testing.assert_array_equal(out, expected)


MASK_VALUE = Kind([0.0, -1.0, NAN, np.float32(1.0), 0], lambda v: None)
MASK_VALUE.rule = lambda v: is_real(v) and (not math.isinf(v) or None)


def _masking_check(args, out):
  value = args['mask_value']
  x = np.asarray(_masking_inputs(value))
  masked = np.isnan(x).all(-1) if math.isnan(value) else (x == value).all(-1)
  assert masked[0, 1] and masked.sum() == 1
  np.testing.assert_array_equal(out, np.where(masked[..., None], 0.0, x))


def _mask_check(args, out):
  expected = np.ones((2, 5), bool)
  expected[0, 1] = False
  np.testing.assert_array_equal(out, expected)


def _masking_inputs(mask_value):
  """``X`` with step 1 of example 0 padded by ``mask_value``, if it can be.

  A value that is not a real number leaves ``X`` as it is: the layer is
  then expected to refuse the value itself.
  """
  x = np.asarray(X).copy()
  if isinstance(mask_value, int | float | np.integer | np.floating):
    x[0, 1] = mask_value
  return jnp.asarray(x)


def _l12_check(args, out):
  np.testing.assert_array_equal(out, X)


for api, module in [('linen', fd), ('nnx', fd.nnx)]:

  def make(name, api=api, module=module):
    cls = getattr(module, name)
    if api == 'linen':
      return lambda *inputs, **kw: linen_run(cls(**kw), *inputs)
    return lambda *inputs, **kw: cls(**kw)(*inputs)

  run = make('Reshape')
  entry(
    f'{api}.Reshape',
    'Reshape',
    {'target_shape': TARGET_SHAPE},
    combined=_reshape_rule,
    check=_reshape_check,
  )(lambda run=run, **kw: run(X, **kw))
  run = make('Permute')
  entry(
    f'{api}.Permute',
    'Permute',
    {'dims': DIMS},
    combined=_permute_rule,
    check=_permute_check,
  )(lambda run=run, **kw: run(X, **kw))
  run = make('Flatten')
  entry(
    f'{api}.Flatten',
    'Flatten',
    {'data_format': DATA_FORMAT},
    check=_flatten_check,
  )(lambda run=run, **kw: run(X, **kw))
  run = make('RepeatVector')
  entry(
    f'{api}.RepeatVector',
    'RepeatVector',
    {'n': positive_int(1, 3)},
    check=_repeat_check,
  )(lambda run=run, **kw: run(X[:, 0], **kw))
  run = make('Masking')
  entry(
    f'{api}.Masking',
    'Masking',
    {'mask_value': MASK_VALUE},
    check=_masking_check,
  )(lambda run=run, **kw: run(_masking_inputs(kw['mask_value']), **kw))
  run = make('Activation')
  entry(
    f'{api}.Activation',
    'Activation',
    {'activation': ACTIVATION},
    check=finite_with_shape(X.shape),
  )(lambda run=run, **kw: run(X, **kw))
  run = make('Lambda')
  entry(
    f'{api}.Lambda',
    'Lambda',
    {'function': Kind([jnp.tanh, jnp.abs], callable)},
    check=finite_with_shape(X.shape),
  )(lambda run=run, **kw: run(X, **kw))
  run = make('ActivityRegularization')
  entry(
    f'{api}.ActivityRegularization',
    'ActivityRegularization',
    {'l1': FACTOR, 'l2': FACTOR},
    check=_l12_check,
  )(lambda run=run, **kw: run(X, **kw))
  for pooling, reduce in [
    ('GlobalAveragePooling1D', np.mean),
    ('GlobalMaxPooling1D', np.max),
  ]:

    def pooling_check(args, out, reduce=reduce):
      expected = reduce(np.asarray(X), axis=1, keepdims=bool(args['keepdims']))
      if args['data_format'] == 'channels_first' and args['keepdims']:
        expected = np.swapaxes(expected, 1, 2)
      np.testing.assert_allclose(out, expected, rtol=1e-6)

    run = make(pooling)

    def pool(run=run, **kw):
      x = X if kw['data_format'] == 'channels_last' else jnp.swapaxes(X, 1, 2)
      return run(x, **kw)

    entry(
      f'{api}.{pooling}',
      pooling,
      {'data_format': DATA_FORMAT, 'keepdims': BOOL},
      check=pooling_check,
    )(pool)


# -- dropout -----------------------------------------------------------------


def _dropout_check(args, out):
  out = np.asarray(out)
  x = np.asarray(args['inputs'] if 'inputs' in args else X)
  rate = float(args['rate'])
  if args.get('deterministic') or rate == 0:
    np.testing.assert_array_equal(out, x)
    return
  kept = out != 0
  np.testing.assert_allclose(out[kept], x[kept] / (1 - rate), rtol=1e-6)


# -- embedding and recurrent layers ------------------------------------------

# The ids of the Embedding case; input_dim is valid above the largest id,
# below it the ids are out of range.
IDS = MAIN['Embedding'].inputs()[0]
INPUT_DIM = Kind(
  [MAIN['Embedding'].vocabulary, 16, np.int64(MAIN['Embedding'].vocabulary)],
  lambda v: is_int(v) and v > int(IDS.max()),
)
RECURRENT_INPUTS = inputs_kind((2, 5, 3))
MERGE_MODE = Kind(
  ['concat', 'sum', 'mul', 'ave', None],
  lambda v: v is None or (isinstance(v, str) and v in fd_merge_modes()),
)


def fd_merge_modes():
  return ('concat', 'sum', 'mul', 'ave')


def _embedding_check(args, out):
  out = np.asarray(out)
  assert out.shape == (*IDS.shape, int(args['output_dim']))
  assert np.all(np.isfinite(out))


def _recurrent_check(args, out, width=1):
  out = np.asarray(out)
  x = np.asarray(args['inputs'])
  units = int(args['units']) * width
  steps = x.shape[:-1] if args.get('return_sequences') else x.shape[:-2]
  assert out.shape == (*steps, units), (out.shape, x.shape)
  assert np.all(np.isfinite(out))


RECURRENT_ARGUMENTS = {
  'units': positive_int(1, 4),
  'return_sequences': BOOL,
  'go_backwards': BOOL,
  'dropout': RATE,
  'activation': ACTIVATION,
  'inputs': RECURRENT_INPUTS,
}


@entry(
  'linen.Embedding',
  'Embedding',
  {'input_dim': INPUT_DIM, 'output_dim': positive_int(1, 3), 'mask_zero': BOOL},
  check=_embedding_check,
)
def _(**kwargs):
  return linen_run(fd.Embedding(**kwargs), IDS)


@entry(
  'nnx.Embedding',
  'Embedding',
  {'input_dim': INPUT_DIM, 'output_dim': positive_int(1, 3), 'mask_zero': BOOL},
  check=_embedding_check,
)
def _(input_dim, output_dim, **kwargs):
  return fd.nnx.Embedding(input_dim, output_dim, **kwargs, rngs=rngs())(IDS)


for _name in ('SimpleRNN', 'LSTM', 'GRU'):
  entry(
    f'linen.{_name}',
    _name,
    RECURRENT_ARGUMENTS,
    check=_recurrent_check,
  )(
    lambda inputs, name=_name, **kw: linen_run(
      getattr(fd, name)(**kw, deterministic=True), inputs
    )
  )
  entry(
    f'nnx.{_name}',
    _name,
    RECURRENT_ARGUMENTS,
    check=_recurrent_check,
  )(
    lambda inputs, units, name=_name, **kw: getattr(fd.nnx, name)(
      3, units, **kw, deterministic=True, rngs=rngs()
    )(inputs)
  )


def _bidirectional_check(args, out):
  args = {**args, 'units': 2, 'inputs': X}
  width = 2 if args['merge_mode'] == 'concat' else 1
  if args['merge_mode'] is None:
    for half in out:
      _recurrent_check({**args, 'return_sequences': True}, half)
  else:
    _recurrent_check({**args, 'return_sequences': True}, out, width)


# The wrapped GRU(2) and the inputs are fixed: the GRU's arguments and
# inputs are fuzzed above (its messages name the GRU).
BIDIRECTIONAL_ARGUMENTS = {'merge_mode': MERGE_MODE}


@entry(
  'linen.Bidirectional',
  'Bidirectional',
  BIDIRECTIONAL_ARGUMENTS,
  check=_bidirectional_check,
)
def _(merge_mode):
  layer = fd.Bidirectional(
    fd.GRU(2, return_sequences=True), merge_mode=merge_mode
  )
  return linen_run(layer, X)


@entry(
  'nnx.Bidirectional',
  'Bidirectional',
  BIDIRECTIONAL_ARGUMENTS,
  check=_bidirectional_check,
)
def _(merge_mode):
  layer = fd.nnx.Bidirectional(
    fd.nnx.GRU(3, 2, return_sequences=True, rngs=rngs()),
    merge_mode=merge_mode,
    rngs=rngs(),
  )
  return layer(X)


# A Flatten on every step: any input of rank 3 or more, empty ones too.
TIME_DISTRIBUTED_ARGUMENTS = {
  'inputs': inputs_kind((2, 3, 5, 4), rule=lambda v: v.ndim >= 3),
  'deterministic': Kind([None, True, False], lambda v: v is None or is_bool(v)),
}


def _time_distributed_check(args, out):
  x = np.asarray(args['inputs'])
  np.testing.assert_array_equal(
    out, x.reshape(*x.shape[:2], math.prod(x.shape[2:]))
  )


@entry(
  'linen.TimeDistributed',
  'TimeDistributed',
  TIME_DISTRIBUTED_ARGUMENTS,
  check=_time_distributed_check,
)
def _(inputs, deterministic):
  layer = fd.TimeDistributed(fd.Flatten())
  return layer.apply({}, inputs, deterministic=deterministic)


@entry(
  'nnx.TimeDistributed',
  'TimeDistributed',
  TIME_DISTRIBUTED_ARGUMENTS,
  check=_time_distributed_check,
)
def _(inputs, deterministic):
  return fd.nnx.TimeDistributed(fd.nnx.Flatten())(inputs, deterministic)


# The inputs of the SpatialDropout cases.
SPATIAL = {n: MAIN[f'SpatialDropout{n}D'].inputs()[0] for n in (1, 2, 3)}


@entry(
  'linen.Dropout',
  'Dropout',
  {'rate': RATE, 'deterministic': BOOL},
  check=_dropout_check,
)
def _(**kwargs):
  return linen_run(fd.Dropout(**kwargs), X)


@entry(
  'nnx.Dropout',
  'Dropout',
  {'rate': RATE, 'deterministic': BOOL},
  check=_dropout_check,
)
def _(**kwargs):
  return fd.nnx.Dropout(**kwargs, rngs=rngs())(X)


for n in (1, 2, 3):

  def spatial_check(args, out, n=n):
    _dropout_check({**args, 'inputs': SPATIAL[n]}, out)

  entry(
    f'linen.SpatialDropout{n}D',
    f'SpatialDropout{n}D',
    {'rate': RATE, 'deterministic': BOOL, 'data_format': DATA_FORMAT},
    check=spatial_check,
  )(
    lambda n=n, **kw: linen_run(
      getattr(fd, f'SpatialDropout{n}D')(**kw), SPATIAL[n]
    )
  )
  entry(
    f'nnx.SpatialDropout{n}D',
    f'SpatialDropout{n}D',
    {'rate': RATE, 'deterministic': BOOL, 'data_format': DATA_FORMAT},
    check=spatial_check,
  )(
    lambda n=n, **kw: getattr(fd.nnx, f'SpatialDropout{n}D')(**kw, rngs=rngs())(
      SPATIAL[n]
    )
  )


# -- the pure functions of fd.functional ----------------------------------------


@entry(
  'functional.dropout',
  'dropout',
  {
    'rate': RATE,
    'noise_shape': Kind(
      [None, (5, 1), (1, 3), [5, 3]],
      lambda v: (
        v is None
        or (
          isinstance(v, list | tuple)
          and len(v) == 2
          and all(map(is_int, v))
          and v[0] in (1, 5)
          and v[1] in (1, 3)
        )
      ),
    ),
  },
  check=lambda args, out: _dropout_check({**args, 'inputs': X[0]}, out),
)
def _(rate, noise_shape):
  return fd.functional.dropout(X[0], rate, KEY, noise_shape)


@entry(
  'functional.reshape',
  'reshape',
  {'target_shape': TARGET_SHAPE},
  combined=_reshape_rule,
  check=lambda args, out: np.testing.assert_array_equal(
    out, np.reshape(np.asarray(X[0]), args['target_shape'])
  ),
)
def _(target_shape):
  return fd.functional.reshape(X[0], target_shape)


@entry(
  'functional.permute',
  'permute',
  {'dims': DIMS},
  combined=_permute_rule,
  check=lambda args, out: np.testing.assert_array_equal(
    out, np.transpose(np.asarray(X[0]), [int(d) - 1 for d in args['dims']])
  ),
)
def _(dims):
  return fd.functional.permute(X[0], dims)


@entry(
  'functional.flatten',
  'flatten',
  {'data_format': DATA_FORMAT},
  check=finite_with_shape((15,)),
)
def _(data_format):
  return fd.functional.flatten(X[0], data_format)


@entry(
  'functional.repeat_vector',
  'repeat_vector',
  {'n': positive_int(1, 3)},
  check=finite_with_shape(lambda a: (int(a['n']), 3)),
)
def _(n):
  return fd.functional.repeat_vector(X[0, 0], n)


@entry(
  'functional.masking',
  'masking',
  {'mask_value': MASK_VALUE},
  check=_masking_check,
)
def _(mask_value):
  return fd.functional.masking(_masking_inputs(mask_value), mask_value)


@entry(
  'compute_mask',
  'compute_mask',
  {'mask_value': MASK_VALUE},
  check=_mask_check,
)
def _(mask_value):
  return fd.compute_mask(_masking_inputs(mask_value), mask_value)


MASK = np.arange(5)[None, :] < np.array([3, 1])[:, None]


def _masked_axis_rule(value):
  """Axes of the (B, T, F) inputs among the (B, T) mask's, distinct."""
  axes = [value] if is_int(value) else value
  if not isinstance(axes, list | tuple) or not all(map(is_int, axes)):
    return False
  if not axes:
    return None
  normalized = [a % 3 for a in axes if -3 <= a < 3]
  return (
    len(normalized) == len(axes)
    and all(a < 2 for a in normalized)
    and len(set(normalized)) == len(axes)
  )


MASKED_AXIS = Kind([1, -2, (1,), [0, 1]], _masked_axis_rule)


for function in ('masked_mean', 'masked_max'):
  reduce = {'masked_mean': np.mean, 'masked_max': np.max}[function]

  def masked_check(args, out, reduce=reduce):
    axis = args['axis']
    axis = tuple(axis) if isinstance(axis, list) else axis
    x = np.where(MASK[..., None], np.asarray(X), np.nan)
    with warnings.catch_warnings():  # fully masked: NaN here, 0 in fd
      warnings.simplefilter('ignore', RuntimeWarning)
      expected = (np.nanmean if reduce is np.mean else np.nanmax)(
        x, axis=axis, keepdims=bool(args['keepdims'])
      )
    np.testing.assert_allclose(out, np.nan_to_num(expected, nan=0.0), rtol=1e-5)

  entry(
    f'functional.{function}',
    function,
    {'axis': MASKED_AXIS, 'keepdims': BOOL},
    check=masked_check,
  )(
    lambda function=function, **kw: getattr(fd.functional, function)(
      X, MASK, **kw
    )
  )


@entry(
  'functional.per_position_dense',
  'per_position_dense',
  {'inputs': inputs_kind((5, 3), rule=lambda v: v.shape == (5, 3))},
  check=finite_with_shape((5, 4)),
)
def _(inputs):
  kernel = jnp.ones((5, 3, 4))
  return fd.functional.per_position_dense(inputs, kernel, jnp.zeros((5, 4)))


@entry(
  'functional.const_product',
  'const_product',
  {'inputs': inputs_kind((3,), rule=lambda v: v.shape == (3,))},
  check=finite_with_shape((1,)),
)
def _(inputs):
  return fd.functional.const_product(inputs, jnp.ones((3,)))


@entry(
  'functional.multi_io_dense',
  'multi_io_dense',
  {'inputs': inputs_kind((3,), rule=lambda v: v.shape == (3,))},
)
def _(inputs):
  out, mean = fd.functional.multi_io_dense(inputs, X[0, 0], jnp.ones((3, 3)))
  assert out.shape == (3,) and mean.shape == ()
  return out


@entry(
  'functional.attention_decoder_shapes',
  'attention_decoder_shapes',
  {
    'in_features': positive_int(3),
    'units': positive_int(2),
    'output_dim': positive_int(4),
  },
)
def _(in_features, units, output_dim):
  shapes = fd.functional.attention_decoder_shapes(
    in_features, units, output_dim
  )
  assert shapes['V_a'] == (units,)
  return jnp.zeros(())


@entry(
  'functional.attention_decoder',
  'attention_decoder',
  {'return_probabilities': BOOL},
  check=finite_with_shape(lambda a: (5, 5 if a['return_probabilities'] else 4)),
)
def _(return_probabilities):
  shapes = fd.functional.attention_decoder_shapes(3, 2, 4)
  params = {
    name: jnp.full(shape, 0.1, jnp.float32) for name, shape in shapes.items()
  }
  return fd.functional.attention_decoder(
    X[0], params, None, return_probabilities
  )


@entry(
  'functional.recurrent_shapes',
  'recurrent_shapes',
  {
    'in_features': positive_int(3),
    'units': positive_int(2),
    'use_bias': BOOL,
    'reset_after': BOOL,
  },
)
def _(in_features, units, use_bias, reset_after):
  shapes = fd.functional.recurrent_shapes(
    'gru', in_features, units, use_bias, reset_after
  )
  assert shapes['kernel'] == (in_features, 3 * units)
  return jnp.zeros(())


@entry(
  'functional.recurrent',
  'recurrent',
  {'go_backwards': BOOL, 'zero_output_for_mask': BOOL},
  check=finite_with_shape(lambda a: (5, 2)),
)
def _(go_backwards, zero_output_for_mask):
  shapes = fd.functional.recurrent_shapes('lstm', 3, 2)
  weights = {name: jnp.full(shape, 0.1) for name, shape in shapes.items()}
  outputs, _ = fd.functional.recurrent(
    X[0],
    weights['kernel'],
    weights['recurrent_kernel'],
    weights['bias'],
    jnp.array([True, False, True, True, False]),
    kind='lstm',
    go_backwards=go_backwards,
    zero_output_for_mask=zero_output_for_mask,
  )
  return outputs


@entry(
  'functional.embedding',
  'embedding',
  {
    'ids': Kind(
      [[[0, 1, 4], [2, 3, 0]], np.array([[1, 2, 3], [0, 0, 1]])],
      lambda v: None,
    )
  },
  check=finite_with_shape(lambda a: (*np.shape(a['ids']), 4)),
)
def _(ids):
  return fd.functional.embedding(ids, jnp.ones((5, 4)))


@entry(
  'functional.embedding_mask',
  'embedding_mask',
  {'ids': Kind([[[0, 1], [2, 0]], np.array([[3, 0]])], lambda v: None)},
)
def _(ids):
  return jnp.asarray(fd.functional.embedding_mask(ids), jnp.float32)


def _windows(strides):
  """Windows of kernel_size 2 over 5 steps (4 for an invalid stride)."""
  return (5 - 2) // strides + 1 if is_int(strides) and strides >= 1 else 4


@entry(
  'functional.locally_connected_1d',
  'locally_connected_1d',
  {
    'strides': Kind([1, 2], lambda v: is_int(v) and v >= 1 or None),
    'data_format': DATA_FORMAT,
  },
  check=finite_with_shape(
    lambda a: (
      (2, _windows(a['strides']))
      if a['data_format'] == 'channels_first'
      else (_windows(a['strides']), 2)
    )
  ),
)
def _(strides, data_format):
  kernel = jnp.ones((_windows(strides), 2 * 3, 2))
  inputs = X[0] if data_format == 'channels_last' else X[0].T
  return fd.functional.locally_connected_1d(
    inputs, kernel, None, strides, data_format
  )


@entry(
  'functional.resolve_activation',
  'resolve_activation',
  {'activation': ACTIVATION},
  check=finite_with_shape(X.shape),
)
def _(activation):
  return fd.functional.resolve_activation(activation, 'resolve_activation')(X)


@entry(
  'keras_activation',
  'keras_activation',
  {
    'name': Kind(
      ['relu', 'elu', 'selu', 'softmax'],
      lambda v: isinstance(v, str) and v.lower() in fd.KERAS_ACTIVATIONS,
    )
  },
  check=finite_with_shape(X.shape),
)
def _(name):
  return fd.keras_activation(name)(X)


# -- losses -------------------------------------------------------------------

LABELS = Kind(
  [
    np.array([[0, 1, 2, 0, 0], [1, 2, 0, 0, 0]]),
    np.array([[2, 2, 1, -1, 7], [0, 9, -3, -1, 5]]),  # junk at masked steps
  ],
  lambda v: None,
)
LABELS.strategy = st.one_of(
  LABELS.strategy,
  st.sampled_from(
    [
      np.array([[0, -1, 2, 0, 0], [1, 2, 0, 0, 0]]),  # -1 at a kept step
      np.array([[0, 3, 2, 0, 0], [1, 2, 0, 0, 0]]),  # 3 >= classes
      np.array([[0.0, 1, 2, 0, 0], [1, 2, 0, 0, 0]]),  # floats
      np.zeros((2, 4), int),  # wrong shape
    ]
  ),
)


def _labels_rule(labels):
  labels = np.asarray(labels)
  if labels.dtype.kind not in 'iu' or labels.shape != (2, 5):
    return False
  kept = labels[MASK]
  return bool(np.all((kept >= 0) & (kept < 3)))


LABELS.rule = _labels_rule
PREDICTIONS = jax.nn.softmax(
  jnp.asarray(RNG.normal(size=(2, 5, 3)), jnp.float32)
)


def _loss_check(args, out):
  labels = np.asarray(args['labels'])[MASK]
  p = np.asarray(PREDICTIONS, np.float64)[MASK]
  if args.get('from_logits'):
    p = np.exp(p) / np.exp(p).sum(-1, keepdims=True)
  expected = -np.log(np.clip(p[np.arange(len(labels)), labels], 1e-7, 1)).mean()
  np.testing.assert_allclose(out, expected, rtol=1e-5)


@entry(
  'masked_sparse_categorical_crossentropy',
  'masked_sparse_categorical_crossentropy',
  {'labels': LABELS, 'from_logits': BOOL},
  check=_loss_check,
)
def _(labels, from_logits):
  return fd.masked_sparse_categorical_crossentropy(
    labels, PREDICTIONS, MASK, from_logits=from_logits
  )


ACCURACY_LABELS = Kind([], lambda v: None)
ACCURACY_LABELS.strategy = LABELS.strategy
# Out-of-range labels at kept steps may be refused or count as misses.
ACCURACY_LABELS.rule = lambda v: (
  _labels_rule(v) or None
  if np.asarray(v).dtype.kind in 'iu' and np.asarray(v).shape == (2, 5)
  else False
)


@entry(
  'masked_sparse_categorical_accuracy',
  'masked_sparse_categorical_accuracy',
  {'labels': ACCURACY_LABELS},
  check=lambda args, out: np.testing.assert_allclose(
    out,
    np.mean(
      np.argmax(np.asarray(PREDICTIONS), -1)[MASK]
      == np.asarray(args['labels'])[MASK]
    ),
    rtol=1e-6,
  ),
)
def _(labels):
  return fd.masked_sparse_categorical_accuracy(labels, PREDICTIONS, MASK)


# -- regularizers and constraints -----------------------------------------------

W = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)


@entry(
  'l1_l2',
  'l1_l2',
  {'l1': FACTOR, 'l2': FACTOR},
  check=lambda args, out: np.testing.assert_allclose(
    out,
    float(args['l1']) * np.abs(np.asarray(W)).sum()
    + float(args['l2']) * np.square(np.asarray(W)).sum(),
    rtol=1e-5,
  ),
)
def _(l1, l2):
  return fd.l1_l2(l1, l2)(W)


NAMES = Kind(
  ['kernel', ('kernel', 'bias'), ['bias']],
  lambda v: (
    (isinstance(v, str) and v in ('kernel', 'bias'))
    or (
      isinstance(v, list | tuple)
      and len(v) > 0
      and all(isinstance(n, str) and n in ('kernel', 'bias') for n in v)
    )
  ),
)
PARAMS = {'dense': {'kernel': W, 'bias': W[0]}}


@entry(
  'weight_penalty',
  'weight_penalty',
  {'names': NAMES, 'regularizer': REGULARIZER},
  combined=lambda a: a['regularizer'] is not None or False,
  check=finite_with_shape(()),
)
def _(names, regularizer):
  return fd.weight_penalty(PARAMS, regularizer, names)


def _norm_rule(args):
  low, high = args.get('min_value', 0.0), args.get('max_value', 1.0)
  if not (is_real(low) and is_real(high)):
    return None
  return low <= high or False


NORM = Kind(
  [0.0, 0.5, 1.0, 2, np.float32(1.5)],
  lambda v: is_real(v) and math.isfinite(v) and v >= 0,
)
AXIS = axis_kind([0, 1, -1, (0, 1)], 2)


def _norms(w, axis):
  return np.sqrt(np.sum(np.square(np.asarray(w, np.float64)), axis=axis))


@entry(
  'max_norm',
  'max_norm',
  {'max_value': NORM, 'axis': AXIS},
  check=lambda args, out: np.testing.assert_array_less(
    _norms(out, args['axis']), float(args['max_value']) + 1e-5
  ),
)
def _(max_value, axis):
  return fd.max_norm(max_value, axis)(W)


@entry(
  'min_max_norm',
  'min_max_norm',
  {
    'min_value': NORM,
    'max_value': NORM,
    'rate': Kind([0.0, 0.5, 1.0, 1], lambda v: is_real(v) and 0 <= v <= 1),
    'axis': AXIS,
  },
  combined=_norm_rule,
  check=finite_with_shape(W.shape),
)
def _(**kwargs):
  return fd.min_max_norm(**kwargs)(W)


@entry(
  'unit_norm',
  'unit_norm',
  {'axis': AXIS},
  check=lambda args, out: np.testing.assert_allclose(
    _norms(out, args['axis']), 1.0, rtol=1e-5
  ),
)
def _(axis):
  return fd.unit_norm(axis)(W)


@entry(
  'constrain',
  'constrain',
  {
    'constraint': Kind([fd.non_neg(), fd.max_norm(1.0)], callable),
    'names': NAMES,
  },
  check=finite_with_shape(W.shape),
)
def _(constraint, names):
  transform = fd.constrain(constraint, names)
  state = transform.init(PARAMS)
  updates, _ = transform.update(
    jax.tree.map(jnp.ones_like, PARAMS), state, PARAMS
  )
  params = optax.apply_updates(PARAMS, updates)
  return params['dense']['kernel']


@entry('non_neg', 'non_neg', {}, check=lambda a, out: None)
def _():
  out = fd.non_neg()(W)
  np.testing.assert_array_equal(out, np.maximum(np.asarray(W), 0))
  return out


# -- the Keras-style container ---------------------------------------------------

FLOWS = ('compute', 'propagate', 'consume', 'drop')


def _mask_flow_rule(value):
  if value is None:
    return True
  if not isinstance(value, list | tuple) or len(value) != 3:
    return False
  if not all(isinstance(v, str) and v in FLOWS for v in value):
    return False
  if 'compute' in value[1:]:
    return False  # only the Masking layer computes a mask
  valid = [
    ('compute', 'propagate', 'consume'),
    ('compute', 'propagate', 'drop'),
  ]
  return tuple(value) in valid or None


MASK_FLOW = Kind(
  [None, ('compute', 'propagate', 'consume'), ['compute', 'propagate', 'drop']],
  _mask_flow_rule,
)
NAMES_OF_LAYERS = Kind(
  [None, ('masking', 'dense', 'pooling'), ['a', 'b', 'c']],
  lambda v: (
    v is None
    or (
      isinstance(v, list | tuple)
      and len(v) == 3
      and all(isinstance(n, str) for n in v)
      and (len(set(v)) == 3 or None)
    )
  ),
)


def _sequential_check(args, out):
  out = np.asarray(out)  # (batch, features) after the pooling
  assert out.shape == (2, 4) and np.all(np.isfinite(out))


@entry(
  'linen.KerasSequential',
  'KerasSequential',
  {'mask_flow': MASK_FLOW, 'names': NAMES_OF_LAYERS},
  check=_sequential_check,
)
def _(**kwargs):
  layers = [fd.Masking(), fd.PerPositionDense(4), fd.GlobalAveragePooling1D()]
  return linen_run(fd.KerasSequential(layers, **kwargs), X)


@entry(
  'nnx.KerasSequential',
  'KerasSequential',
  {'mask_flow': MASK_FLOW, 'names': NAMES_OF_LAYERS},
  check=_sequential_check,
)
def _(**kwargs):
  layers = [
    fd.nnx.Masking(),
    fd.nnx.PerPositionDense(5, 3, 4, rngs=rngs()),
    fd.nnx.GlobalAveragePooling1D(),
  ]
  return fd.nnx.KerasSequential(layers, **kwargs)(X)


# The graph y = dense(a) + dense(b): tensors a (0), b (1), dense(a) (2),
# dense(b) (3) and the sum (4); the model is called with a and b.
GRAPH_A, GRAPH_B = (
  jnp.asarray(RNG.normal(size=(2, 3)), jnp.float32) for _ in range(2)
)
ADD_NODES = (
  Node((0,), steps=(0,)),
  Node((1,), steps=(0,)),
  Node((2, 3), merge='Add'),
)


def _is_node_list(value):
  return isinstance(value, list | tuple) and all(
    isinstance(node, Node) for node in value
  )


GRAPH_NODES = Kind([ADD_NODES, list(ADD_NODES)], _is_node_list)
GRAPH_NODES.strategy = st.one_of(
  GRAPH_NODES.strategy,
  st.sampled_from(
    [
      ADD_NODES[:2],  # no sum: tensors 0 to 3
      (Node((0, 2), merge='Add'),),  # takes a tensor made after it
      (Node((0,), steps=(1,)),),  # calls a layer that does not exist
      (Node((0,)),),  # neither a merge nor a layer's call
      (Node((0, 1), steps=(0,), merge='Add'),),  # both
      ((0,), (1,)),  # not Nodes
    ]
  ),
)
GRAPH_NAMES = Kind(
  [('dense',), ['dense']],
  lambda v: (
    isinstance(v, list | tuple) and len(v) == 1 and isinstance(v[0], str)
  ),
)
GRAPH_FLOW = Kind(
  [('propagate',), ['drop'], ('consume',)],
  lambda v: (
    isinstance(v, list | tuple)
    and len(v) == 1
    and isinstance(v[0], str)
    # A dense layer cannot compute a mask.
    and v[0] in ('propagate', 'consume', 'use', 'drop')
  ),
)
GRAPH_OUTPUTS = Kind(
  [(4,), [4], (2,), (4, 2), [np.int64(3)], (0, 4)],
  lambda v: isinstance(v, list | tuple) and all(map(is_int, v)),
)


def _graph_rule(args):
  """Whether the nodes, inputs and outputs make a graph of 2 inputs."""
  if args['inputs'] != 2:
    return False  # the model is called with two
  tensors = 2
  for node in args['nodes']:
    call = bool(node.steps) and not node.merge and node.outputs == 1
    merge = node.merge in MERGES and not node.steps
    if not node.inputs or not (call or merge):
      return False
    if not all(0 <= t < tensors for t in node.inputs):
      return False
    if not all(0 <= step < 1 for step in node.steps):
      return False
    tensors += 1
  outputs = args['outputs']
  if not outputs or not all(0 <= t < tensors for t in outputs):
    return False
  return not (args['single_output'] and len(outputs) != 1)


def _graph_check(args, out):
  """Each output is the input it names or a (2, 4) tensor; with the sum
  and dense(a) and dense(b) both named, the first is the others' sum."""
  outputs = args['outputs']
  got = [out] if args['single_output'] else list(out)
  assert len(got) == len(outputs)
  made = {}
  for tensor, value in zip(outputs, got, strict=True):
    value = np.asarray(value)
    if tensor < 2:
      np.testing.assert_array_equal(value, (GRAPH_A, GRAPH_B)[tensor])
    else:
      assert value.shape == (2, 4) and np.all(np.isfinite(value))
    made[int(tensor)] = value
  if {2, 3, 4} <= set(made):
    np.testing.assert_allclose(made[4], made[2] + made[3], rtol=1e-5)


GRAPH_ARGUMENTS = {
  'names': GRAPH_NAMES,
  'mask_flow': GRAPH_FLOW,
  'nodes': GRAPH_NODES,
  'inputs': positive_int(2),
  'outputs': GRAPH_OUTPUTS,
  'single_output': BOOL,
}


@entry(
  'linen.KerasFunctional',
  'KerasFunctional',
  GRAPH_ARGUMENTS,
  combined=_graph_rule,
  check=_graph_check,
)
def _(**kwargs):
  module = fd.KerasFunctional(layers=(nn.Dense(4),), **kwargs)
  return linen_run(module, GRAPH_A, GRAPH_B)


@entry(
  'nnx.KerasFunctional',
  'KerasFunctional',
  GRAPH_ARGUMENTS,
  combined=_graph_rule,
  check=_graph_check,
)
def _(**kwargs):
  layers = [nnx.Linear(3, 4, rngs=rngs())]
  return fd.nnx.KerasFunctional(layers, **kwargs)(GRAPH_A, GRAPH_B)


# ---------------------------------------------------------------------------
# The test.

SEEN = {'cases': 0, 'results': 0, 'errors': 0, 'messages': set()}


def _report():
  path = os.environ.get('FD_FUZZ_REPORT')
  if path and SEEN['cases']:
    with open(path, 'w') as file:
      json.dump(
        {
          'cases': SEEN['cases'],
          'results': SEEN['results'],
          'errors': SEEN['errors'],
          'distinct_messages': len(SEEN['messages']),
          'messages': sorted(SEEN['messages']),
        },
        file,
        indent=1,
      )


atexit.register(_report)


def _verdict(value):
  """A rule's answer as True, False or None (a NumPy bool is a bool)."""
  return None if value is None else bool(value)


def _validity(spec, args):
  """True, False or None (unknown) for the arguments together."""
  verdicts = [
    _verdict(spec.arguments[name].rule(value)) for name, value in args.items()
  ]
  if any(v is False for v in verdicts):
    return False
  combined = _verdict(spec.combined(args) if spec.combined else True)
  if combined is False:
    return False
  if any(v is None for v in verdicts) or combined is None:
    return None
  return True


def _shown(value):
  if isinstance(value, jax.Array | np.ndarray):
    return f'array{tuple(value.shape)}'
  return repr(value)


@pytest.mark.parametrize('key', sorted(ENTRIES))
@settings(
  max_examples=EXAMPLES,
  deadline=None,
  derandomize=True,
  suppress_health_check=list(HealthCheck),
  database=None,
  # No shrinking: a failure reports the call as drawn, in bounded time.
  phases=[Phase.generate],
)
@given(data=st.data())
def test_every_outcome_is_a_correct_result_or_our_error(key, data):
  spec = ENTRIES[key]
  args = {
    name: data.draw(kind.strategy, label=name)
    for name, kind in spec.arguments.items()
  }
  valid = _validity(spec, args)
  call = ', '.join(f'{n}={_shown(v)}' for n, v in args.items())
  SEEN['cases'] += 1
  try:
    with jax.numpy_rank_promotion('allow'):
      out = spec.call(**args)
      out = jax.block_until_ready(out)
  except (TypeError, ValueError) as error:
    message = str(error).split('\n')[0]
    SEEN['errors'] += 1
    SEEN['messages'].add(f'{type(error).__name__}: {message}')
    assert re.search(rf'\b{re.escape(spec.name)}\b', message), (
      f'{key}({call}): the message does not name {spec.name}: {message}'
    )
    assert valid is not True, (
      f'{key}({call}) is valid but raised {type(error).__name__}: {message}'
    )
    return
  SEEN['results'] += 1
  assert valid is not False, (
    f'{key}({call}) is invalid but returned a result (a silent change of'
    ' meaning)'
  )
  if spec.check is not None:
    spec.check(args, out)
  else:
    assert np.all(np.isfinite(np.asarray(out)))


#: Public names that are not entry points with arguments to fuzz: values,
#: types, namespaces, and the Keras import and export (tested with Keras
#: files and models in their own tests), summaries and the loss collector.
NOT_FUZZED = {
  'ActivationFunction',
  'CONSTANTS',
  'Constant',
  'Constraint',
  'KERAS_ACTIVATIONS',
  'LINEN_TO_NNX',
  'LOSSES',
  'LayerSummary',
  'Loss',
  'Regularizer',
  'Summary',
  'checkpoint',
  'collect_losses',
  'from_keras',
  'from_linen',
  'functional',
  'keras_custom_objects',
  'keras_weights_to_params',
  'load_keras_weights',
  'nnx',
  'register_keras_layer',
  'sharding',
  'summary',
  'to_keras',
  'to_keras_model',
  'to_linen',
}


#: fd.masked_mean is fd.functional.masked_mean: one entry covers both.
FUZZED_NAMES = {key.split('.')[-1] for key in ENTRIES}


@pytest.mark.parametrize(
  'namespace', [fd, fd.nnx, fd.functional], ids=['linen', 'nnx', 'functional']
)
def test_every_public_entry_point_is_fuzzed(namespace):
  missing = {
    name
    for name in namespace.__all__
    if name not in FUZZED_NAMES and name not in NOT_FUZZED
  }
  assert not missing


#: Layers of tests/cases.py without fuzz entries, and why.
LAYERS_NOT_FUZZED = {
  # flax's own nn.Dense and nnx.Linear.
  'Dense',
}


def test_every_layer_of_the_case_table_is_fuzzed(api):
  layers = {case.name for case in main_cases()}
  fuzzed = {
    key.split('.', 1)[1] for key in ENTRIES if key.startswith(f'{api}.')
  }
  missing = layers - LAYERS_NOT_FUZZED - fuzzed
  assert not missing, f'no {api} entry for {sorted(missing)}'
  assert LAYERS_NOT_FUZZED <= layers, sorted(LAYERS_NOT_FUZZED - layers)
  assert not LAYERS_NOT_FUZZED & fuzzed, sorted(LAYERS_NOT_FUZZED & fuzzed)
