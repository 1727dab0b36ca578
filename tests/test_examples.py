"""The examples run end to end with small flags and show what they claim."""

import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'


def load(name):
  spec = importlib.util.spec_from_file_location(name, EXAMPLES / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_train_per_position_beats_shared_dense(tmp_path):
  pytest.importorskip('matplotlib')
  plot = tmp_path / 'loss.png'
  results = load('train_per_position').main(
    [
      '--positions=16',
      '--in-features=8',
      '--classes=4',
      '--train-samples=2048',
      '--test-samples=512',
      '--steps=300',
      '--batch-size=128',
      f'--plot={plot}',
      '--quiet',
    ]
  )
  assert results['PerPositionDense'] > 0.85
  assert results['shared nn.Dense'] < 0.6
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
