"""Bad input to the NNX layers: the linen layers' messages, and NNX's own.

The linen and NNX front ends raise from the same checks, so a mistake reads
the same in both: every error case of the linen tests (test_core,
test_dropout, test_dense, test_product, test_multi_io, test_attention,
test_masking) is made again with the NNX twin, which must raise the same
type with the same message. Then the errors only NNX has (rngs, sizes given
to the constructor, variable types, initializers), and those of
``fd.nnx.from_linen`` and ``fd.nnx.to_linen``.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CASES
from flax import nnx

import flax_dense as fd

KEY = jax.random.key(0)


def ones(shape, dtype=jnp.float32):
  return jnp.ones(shape, dtype)


def rngs():
  return nnx.Rngs(0)


def apply(module, *inputs, **kwargs):
  """A weightless linen layer's call."""
  return module.apply({}, *inputs, **kwargs)


def init(module, *inputs):
  """A linen layer built on its inputs, as its tests do."""
  return module.init(KEY, *inputs)


def built(module, build_inputs, inputs):
  """A linen layer built on ``build_inputs``, then applied to ``inputs``."""
  return module.apply(module.init(KEY, *build_inputs), *inputs)


def case(id, linen, twin):
  return pytest.param(linen, twin, id=id)


def dropout(shape, linen, twin):
  """A dropout case of test_dropout: the layers applied deterministic."""
  return (
    lambda: linen.apply({}, ones(shape), deterministic=True),
    lambda: twin(deterministic=True)(ones(shape)),
  )


LINEN_CASES = [
  # test_core.py
  *(
    case(
      f'core-{i}',
      lambda m=linen, x=x: apply(m, ones(x)),
      lambda t=twin, x=x: t()(ones(x)),
    )
    for i, (linen, twin, x) in enumerate(
      [
        (fd.Reshape((-1, -1)), lambda: fd.nnx.Reshape((-1, -1)), (2, 12)),
        (fd.Reshape((5, -1)), lambda: fd.nnx.Reshape((5, -1)), (2, 12)),
        (fd.Reshape((5, 3)), lambda: fd.nnx.Reshape((5, 3)), (2, 12)),
        (fd.Reshape((0, -1)), lambda: fd.nnx.Reshape((0, -1)), (2, 12)),
        (fd.Reshape((-2, 6)), lambda: fd.nnx.Reshape((-2, 6)), (2, 12)),
        (fd.Reshape((2.0, 6)), lambda: fd.nnx.Reshape((2.0, 6)), (2, 12)),
        (fd.Reshape((1,)), lambda: fd.nnx.Reshape((1,)), ()),
        (fd.Permute((1, 3)), lambda: fd.nnx.Permute((1, 3)), (2, 3, 4)),
        (fd.Permute((0, 1)), lambda: fd.nnx.Permute((0, 1)), (2, 3, 4)),
        (fd.Permute((2, 1)), lambda: fd.nnx.Permute((2, 1)), (2, 3)),
        (fd.Flatten('NHWC'), lambda: fd.nnx.Flatten('NHWC'), (2, 3)),
        (fd.Flatten(), lambda: fd.nnx.Flatten(), ()),
        (fd.RepeatVector(0), lambda: fd.nnx.RepeatVector(0), (2, 3)),
        (fd.RepeatVector(True), lambda: fd.nnx.RepeatVector(True), (2, 3)),
        (fd.RepeatVector(2), lambda: fd.nnx.RepeatVector(2), (2, 3, 4)),
        (fd.Lambda(3), lambda: fd.nnx.Lambda(3), (2,)),
        (fd.Activation('swishy'), lambda: fd.nnx.Activation('swishy'), (2,)),
      ]
    )
  ),
  # test_dropout.py
  *(
    case(f'dropout-{i}', *dropout(shape, linen, twin))
    for i, (linen, twin, shape) in enumerate(
      [
        (fd.Dropout(-0.1), lambda **k: fd.nnx.Dropout(-0.1, **k), (2,)),
        (fd.Dropout(1.5), lambda **k: fd.nnx.Dropout(1.5, **k), (2,)),
        (fd.Dropout('0.5'), lambda **k: fd.nnx.Dropout('0.5', **k), (2,)),
        (
          fd.Dropout(float('nan')),
          lambda **k: fd.nnx.Dropout(float('nan'), **k),
          (2,),
        ),
        (
          fd.Dropout(0.5, noise_shape=(None, 1)),
          lambda **k: fd.nnx.Dropout(0.5, noise_shape=(None, 1), **k),
          (2, 3, 4),
        ),
        (
          fd.Dropout(0.5, noise_shape=(None, 2)),
          lambda **k: fd.nnx.Dropout(0.5, noise_shape=(None, 2), **k),
          (2, 3),
        ),
        (
          fd.Dropout(0.5, noise_shape='ab'),
          lambda **k: fd.nnx.Dropout(0.5, noise_shape='ab', **k),
          (2, 3),
        ),
        (
          fd.SpatialDropout1D(0.5),
          lambda **k: fd.nnx.SpatialDropout1D(0.5, **k),
          (2, 3),
        ),
        (
          fd.SpatialDropout2D(0.5, data_format='channels_first'),
          lambda **k: fd.nnx.SpatialDropout2D(
            0.5, data_format='channels_first', **k
          ),
          (2, 3, 4),
        ),
        (
          fd.SpatialDropout3D(0.5),
          lambda **k: fd.nnx.SpatialDropout3D(0.5, **k),
          (2, 3, 4, 5),
        ),
        (
          fd.SpatialDropout2D(0.5, data_format='NCHW'),
          lambda **k: fd.nnx.SpatialDropout2D(0.5, data_format='NCHW', **k),
          (2, 3, 4, 5),
        ),
        (
          fd.SpatialDropout2D(2.0),
          lambda **k: fd.nnx.SpatialDropout2D(2.0, **k),
          (2, 3, 4, 5),
        ),
      ]
    )
  ),
  # test_dense.py: built on (2, 3, 4), 3 positions of 4 features.
  case(
    'dense-unknown-activation',
    lambda: init(
      fd.PerPositionDense(3, activation='softmaxx'), ones((2, 3, 4))
    ),
    lambda: fd.nnx.PerPositionDense(
      3, 4, 3, activation='softmaxx', rngs=rngs()
    ),
  ),
  case(
    'dense-activation-of-wrong-type',
    lambda: init(fd.PerPositionDense(3, activation=3), ones((2, 3, 4))),
    lambda: fd.nnx.PerPositionDense(3, 4, 3, activation=3, rngs=rngs()),
  ),
  *(
    case(
      f'dense-rank-{len(shape)}',
      lambda s=shape: init(fd.PerPositionDense(3), ones(s)),
      lambda s=shape: fd.nnx.PerPositionDense(3, 4, 3, rngs=rngs())(ones(s)),
    )
    for shape in [(), (5,)]
  ),
  *(
    case(
      f'dense-features-{features}',
      lambda f=features: init(fd.PerPositionDense(f), ones((2, 3, 4))),
      lambda f=features: fd.nnx.PerPositionDense(3, 4, f, rngs=rngs()),
    )
    for features in [0, -2, 2.5]
  ),
  *(
    case(
      f'dense-inputs-{shape}',
      lambda s=shape: built(
        fd.PerPositionDense(3), [ones((2, 5, 4))], [ones(s)]
      ),
      lambda s=shape: fd.nnx.PerPositionDense(5, 4, 3, rngs=rngs())(ones(s)),
    )
    for shape in [(2, 6, 4), (2, 5, 7)]
  ),
  # test_product.py: built on (2, 3).
  case(
    'product-frozen-without-weights',
    lambda: init(fd.ConstProduct(), ones((2, 3))),
    lambda: fd.nnx.ConstProduct(3),
  ),
  *(
    case(
      f'product-weights-{i}',
      lambda w=weights: init(fd.ConstProduct(w), ones((2, 3))),
      lambda w=weights: fd.nnx.ConstProduct(3, weights=w),
    )
    for i, weights in enumerate([[1.0, 2.0], [[1.0], [2.0], [3.0]], 1.0])
  ),
  case(
    'product-inputs-not-matching',
    lambda: built(
      fd.ConstProduct([1.0, 2.0, 3.0]), [ones((2, 3))], [ones((2, 4))]
    ),
    lambda: fd.nnx.ConstProduct(3, weights=[1.0, 2.0, 3.0])(ones((2, 4))),
  ),
  case(
    'product-scalar-input',
    lambda: init(fd.ConstProduct([1.0]), ones(())),
    lambda: fd.nnx.ConstProduct(1, weights=[1.0])(ones(())),
  ),
  # test_multi_io.py
  *(
    case(
      f'multi-io-{i}',
      lambda f=features, a=a, b=b: init(fd.MultiIODense(f), ones(a), ones(b)),
      lambda f=features, a=a, b=b: fd.nnx.MultiIODense(
        a[-1] if a else 1, f, rngs=rngs()
      )(ones(a), ones(b)),
    )
    for i, (features, a, b) in enumerate(
      [
        (0, (2, 3), (2, 4)),
        (4, (), (4,)),
        (4, (2, 3), (2, 5)),
        (4, (2, 3), (3, 4)),
      ]
    )
  ),
  case(
    'multi-io-features-other-than-built',
    lambda: built(
      fd.MultiIODense(2),
      [ones((1, 3)), ones((1, 2))],
      [ones((1, 5)), ones((1, 2))],
    ),
    lambda: fd.nnx.MultiIODense(3, 2, rngs=rngs())(ones((1, 5)), ones((1, 2))),
  ),
  # test_attention.py: units 4, output_dim 2 unless given.
  *(
    case(
      f'attention-{i}',
      lambda k=kwargs, s=shape, m=mask: init(
        fd.AttentionDecoder(**{'units': 4, 'output_dim': 2, **k}),
        ones(s),
        None if m is None else ones(m, bool),
      ),
      lambda k=kwargs, s=shape, m=mask: fd.nnx.AttentionDecoder(
        **{'units': 4, 'output_dim': 2, **k},
        in_features=s[-1],
        rngs=rngs(),
      )(ones(s), None if m is None else ones(m, bool)),
    )
    for i, (kwargs, shape, mask) in enumerate(
      [
        ({'units': 0}, (2, 3, 4), None),
        ({'output_dim': 2.0}, (2, 3, 4), None),
        ({}, (4,), None),
        ({}, (2, 0, 4), None),
        ({}, (2, 3, 4), (2, 4)),
      ]
    )
  ),
  case(
    'attention-features-other-than-built',
    lambda: built(
      fd.AttentionDecoder(5, 4), [ones((4, 6, 3))], [ones((2, 6, 4))]
    ),
    lambda: fd.nnx.AttentionDecoder(3, 5, 4, rngs=rngs())(ones((2, 6, 4))),
  ),
  # test_masking.py
  case(
    'masking-scalar',
    lambda: apply(fd.Masking(), jnp.float32(1.0)),
    lambda: fd.nnx.Masking()(jnp.float32(1.0)),
  ),
]

#: Linen errors the NNX layers do not have, and why.
LINEN_ONLY = {
  'Dropout: deterministic must be given exactly once': (
    "NNX's deterministic is a mode, False (training) by default and switched"
    ' by model.train() / model.eval(); a call may override it'
  ),
}


@pytest.mark.parametrize('linen,twin', LINEN_CASES)
def test_nnx_twin_raises_what_the_linen_layer_raises(linen, twin):
  with pytest.raises(Exception) as linen_error:
    linen()
  assert linen_error.type in (ValueError, TypeError)
  message = str(linen_error.value)
  assert re.match(r'[A-Z]\w+: ', message), message  # it names the layer
  with pytest.raises(linen_error.type, match=f'^{re.escape(message)}$'):
    twin()


def test_nnx_dropout_mode_is_a_bool():
  with pytest.raises(ValueError, match=r'Dropout: deterministic must be given'):
    fd.Dropout(0.5).apply({}, ones((2,)))
  with pytest.raises(
    TypeError,
    match=re.escape(
      'Dropout: deterministic must be True or False (a bool), got None of'
      ' type NoneType.'
    ),
  ):
    fd.nnx.Dropout(0.5, deterministic=None)
  layer = fd.nnx.Dropout(0.5, deterministic=True)
  with pytest.raises(
    TypeError,
    match=re.escape(
      "Dropout: deterministic must be True or False (a bool), got 'no' of"
      ' type str.'
    ),
  ):
    layer(ones((2,)), deterministic='no')


# ---------------------------------------------------------------------------
# Errors of NNX's own.


def draws_weights(case):
  """Whether the case's NNX module draws its weights from its rngs."""
  first, second = (
    nnx.to_pure_dict(nnx.state(case.nnx(nnx.Rngs(seed)), nnx.Param))
    for seed in (0, 1)
  )
  return any(
    not np.array_equal(a, b)
    for a, b in zip(
      jax.tree.leaves(first), jax.tree.leaves(second), strict=True
    )
  )


def needs_rngs():
  """The NNX constructor of each layer (not container) that draws weights.

  Drawn from tests/cases.py: for each public NNX layer, its first case
  whose module draws its weights from the rngs it is given.
  """
  found = {}
  for case in CASES:
    if case.name in found or case.name not in fd.nnx.__all__:
      continue
    model = nnx.eval_shape(lambda case=case: case.nnx(nnx.Rngs(0)))
    if any(path for path, _ in nnx.iter_modules(model)):
      continue  # a container: its layers raise, not itself
    if draws_weights(case):
      found[case.name] = case.nnx
  return found


NEEDS_RNGS = needs_rngs()


def test_the_layers_needing_rngs_are_found():
  assert {
    'AttentionDecoder',
    'ConstProduct',
    'LocallyConnected1D',
    'MultiIODense',
    'PerPositionDense',
  } <= set(NEEDS_RNGS)
  assert 'Dropout' not in NEEDS_RNGS  # its rngs are optional


@pytest.mark.parametrize('layer', sorted(NEEDS_RNGS))
@pytest.mark.parametrize('given', [None, 0, KEY], ids=['None', 'int', 'key'])
def test_missing_rngs_is_a_type_error_naming_the_layer(layer, given):
  with pytest.raises(
    TypeError,
    match=rf'^{layer}: rngs must be an nnx.Rngs to draw the initial weights,'
    rf' e.g. {layer}\(..., rngs=nnx.Rngs\(0\)\), got ',
  ):
    NEEDS_RNGS[layer](given)


@pytest.mark.parametrize(
  'layer', [fd.nnx.Dropout, fd.nnx.SpatialDropout1D], ids=lambda t: t.__name__
)
def test_dropout_rngs_of_the_wrong_type(layer):
  with pytest.raises(
    TypeError,
    match=rf'^{layer.__name__}: rngs must be an nnx.Rngs, an nnx.RngStream or'
    ' None, got 0.',
  ):
    layer(0.5, rngs=0)


@pytest.mark.parametrize(
  'layer,shape',
  [
    (lambda: fd.nnx.Dropout(0.5), (2, 3)),
    (lambda: fd.nnx.SpatialDropout2D(0.5), (2, 3, 3, 2)),
  ],
  ids=['Dropout', 'SpatialDropout2D'],
)
def test_dropout_in_training_without_rngs_is_a_value_error(layer, shape):
  layer = layer()
  name = type(layer).__name__
  with pytest.raises(
    ValueError,
    match=rf'^{name}: dropout needs random keys: pass rngs=nnx.Rngs\(...\)',
  ):
    layer(ones(shape))
  layer.eval()  # no keys needed
  np.testing.assert_array_equal(layer(ones(shape)), ones(shape))


def test_in_features_other_than_built_at_call_time():
  layer = fd.nnx.PerPositionDense(4, 256, 3, rngs=rngs())
  with pytest.raises(
    ValueError,
    match=re.escape(
      'PerPositionDense: inputs of shape (2, 4, 128) have 4 positions of 128'
      ' features and need a kernel of shape (4, 128, 3) (positions,'
      ' in_features, features), but the kernel was built with shape'
      ' (4, 256, 3): the layer is built for 256 input features at 4'
      ' positions, got 128 at 4;'
    ),
  ):
    layer(ones((2, 4, 128)))


@pytest.mark.parametrize(
  'weights', [nnx.Param(jnp.ones(3)), fd.nnx.Constant(jnp.ones(3))]
)
def test_const_product_takes_values_not_variables(weights):
  with pytest.raises(
    TypeError,
    match=rf'ConstProduct: weights must be the initial values .*got an'
    rf' {type(weights).__name__}',
  ):
    fd.nnx.ConstProduct(3, weights=weights)


def wrong_shape(key, shape, dtype=jnp.float32):
  del key, shape
  return jnp.ones((2, 2), dtype)


@pytest.mark.parametrize(
  'make,layer,param,shape',
  [
    (
      lambda: fd.nnx.PerPositionDense(
        3, 4, 5, kernel_init=wrong_shape, rngs=rngs()
      ),
      'PerPositionDense',
      'kernel',
      (3, 4, 5),
    ),
    (
      lambda: fd.nnx.PerPositionDense(
        3, 4, 5, bias_init=wrong_shape, rngs=rngs()
      ),
      'PerPositionDense',
      'bias',
      (3, 5),
    ),
    (
      lambda: fd.nnx.MultiIODense(3, 5, kernel_init=wrong_shape, rngs=rngs()),
      'MultiIODense',
      'kernel',
      (3, 5),
    ),
    (
      lambda: fd.nnx.AttentionDecoder(
        5, 4, 3, bias_init=wrong_shape, rngs=rngs()
      ),
      'AttentionDecoder',
      'b_a',
      (4,),
    ),
    (
      lambda: fd.nnx.ConstProduct(
        3, trainable=True, kernel_init=wrong_shape, rngs=rngs()
      ),
      'ConstProduct',
      'kernel',
      (3,),
    ),
  ],
  ids=['kernel', 'bias', 'MultiIODense', 'AttentionDecoder', 'ConstProduct'],
)
def test_initializer_of_the_wrong_shape(make, layer, param, shape):
  with pytest.raises(
    ValueError,
    match=re.escape(
      f'{layer}: the initializer of {param} must return shape {shape}, got'
      ' shape (2, 2).'
    ),
  ):
    make()


@pytest.mark.parametrize('init', ['kernel_init', 'bias_init'])
def test_initializer_that_is_not_callable(init):
  with pytest.raises(
    TypeError,
    match=rf"PerPositionDense: {init} must be an initializer, .* got 'glorot'"
    ' of type str.',
  ):
    fd.nnx.PerPositionDense(3, 4, 5, rngs=rngs(), **{init: 'glorot'})


# ---------------------------------------------------------------------------
# from_linen and to_linen.


def dense_variables(positions=5, in_features=4, features=3):
  return fd.PerPositionDense(features).init(
    KEY, ones((1, positions, in_features))
  )


def test_from_linen_unknown_module_type():
  with pytest.raises(
    TypeError,
    match=r'^from_linen: Conv is not a linen layer it converts; expected one'
    r' of .*PerPositionDense',
  ):
    fd.nnx.from_linen(nn.Conv(3, (2,)), {})


def test_to_linen_unknown_module_type():
  with pytest.raises(
    TypeError, match=r'^to_linen: Conv is not a NNX layer it converts'
  ):
    fd.nnx.to_linen(nnx.Conv(2, 3, (2,), rngs=rngs()))


@pytest.mark.parametrize(
  'module,variables,error,match',
  [
    (
      fd.PerPositionDense(3),
      [1, 2],
      TypeError,
      r'^from_linen: variables of PerPositionDense must be the mapping of'
      r" collections that PerPositionDense.init returns, e.g. \{'params':"
      r' ...\}, got list.',
    ),
    (
      fd.PerPositionDense(3),
      {'params': {'kernel': np.ones((5, 4, 3))}},
      ValueError,
      r"^from_linen: PerPositionDense needs variables holding 'params':"
      r" 'kernel', 'bias', got \{'params': \{'kernel': \(5, 4, 3\)\}\}.",
    ),
    (
      fd.PerPositionDense(3, use_bias=False),
      dense_variables(),
      ValueError,
      r"needs variables holding 'params': 'kernel', got",
    ),
    (
      fd.PerPositionDense(3),
      {**dense_variables(), 'batch_stats': {'mean': np.ones(3)}},
      ValueError,
      r"^from_linen: PerPositionDense keeps its weights in 'params' or"
      r" 'constants', but variables also hold \['batch_stats'\]",
    ),
    (
      fd.PerPositionDense(3),
      {'params': {'kernel': np.ones((5, 12)), 'bias': np.ones((5, 3))}},
      ValueError,
      r'^from_linen: PerPositionDense needs kernel of shape \(positions,'
      r' in_features, features\), got shape \(5, 12\).',
    ),
    (
      fd.PerPositionDense(2),
      dense_variables(features=3),
      ValueError,
      r'^from_linen: PerPositionDense with the fields features=2, .* needs'
      r" params 'kernel' of shape \(5, 4, 2\), got shape \(5, 4, 3\).",
    ),
    (
      fd.PerPositionDense(3),
      {
        'params': {
          'kernel': np.ones((5, 4, 3)),
          'bias': np.ones((4, 3)),
        }
      },
      ValueError,
      r"needs params 'bias' of shape \(5, 3\), got shape \(4, 3\).",
    ),
    (
      fd.ConstProduct([1.0, 2.0]),
      {'params': {'kernel': np.ones(2)}},
      ValueError,
      r"^from_linen: ConstProduct needs variables holding 'constants':"
      r" 'kernel', got \{'params'",
    ),
    (
      fd.Masking(),
      dense_variables(),
      ValueError,
      r'^from_linen: Masking needs variables holding no weights \(it has'
      r' none\), got',
    ),
    (
      fd.KerasSequential((fd.PerPositionDense(3),), names=('dense',)),
      {'params': {'dense': dense_variables()['params'], 'other': {}}},
      ValueError,
      r'^from_linen: variables hold weights of no layer of the'
      r" KerasSequential: \{'params': \['other'\]\}; its layers are named"
      r" \['dense'\].",
    ),
    (
      fd.KerasSequential((fd.Masking(),), mask_flow=('keep',)),
      {},
      ValueError,
      r'^from_linen: mask_flow\[0\] must be one of',
    ),
    (
      nn.Dense(3, dot_general=jax.lax.dot_general),
      {'params': {'kernel': np.ones((4, 3)), 'bias': np.ones(3)}},
      ValueError,
      r'^from_linen: Dense with a dot_general of its own .* is not'
      r' converted; only the default None is.',
    ),
  ],
  ids=[
    'not-a-mapping',
    'missing-bias',
    'extra-bias',
    'other-collection',
    'kernel-rank',
    'features',
    'bias-shape',
    'frozen-in-params',
    'weightless-with-weights',
    'unused-layer-variables',
    'bad-mask-flow',
    'custom-dot-general',
  ],
)
def test_from_linen_variables_that_do_not_fit(module, variables, error, match):
  with pytest.raises(error, match=match):
    fd.nnx.from_linen(module, variables)


def test_from_linen_rngs_of_the_wrong_type():
  with pytest.raises(
    TypeError,
    match=r'^from_linen: rngs must be an nnx.Rngs \(the streams of the dropout'
    r' layers, e.g. nnx.Rngs\(dropout=0\)\) or None, got 0.',
  ):
    fd.nnx.from_linen(fd.Dropout(0.5), {}, rngs=0)


def test_to_linen_of_mixed_weights():
  layer = fd.nnx.PerPositionDense(3, 4, 2, rngs=rngs())
  layer.bias = fd.nnx.Constant(layer.bias[...])
  with pytest.raises(
    ValueError,
    match=r'^to_linen: PerPositionDense mixes nnx.Param and fd.nnx.Constant'
    r' weights',
  ):
    fd.nnx.to_linen(layer)


def test_to_linen_of_a_weight_of_another_type():
  layer = fd.nnx.MultiIODense(3, 2, rngs=rngs())
  layer.kernel = nnx.BatchStat(layer.kernel[...])
  with pytest.raises(
    TypeError,
    match=r'^to_linen: MultiIODense.kernel is a BatchStat; expected an'
    r' nnx.Param or a fd.nnx.Constant.',
  ):
    fd.nnx.to_linen(layer)
