"""fd.summary: the classic parameter counts, rows and rendering."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

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


@pytest.mark.parametrize(
  'model,params',
  [
    (SharedDense(), 256 * 10 + 10),
    (FlattenDense(), 1024 * 256 * 1024 * 10 + 1024 * 10),
    (PerPosition(), 1024 * 256 * 10 + 1024 * 10),
  ],
)
def test_three_answers_for_a_3d_input(model, params):
  info = fd.summary(model, INPUT)
  assert info.total_params == info.trainable_params == params
  assert info.non_trainable_params == 0
  assert info.total_bytes == 4 * params
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


def test_rows_and_rendering():
  info = fd.summary(Net(), jnp.ones((2, 75)))
  assert [(r.path, r.type, r.output_shape, r.params) for r in info.rows] == [
    ('', 'Net', (2, 1), 5933),
    ('Dense_0', 'Dense', (2, 75), 75 * 75 + 75),
    ('Dense_1', 'Dense', (2, 3), 75 * 3 + 3),
    ('ConstProduct_0', 'ConstProduct', (2, 1), 3),
    ('Dense_2', 'Dense', (2, 1), 2),
  ]
  text = str(info)
  assert 'Total params: 5,933 (23.18 KB)' in text
  assert 'Trainable params: 5,930 (23.16 KB)' in text
  assert 'Non-trainable params: 3 (12 B)' in text
  assert 'ConstProduct_0 (ConstProduct)' in text


def test_batch_stats_are_non_trainable_and_sown_values_are_not_weights():
  class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.BatchNorm(use_running_average=False)(nn.Dense(4)(x))
      self.sow('intermediates', 'hidden', x)
      return x

  info = fd.summary(BatchNormNet(), jnp.ones((2, 3)))
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
