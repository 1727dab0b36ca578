"""The examples run end to end with small flags and show what they claim.

The main example on either front end (the ``api`` fixture), and the NNX
one trains exactly like the linen one from the same weights.
"""

import argparse
import importlib.util
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest
from flax import nnx

import flax_dense as fd

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'


def load(name):
  spec = importlib.util.spec_from_file_location(name, EXAMPLES / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


SMALL_TASK = [
  '--positions=16',
  '--in-features=8',
  '--classes=4',
  '--train-samples=2048',
  '--test-samples=512',
  '--batch-size=128',
]


def test_train_per_position_beats_shared_dense(api, tmp_path):
  pytest.importorskip('matplotlib')
  plot = tmp_path / 'loss.png'
  if api == 'linen':
    results = load('train_per_position').main(
      [*SMALL_TASK, '--steps=300', f'--plot={plot}', '--quiet']
    )
    assert results['PerPositionDense'] > 0.85
    assert results['shared nn.Dense'] < 0.6
  else:
    results = load('train_per_position_nnx').main(
      [*SMALL_TASK, '--steps=150', f'--plot={plot}', '--quiet']
    )
    per_position = results['PerPositionDense']
    shared = results['shared nnx.Linear']
    assert per_position['accuracy'] > 0.85  # chance is 0.25
    assert shared['accuracy'] < 0.6
    assert per_position['accuracy'] > shared['accuracy'] + 0.3
    for curves in (per_position['losses'], shared['losses']):
      assert len(curves) == 150 and curves[-1] < curves[0]
  assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_const_product_keeps_constants_fixed():
  first_loss, last_loss, constants = load('const_product').main(['--steps=50'])
  assert last_loss < first_loss
  np.testing.assert_array_equal(
    constants['ConstProduct_0']['kernel'], [0.5, 1.0, 2.0]
  )


def test_attention_decoder_learns_to_reverse(tmp_path):
  pytest.importorskip('matplotlib')
  plot = tmp_path / 'attention.png'
  results = load('attention_decoder').main(
    [
      '--timesteps=5',
      '--units=32',
      '--features=16',
      '--steps=200',
      '--test-samples=256',
      f'--plot={plot}',
      '--quiet',
    ]
  )
  assert results['digit_accuracy'] > 0.5  # chance is 0.1
  assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize(
  'make_linen, make_nnx',
  [
    (
      lambda args: fd.PerPositionDense(args.classes),
      lambda args, rngs: fd.nnx.PerPositionDense(
        args.positions, args.in_features, args.classes, rngs=rngs
      ),
    ),
    (
      lambda args: nn.Dense(args.classes),
      lambda args, rngs: nnx.Linear(args.in_features, args.classes, rngs=rngs),
    ),
  ],
  ids=['PerPositionDense', 'shared Dense'],
)
def test_nnx_trains_like_linen_from_the_same_weights(make_linen, make_nnx):
  train_per_position = load('train_per_position')
  train_per_position_nnx = load('train_per_position_nnx')
  args = train_per_position_nnx.parse([*SMALL_TASK, '--steps=8', '--quiet'])
  data = train_per_position_nnx.task(args)
  linen_model = make_linen(args)
  # The initial weights of train_per_position.train: the same key and input.
  params = linen_model.init(jax.random.key(args.seed), data[0][:1])['params']
  nnx_model = make_nnx(args, nnx.Rngs(args.seed + 1))
  assert not np.allclose(nnx_model.kernel[...], params['kernel'])
  nnx_model.kernel[...] = params['kernel']
  nnx_model.bias[...] = params['bias']

  linen_args = argparse.Namespace(**vars(args), checkpoint_dir=None)
  linen_losses, linen_accuracy = train_per_position.train(
    linen_model, *data, linen_args, 'linen'
  )
  nnx_losses, nnx_accuracy = train_per_position_nnx.train(
    nnx_model, *data, args, 'nnx'
  )
  assert len(nnx_losses) == 8 and linen_losses[-1] < linen_losses[0]
  np.testing.assert_allclose(nnx_losses, linen_losses, rtol=0, atol=1e-5)
  assert nnx_accuracy == pytest.approx(linen_accuracy, abs=1e-3)
