"""fd.summary of linen and NNX models: parameter counts, rows, rendering.

The linen figures are checked against the classic answers' figures in
words; the NNX models, the same nets written in NNX, against the linen
figures. Then what only NNX has: an untouched model, traced calls, paths.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd

INPUT = jax.ShapeDtypeStruct((8, 1024, 256), jnp.float32)


class SharedDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.softmax(nn.Dense(10)(x))


class FlattenDense(nn.Module):
  @nn.compact
  def __call__(self, x):
    batch, positions = x.shape[:2]
    y = nn.Dense(positions * 10)(x.reshape(batch, -1))
    return nn.softmax(y.reshape(batch, positions, 10))


class PerPosition(nn.Module):
  @nn.compact
  def __call__(self, x):
    return fd.PerPositionDense(10, activation='softmax')(x)


class NNXSharedDense(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(256, 10, rngs=rngs)

  def __call__(self, x):
    return nnx.softmax(self.dense(x))


class NNXFlattenDense(nnx.Module):
  def __init__(self, rngs):
    self.dense = nnx.Linear(1024 * 256, 1024 * 10, rngs=rngs)

  def __call__(self, x):
    batch, positions = x.shape[:2]
    y = self.dense(x.reshape(batch, -1))
    return nnx.softmax(y.reshape(batch, positions, 10))


class NNXPerPosition(nnx.Module):
  def __init__(self, rngs):
    self.dense = fd.nnx.PerPositionDense(
      1024, 256, 10, activation='softmax', rngs=rngs
    )

  def __call__(self, x):
    return self.dense(x)


class NNXNet(nnx.Module):
  """The product net of :class:`Net`, in NNX."""

  def __init__(self, rngs):
    self.dense1 = nnx.Linear(75, 75, rngs=rngs)
    self.dense2 = nnx.Linear(75, 3, rngs=rngs)
    self.product = fd.nnx.ConstProduct(3, weights=[[0.0, 1.0, 2.0]])
    self.dense3 = nnx.Linear(1, 1, rngs=rngs)

  def __call__(self, x):
    x = nnx.tanh(self.dense1(x))
    x = nnx.tanh(self.dense2(x))
    return self.dense3(self.product(x))


def abstract(model_class):
  """The model with ``jax.ShapeDtypeStruct`` weights: nothing allocated."""
  return nnx.eval_shape(lambda: model_class(nnx.Rngs(0)))


def counts(info):
  return (
    info.total_params,
    info.trainable_params,
    info.non_trainable_params,
    info.total_bytes,
    info.trainable_bytes,
  )


#: name: (linen model, NNX model class, parameters).
THREE = {
  'shared': (SharedDense, NNXSharedDense, 256 * 10 + 10),
  'flatten': (
    FlattenDense,
    NNXFlattenDense,
    1024 * 256 * 1024 * 10 + 1024 * 10,
  ),
  'per_position': (PerPosition, NNXPerPosition, 1024 * 256 * 10 + 1024 * 10),
}


@pytest.mark.parametrize('name', THREE)
def test_three_answers_for_a_3d_input(name, api):
  linen_model, nnx_class, params = THREE[name]
  linen = fd.summary(linen_model(), INPUT)
  # Abstract: the flattening net's 2.7 billion weights would take 10.7 GB.
  info = linen if api == 'linen' else fd.summary(abstract(nnx_class), INPUT)
  assert info.total_params == info.trainable_params == params
  assert info.non_trainable_params == 0
  assert info.total_bytes == 4 * params
  assert counts(info) == (params, params, 0, 4 * params, 4 * params)
  assert counts(info) == counts(linen)
  assert info.rows[0].output_shape == linen.rows[0].output_shape
  assert info.rows[0].output_shape == (8, 1024, 10)


def test_figures_in_words():
  # The figures quoted by the classic answers, computed independently above.
  assert fd.summary(SharedDense(), INPUT).total_params == 2_570
  assert fd.summary(FlattenDense(), INPUT).total_params == 2_684_364_800
  assert fd.summary(PerPosition(), INPUT).total_params == 2_631_680


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(75)(x))
    x = nn.tanh(nn.Dense(3)(x))
    x = fd.ConstProduct([[0.0, 1.0, 2.0]])(x)
    self.sow('intermediates', 'product', x)
    return nn.Dense(1)(x)


#: The product net's rows (path, type) on each front end.
NET_ROWS = {
  'linen': [
    ('', 'Net'),
    ('Dense_0', 'Dense'),
    ('Dense_1', 'Dense'),
    ('ConstProduct_0', 'ConstProduct'),
    ('Dense_2', 'Dense'),
  ],
  'nnx': [
    ('', 'NNXNet'),
    ('dense1', 'Linear'),
    ('dense2', 'Linear'),
    ('product', 'ConstProduct'),
    ('dense3', 'Linear'),
  ],
}


def test_rows_and_rendering(api):
  linen = fd.summary(Net(), jnp.ones((2, 75)))
  info = (
    linen
    if api == 'linen'
    else fd.summary(NNXNet(nnx.Rngs(0)), jnp.ones((2, 75)))
  )
  assert counts(info) == counts(linen)
  assert (info.total_params, info.trainable_params) == (5_933, 5_930)
  assert info.non_trainable_params == 3
  figures = [
    ((2, 1), 5933),
    ((2, 75), 75 * 75 + 75),
    ((2, 3), 75 * 3 + 3),
    ((2, 1), 3),
    ((2, 1), 2),
  ]
  rows = [(r.path, r.type, r.output_shape, r.params) for r in info.rows]
  assert rows == [
    (*names, *figure)
    for names, figure in zip(NET_ROWS[api], figures, strict=True)
  ]
  # Row by row, the linen figures: only paths and class names differ.
  assert [
    (r.output_shape, r.params, r.trainable_params) for r in info.rows
  ] == [(r.output_shape, r.params, r.trainable_params) for r in linen.rows]
  assert info.rows[3].trainable_params == 0  # frozen weights
  text = str(info)
  assert 'Total params: 5,933 (23.18 KB)' in text
  assert 'Trainable params: 5,930 (23.16 KB)' in text
  assert 'Non-trainable params: 3 (12 B)' in text
  path, layer = NET_ROWS[api][3]
  assert f'{path} ({layer})' in text


class BatchNormNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))
    self.sow('intermediates', 'hidden', x)
    return x


class StatefulNet(nnx.Module):
  """Batch statistics, dropout rng state, and variables that are no weights."""

  def __init__(self, rngs):
    self.dense = nnx.Linear(3, 4, rngs=rngs)
    self.norm = nnx.BatchNorm(4, use_running_average=False, rngs=rngs)
    self.dropout = fd.nnx.Dropout(0.5, rngs=rngs)
    self.hidden = nnx.Intermediate(jnp.zeros((2, 4)))
    self.penalty = fd.nnx.Loss(jnp.zeros(()))

  def __call__(self, x):
    return self.dropout(self.norm(self.dense(x)))


def test_batch_stats_are_non_trainable_and_sown_values_and_rngs_are_not(api):
  model = BatchNormNet() if api == 'linen' else StatefulNet(nnx.Rngs(0))
  info = fd.summary(model, jnp.ones((2, 3)))
  assert info.trainable_params == 3 * 4 + 4 + 2 * 4  # dense + scale, bias
  assert info.non_trainable_params == 2 * 4  # running mean and variance


def test_several_outputs_are_listed():
  class TwoOutputs(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(2)(x), x.mean(-1)

  info = fd.summary(TwoOutputs(), jnp.ones((5, 3)))
  assert info.rows[0].output_shape == ((5, 2), (5,))
  assert '(5, 2), (5,)' in str(info)


# NNX only.


def test_the_layer_itself():
  layer = nnx.eval_shape(
    lambda: fd.nnx.PerPositionDense(1024, 256, 10, rngs=nnx.Rngs(0))
  )
  info = fd.summary(layer, INPUT)
  assert info.total_params == info.trainable_params == 2_631_680
  assert [(r.path, r.type, r.output_shape) for r in info.rows] == [
    ('', 'PerPositionDense', (8, 1024, 10))
  ]


def data(leaf):
  """A leaf's bytes; a typed PRNG key's are its data's."""
  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf).tobytes()


def test_the_model_is_left_as_it_was():
  model = StatefulNet(nnx.Rngs(0))
  before = nnx.clone(nnx.state(model))
  fd.summary(model, jnp.ones((2, 3)))
  after = nnx.state(model)
  # No dropout draw (the rng count), no batch-statistics update.
  assert jax.tree.structure(after) == jax.tree.structure(before)
  assert list(map(data, jax.tree.leaves(after))) == list(
    map(data, jax.tree.leaves(before))
  )


def test_the_call_is_traced_never_run():
  ran = []

  class Spy(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(256, 10, rngs=rngs)

    def __call__(self, x):
      jax.debug.callback(lambda: ran.append(True))
      return self.dense(x)

  info = fd.summary(Spy(nnx.Rngs(0)), jnp.ones((8, 1024, 256)))
  assert info.rows[0].output_shape == (8, 1024, 10)
  assert not ran


def test_nested_paths_shared_and_unused_modules():
  class Nested(nnx.Module):
    def __init__(self, rngs):
      self.body = nnx.Sequential(
        nnx.Linear(4, 3, rngs=rngs), nnx.relu, nnx.Linear(3, 4, rngs=rngs)
      )
      self.unused = nnx.Linear(4, 7, rngs=rngs)

    def __call__(self, x):
      return self.body(self.body(x)[:, :4])

  info = fd.summary(Nested(nnx.Rngs(0)), jnp.ones((5, 4)))
  # Each module once, at its first call, in call order, the model first.
  assert [(r.path, r.type, r.output_shape, r.params) for r in info.rows] == [
    ('', 'Nested', (5, 4), 15 + 16 + 35),
    ('body', 'Sequential', (5, 4), 15 + 16),
    ('body/layers/0', 'Linear', (5, 3), 15),
    ('body/layers/2', 'Linear', (5, 4), 16),
  ]
  assert info.total_params == 15 + 16 + 35  # the unused layer counts


def test_call_arguments_outputs_and_rngs():
  class Noisy(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(3, 2, rngs=rngs)
      self.dropout = nnx.Dropout(0.5)

    def __call__(self, x, scale, *, deterministic, rngs=None):
      y = self.dropout(self.dense(x), deterministic=deterministic, rngs=rngs)
      return y * scale, x.mean(-1)

  model = Noisy(nnx.Rngs(0))
  rngs = nnx.Rngs(dropout=1)
  count = rngs.dropout.count[...]
  info = fd.summary(
    model, jnp.ones((5, 3)), 2.0, deterministic=False, rngs=rngs
  )
  assert info.rows[0].output_shape == ((5, 2), (5,))
  assert '(5, 2), (5,)' in str(info)
  assert rngs.dropout.count[...] == count  # traced over a copy, not drawn
  info = fd.summary(
    model, jnp.ones((5, 3)), scale=jnp.ones((1, 2)), deterministic=True
  )
  assert info.rows[1] == fd.LayerSummary('dense', 'Linear', (5, 2), 8, 8)


def test_inherited_calls_are_recorded_and_classes_restored():
  class Scaled(fd.nnx.PerPositionDense):  # inherits __call__
    pass

  class Doubled(fd.nnx.PerPositionDense):
    def __call__(self, x):
      return 2 * super().__call__(x)

  class Pair(nnx.Module):
    def __init__(self, rngs):
      self.plain = fd.nnx.PerPositionDense(4, 3, 2, rngs=rngs)
      self.scaled = Scaled(4, 3, 2, rngs=rngs)
      self.doubled = Doubled(4, 3, 2, rngs=rngs)

    def __call__(self, x):
      return self.plain(x) + self.scaled(x) + self.doubled(x)

  original = fd.nnx.PerPositionDense.__call__
  info = fd.summary(Pair(nnx.Rngs(0)), jnp.ones((1, 4, 3)))
  # One row per module, though Doubled's call goes through its parent's.
  assert [(r.path, r.type) for r in info.rows] == [
    ('', 'Pair'),
    ('plain', 'PerPositionDense'),
    ('scaled', 'Scaled'),
    ('doubled', 'Doubled'),
  ]
  assert fd.nnx.PerPositionDense.__call__ is original
  assert '__call__' not in vars(Scaled)

  class Failing(nnx.Module):
    def __init__(self, rngs):
      self.dense = fd.nnx.PerPositionDense(4, 3, 2, rngs=rngs)

    def __call__(self, x):
      return self.dense(x[:, :3])

  with pytest.raises(
    ValueError,
    match=r'PerPositionDense: inputs of shape \(1, 3, 3\) have 3 positions',
  ):
    fd.summary(Failing(nnx.Rngs(0)), jnp.ones((1, 4, 3)))
  assert fd.nnx.PerPositionDense.__call__ is original


def test_an_nnx_class_is_no_model():
  with pytest.raises(
    TypeError,
    match=r'PerPositionDense is an NNX class: build the model first, e\.g\.'
    r' nnx\.eval_shape\(lambda: PerPositionDense\(\.\.\., rngs=nnx\.Rngs\(0\)\)\)',
  ):
    fd.summary(fd.nnx.PerPositionDense, INPUT)
  with pytest.raises(TypeError, match='must be a flax.linen Module or an NNX'):
    fd.summary(lambda x: x, INPUT)
