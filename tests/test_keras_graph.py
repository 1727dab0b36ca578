"""fd.from_keras on Keras 3 functional graphs, against Keras 3 itself.

Several inputs and outputs, branches, shared layers, every merge layer,
TimeDistributed(Dense) and GlobalMaxPooling1D, with Keras masks flowing
through them: ``module.apply(variables, *inputs)`` (linen) and
``model(*inputs)`` (NNX) equal Keras's ``model(inputs)`` for every output.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_interop_keras import build, keras_allowed, random

import flax_dense as fd

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
  # The merges' values with their masks, pooled without them.
  flat = [layers.GlobalMaxPooling1D()(x) for x in merged]
  features = layers.Concatenate(name='all_merges')(merged)
  steps = layers.TimeDistributed(layers.Dense(3), name='td')(features)
  return keras.Model(
    [a, b],
    [
      *pooled,
      *flat,
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


def keras_outputs(model, inputs):
  with keras_allowed():
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
  return [
    np.asarray(y) for y in (outputs if isinstance(outputs, list) else [outputs])
  ]


def as_list(outputs):
  return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


@pytest.mark.parametrize('name', sorted(GRAPHS))
def test_graph_matches_keras_for_every_output(name):
  make_model, make_inputs = GRAPHS[name]
  model = build(make_model)
  inputs = make_inputs()
  want = keras_outputs(model, inputs)
  module, variables = fd.from_keras(model)
  got = module.apply(variables, *inputs)
  # Keras's convention: a list for several outputs, one array for one.
  assert isinstance(got, list) == (len(model.outputs) > 1)
  assert len(as_list(got)) == len(want)
  for index, (a, b) in enumerate(zip(as_list(got), want, strict=True)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=index)
  nnx_model = fd.from_keras(model, api='nnx')
  for index, (a, b) in enumerate(
    zip(as_list(nnx_model(*inputs)), want, strict=True)
  ):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5, err_msg=index)


def test_shared_layer_has_one_set_of_weights():
  model = build(merges_graph)
  module, variables = fd.from_keras(model)
  assert set(variables['params']) == {'shared', 'td'}
  assert jax.tree.map(jnp.shape, variables['params']['shared']) == {
    'bias': (5,),
    'kernel': (4, 5),
  }
  info = fd.summary(module, *two_masked_inputs())
  assert info.total_params == model.count_params()
  # Changing the one kernel changes both branches.
  inputs = two_masked_inputs()
  changed = jax.tree.map(lambda w: w, variables)
  changed['params']['shared'] = {
    'kernel': jnp.zeros((4, 5)),
    'bias': jnp.zeros(5),
  }
  left_and_right = module.apply(changed, *inputs)[0]  # pool of add
  np.testing.assert_allclose(left_and_right, 0.0, atol=1e-6)


def test_graph_modules_hash_and_jit_as_static_arguments():
  model = build(branches_graph)
  module, variables = fd.from_keras(model)
  assert isinstance(module, fd.KerasFunctional)
  assert hash(module) == hash(fd.from_keras(model)[0])
  x = random((3, 5, 4))

  @jax.jit
  def apply(variables, x):
    return module.apply(variables, x)

  apply_static = jax.jit(lambda m, v, x: m.apply(v, x), static_argnums=0)
  static = apply_static(module, variables, x)
  for a, b in zip(apply(variables, x), static, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  nnx_model = fd.from_keras(model, api='nnx')
  assert isinstance(nnx_model, fd.nnx.KerasFunctional)
  hash(nnx_model)
  # A chain still imports as KerasSequential, which hashes too.
  chain = build(lambda: keras.Sequential([keras.Input((3,)), layers.Dense(2)]))
  sequential, _ = fd.from_keras(chain)
  assert isinstance(sequential, fd.KerasSequential)
  assert hash(sequential) == hash(fd.from_keras(chain)[0])


def test_hand_written_sequential_with_list_fields_hashes_and_clones():
  module = fd.KerasSequential(
    layers=[fd.Masking(0.0), nn.Dense(3)],
    names=['masking', 'dense'],
    mask_flow=['compute', 'propagate'],
  )
  hash(module)
  x = jnp.ones((2, 4, 3))
  variables = module.init(jax.random.key(0), x)
  assert module.apply(variables, x).shape == (2, 4, 3)


def test_time_distributed_of_other_layers_is_a_clear_error():
  inputs = keras.Input((5, 4))
  model = build(
    lambda: keras.Model(
      inputs, layers.TimeDistributed(layers.Flatten(), name='td')(inputs)
    )
  )
  with pytest.raises(ValueError, match="TimeDistributed layer 'td'"):
    fd.from_keras(model)
