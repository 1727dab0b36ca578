"""fd.from_keras on Keras 3 graphs where masks meet merges, against Keras.

Keras 3's merge layers OR the masks of their inputs (none when any input
has none), ``Concatenate`` joins them, ``Dot`` drops them, and ``Maximum``,
``Minimum`` and ``Multiply`` also use them for their values; the graphs
here pool every merge with both poolings (``GlobalAveragePooling1D`` uses
the mask, ``GlobalMaxPooling1D`` does not), so values and masks are both
checked, for every output, linen and NNX. Also: a graph with three
outputs of different ranks, a layer shared across calls (one set of
weights, Keras's parameter count), and the error for a TimeDistributed
layer that is not covered.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import random
from flax import nnx

import flax_dense as fd
from flax_dense._src.models.graph import Node

keras = pytest.importorskip('keras')
layers = keras.layers

pytestmark = pytest.mark.filterwarnings('ignore:Layer .* does not support')


def masked(shape, seed, padded_steps):
  """``random(shape)`` with the given steps all zero (masked by Masking)."""
  x = random(shape, seed)
  for row, steps in padded_steps.items():
    x[row, steps] = 0.0
  return x


def two_masked_inputs():
  """``a`` and ``b`` (3, 6, 4), masked at different steps."""
  a = masked((3, 6, 4), 1, {0: slice(4, None), 1: slice(5, None)})
  b = masked((3, 6, 4), 2, {0: slice(0, 1), 2: slice(3, None)})
  return [a, b]


def merges_graph():
  """Two masked inputs, a shared Dense, every merge, pooled outputs."""
  a = keras.Input((6, 4), name='a')
  b = keras.Input((6, 4), name='b')
  shared = layers.Dense(5, activation='tanh', name='shared')
  left = shared(layers.Masking(name='mask_a')(a))
  right = shared(layers.Masking(name='mask_b')(b))
  add = layers.Add(name='add')([left, right])
  merged = [
    add,
    layers.Subtract(name='subtract')([left, right]),
    layers.Multiply(name='multiply')([left, right]),
    layers.Average(name='average')([left, right, add]),
    layers.Maximum(name='maximum')([left, right]),
    layers.Minimum(name='minimum')([left, right]),
  ]
  names = ['add', 'subtract', 'multiply', 'average', 'maximum', 'minimum']
  pooled = [
    layers.GlobalAveragePooling1D(name=f'pool_{name}')(x)
    for name, x in zip(names, merged, strict=True)
  ]
  features = layers.Concatenate(name='all_merges')(merged)
  steps = layers.TimeDistributed(layers.Dense(3), name='td')(features)
  return keras.Model(
    [a, b],
    [
      *pooled,
      # The merges' values (with their masks), pooled without the mask.
      layers.GlobalMaxPooling1D(name='max_merges')(features),
      layers.GlobalAveragePooling1D(name='pool_steps')(steps),
      layers.GlobalMaxPooling1D(name='max_steps')(steps),
    ],
  )


def concatenate_and_dot_graph():
  """Concatenate over steps and features, Dot with and without normalize."""
  a = keras.Input((6, 4), name='a')
  b = keras.Input((6, 4), name='b')
  left = layers.Dense(3, name='left')(layers.Masking(name='mask_a')(a))
  right = layers.Dense(3, name='right')(b)  # unmasked
  over_steps = layers.Concatenate(axis=1, name='steps')([left, right])
  over_features = layers.Concatenate(axis=-1, name='features')([left, right])
  dot = layers.Dot(axes=(2, 2), name='dot')([left, right])
  pooled_left = layers.GlobalAveragePooling1D(name='pool_left')(left)
  pooled_right = layers.GlobalMaxPooling1D(name='pool_right')(right)
  cosine = layers.Dot(axes=1, normalize=True, name='cosine')(
    [pooled_left, pooled_right]
  )
  return keras.Model(
    [a, b],
    [
      layers.GlobalAveragePooling1D(name='pool_steps')(over_steps),
      layers.GlobalAveragePooling1D(name='pool_features')(over_features),
      dot,
      cosine,
    ],
  )


def branches_graph():
  """One input, branches that meet again, two outputs of different ranks."""
  inputs = keras.Input((5, 4), name='x')
  hidden = layers.Dense(6, activation='relu', name='hidden')(inputs)
  left = layers.Dense(3, activation='tanh', name='left')(hidden)
  right = layers.Dense(3, name='right')(layers.Dropout(0.5)(hidden))
  joined = layers.Add(name='joined')([left, right, left])
  flat = layers.Flatten(name='flat')(joined)
  return keras.Model(
    inputs, [layers.Dense(2, name='head')(flat), joined, hidden]
  )


def shared_twice_graph():
  """One Dense applied twice in a row, and to the input of the model."""
  inputs = keras.Input((4,), name='x')
  shared = layers.Dense(4, activation='tanh', name='shared')
  return keras.Model(
    inputs, layers.Subtract()([shared(shared(inputs)), inputs])
  )


GRAPHS = {
  'merges': (merges_graph, two_masked_inputs),
  'concatenate_and_dot': (concatenate_and_dot_graph, two_masked_inputs),
  'branches': (branches_graph, lambda: [random((3, 5, 4))]),
  'shared_twice': (shared_twice_graph, lambda: [random((3, 4))]),
}


def keras_outputs(model, inputs, keras_allowed):
  # Jitted: one compilation instead of one per operation, eagerly.
  def call(*inputs):
    return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

  with keras_allowed():
    outputs = jax.jit(call)(*inputs)
  return [
    np.asarray(y) for y in (outputs if isinstance(outputs, list) else [outputs])
  ]


def as_list(outputs):
  return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


@pytest.mark.parametrize('name', sorted(GRAPHS))
def test_graph_matches_keras_for_every_output(name, keras_model, keras_allowed):
  make_model, make_inputs = GRAPHS[name]
  model = keras_model(make_model)
  inputs = make_inputs()
  want = keras_outputs(model, inputs, keras_allowed)
  module, variables = fd.from_keras(model)
  got = jax.jit(module.apply)(variables, *inputs)
  # Keras's convention: a list for several outputs, one array for one.
  assert isinstance(got, list) == (len(model.outputs) > 1)
  assert len(as_list(got)) == len(want)
  for index, (a, b) in enumerate(zip(as_list(got), want, strict=True)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=index)
  nnx_model = fd.from_keras(model, api='nnx')
  nnx_outputs = nnx.jit(lambda model, *x: model(*x))(nnx_model, *inputs)
  for index, (a, b) in enumerate(zip(as_list(nnx_outputs), want, strict=True)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=index)


def test_shared_layer_has_one_set_of_weights(keras_model):
  model = keras_model(shared_twice_graph)
  module, variables = fd.from_keras(model)
  assert jax.tree.map(jnp.shape, variables) == {
    'params': {'shared': {'bias': (4,), 'kernel': (4, 4)}}
  }
  x = random((3, 4))
  assert fd.summary(module, x).total_params == model.count_params()
  # With the one set of weights zero, both calls give 0: 0 - x remains.
  zero = jax.tree.map(jnp.zeros_like, variables)
  np.testing.assert_allclose(jax.jit(module.apply)(zero, x), -x, atol=1e-7)


def test_time_distributed_of_any_covered_layer_imports(keras_model, api):
  # A Flatten takes no leading batch axes: it runs inside fd.TimeDistributed.
  inputs = keras.Input((5, 2, 3))
  model = keras_model(
    lambda: keras.Model(
      inputs, layers.TimeDistributed(layers.Flatten(), name='td')(inputs)
    )
  )
  x = random((4, 5, 2, 3))
  imported = fd.from_keras(model, api=api)
  if api == 'linen':
    module, variables = imported
    assert isinstance(module.layers[0], fd.TimeDistributed)
    got = module.apply(variables, x)
  else:
    got = imported(x)
  np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-6)
  assert got.shape == (4, 5, 6)


def test_time_distributed_of_an_uncovered_layer_names_it(keras_model):
  inputs = keras.Input((5, 4, 3))
  model = keras_model(
    lambda: keras.Model(
      inputs,
      layers.TimeDistributed(layers.Conv1D(2, 3, name='conv'), name='td')(
        inputs
      ),
    )
  )
  with pytest.raises(
    ValueError,
    match="^from_keras: Conv1D layer 'conv' of TimeDistributed layer 'td' of"
    " model '.*' is not covered",
  ):
    fd.from_keras(model)


# -- the containers' own arguments -------------------------------------------

ADD_NODES = (
  Node((0,), steps=(0,)),
  Node((1,), steps=(0,)),
  Node((2, 3), merge='Add'),
)
FUNCTIONAL = {
  'names': ('dense',),
  'mask_flow': ('propagate',),
  'nodes': ADD_NODES,
  'inputs': 2,
  'outputs': (4,),
}


def make_functional(api, **changes):
  """y = dense(a) + dense(b) on ``api``, its arguments changed, called."""
  arguments = {**FUNCTIONAL, **changes}
  a = jnp.ones((2, 3))
  if api == 'nnx':
    layers = arguments.pop('layers', [nnx.Linear(3, 4, rngs=nnx.Rngs(0))])
    return fd.nnx.KerasFunctional(layers, **arguments)(a, a)
  layers = arguments.pop('layers', (nn.Dense(4),))
  module = fd.KerasFunctional(layers=layers, **arguments)
  return module.init_with_output(jax.random.key(0), a, a)[0]


def make_sequential(api, **arguments):
  """Masking, a dense layer and a pooling on ``api`` (or ``layers``),
  called."""
  x = jnp.ones((2, 5, 3))
  if api == 'nnx':
    if 'layers' not in arguments:
      arguments['layers'] = [
        fd.nnx.Masking(),
        nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
        fd.nnx.GlobalAveragePooling1D(),
      ]
    return fd.nnx.KerasSequential(arguments.pop('layers'), **arguments)(x)
  arguments.setdefault(
    'layers', (fd.Masking(), nn.Dense(4), fd.GlobalAveragePooling1D())
  )
  module = fd.KerasSequential(**arguments)
  return module.init_with_output(jax.random.key(0), x)[0]


def test_the_functional_made_for_the_checks_runs(api):
  # The changes below are refused for them alone: unchanged, it runs.
  y = make_functional(api)
  assert y.shape == (2, 4) and bool(jnp.all(jnp.isfinite(y)))
  lists = {'names': ['dense'], 'outputs': [np.int64(4)], 'inputs': np.int32(2)}
  np.testing.assert_allclose(make_functional(api, **lists), y, rtol=1e-6)
  # Both inputs are ones: the sum (tensor 4) is twice dense(a) (tensor 2).
  total, dense = make_functional(api, single_output=False, outputs=(4, 2))
  np.testing.assert_allclose(total, 2 * dense, rtol=1e-6)


def test_the_sequential_made_for_the_checks_runs(api):
  y = make_sequential(
    api, names=['m', 'd', 'p'], mask_flow=('compute', 'propagate', 'consume')
  )
  assert y.shape == (2, 4) and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize(
  'changes, error, message',
  [
    (
      {'names': 'd'},
      TypeError,
      "names must be a tuple or list of str, one per layer, got 'd' of type"
      ' str.',
    ),
    ({'names': (3,)}, TypeError, 'names[0] must be a str, got 3 of type int.'),
    ({'names': None}, TypeError, 'names must be a tuple or list of str'),
    (
      {'names': ('a', 'b')},
      ValueError,
      "names must have one entry per layer (1), got 2: ('a', 'b').",
    ),
    (
      {'mask_flow': 'propagate'},
      TypeError,
      "mask_flow must be a tuple or list of str among ('compute',"
      " 'propagate', 'consume', 'use', 'drop'), one per layer, got"
      " 'propagate' of type str.",
    ),
    (
      {'mask_flow': (None,)},
      TypeError,
      'mask_flow[0] must be a str, got None of type NoneType.',
    ),
    ({'mask_flow': ('keep',)}, ValueError, 'mask_flow[0] must be one of'),
    (
      {'layers': 'dense'},
      TypeError,
      "layers must be a tuple or list of modules, got 'dense' of type str.",
    ),
    (
      {'layers': (3,)},
      TypeError,
      'layers[0] must be a module (callable), got 3 of type int.',
    ),
    (
      {'inputs': 2.0},
      TypeError,
      'inputs must be a positive integer, got 2.0 of type float.',
    ),
    (
      {'inputs': True},
      TypeError,
      'inputs must be a positive integer, got True of type bool.',
    ),
    ({'inputs': 0}, ValueError, 'inputs must be a positive integer, got 0.'),
    (
      {'outputs': 4},
      TypeError,
      'outputs must be a tuple or list of int, got 4 of type int.',
    ),
    (
      {'outputs': (4.0,)},
      TypeError,
      'outputs[0] must be an int, got 4.0 of type float.',
    ),
    (
      {'outputs': (5,)},
      ValueError,
      'outputs (5,) must name tensors 0 to 4 of 2 inputs and the nodes',
    ),
    ({'outputs': ()}, ValueError, 'outputs () must name tensors 0 to 4'),
    (
      {'outputs': (4, 2)},
      ValueError,
      'single_output is True, which returns one output, but outputs names'
      ' 2: (4, 2).',
    ),
    (
      {'nodes': None},
      TypeError,
      'nodes must be a tuple or list of Node, got None of type NoneType.',
    ),
    (
      {'nodes': ((0,), (1,))},
      TypeError,
      'nodes[0] must be a Node, got (0,) of type tuple.',
    ),
    (
      {'nodes': (Node(0, steps=(0,)),)},
      TypeError,
      'nodes[0].inputs must be a tuple or list of int, got 0 of type int.',
    ),
    (
      {'nodes': (Node((0,), steps=(0.0,)),)},
      TypeError,
      'nodes[0].steps[0] must be an int, got 0.0 of type float.',
    ),
    (
      {'nodes': (Node((0,), outputs=1.0, steps=(0,)),)},
      TypeError,
      'nodes[0].outputs must be a positive integer, got 1.0 of type float.',
    ),
    (
      {'nodes': (Node((0,), steps=(0,), keywords=('initial_state',)),)},
      TypeError,
      "nodes[0].keywords[0] must be a (str, int) pair, got 'initial_state'",
    ),
    (
      {'nodes': (Node((0,)),)},
      ValueError,
      'nodes[0] must take one tensor or more and be either a merge (no'
      " steps) or the call of one layer or more (merge ''), got inputs"
      " (0,), steps () and merge ''.",
    ),
    (
      {'nodes': (Node((0, 1), steps=(0,), merge='Add'),)},
      ValueError,
      'nodes[0] must take one tensor or more and be either a merge',
    ),
    (
      {'nodes': (Node((0, 2), merge='Add'),)},
      ValueError,
      'nodes[0] takes tensors (0, 2) and layers () (merge',
    ),
    (
      {'single_output': 'False'},
      TypeError,
      'single_output must be True or False',
    ),
  ],
)
def test_functional_arguments_are_checked(api, changes, error, message):
  with pytest.raises(error, match=re.escape(f'KerasFunctional: {message}')):
    make_functional(api, **changes)


@pytest.mark.parametrize(
  'arguments, error, message',
  [
    (
      {'layers': None},
      TypeError,
      'layers must be a tuple or list of modules, got None of type NoneType.',
    ),
    (
      {'layers': ('dense',)},
      TypeError,
      "layers[0] must be a module (callable), got 'dense' of type str.",
    ),
    (
      {'names': 'mdp'},
      TypeError,
      'names must be None or a tuple or list of str, one per layer, got'
      " 'mdp' of type str.",
    ),
    (
      {'names': ('m', 2, 'p')},
      TypeError,
      'names[1] must be a str, got 2 of type int.',
    ),
    (
      {'names': ('m', 'd')},
      ValueError,
      "names must have one entry per layer (3), got 2: ('m', 'd').",
    ),
    (
      {'mask_flow': 'propagate'},
      TypeError,
      'mask_flow must be None or a tuple or list of str among',
    ),
    (
      {'mask_flow': ('compute', 'propagate', 1)},
      TypeError,
      'mask_flow[2] must be a str, got 1 of type int.',
    ),
    (
      {'mask_flow': ('compute', 'keep', 'consume')},
      ValueError,
      "mask_flow[1] must be one of ('compute', 'propagate', 'consume',"
      " 'use', 'drop'), got 'keep'.",
    ),
    (
      {'mask_flow': ('compute', 'compute', 'consume')},
      ValueError,
      "mask_flow[1] is 'compute', which only a Masking layer does",
    ),
  ],
)
def test_sequential_arguments_are_checked(api, arguments, error, message):
  with pytest.raises(error, match=re.escape(f'KerasSequential: {message}')):
    make_sequential(api, **arguments)
