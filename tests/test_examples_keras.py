"""The Keras round-trip example runs end to end and shows what it claims."""

import importlib.util
import pathlib

import jax

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / 'examples'


def load(name):
  spec = importlib.util.spec_from_file_location(name, EXAMPLES / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_keras_round_trip(tmp_path):
  # Keras's own ops broadcast ranks, which conftest's 'raise' refuses.
  with jax.numpy_rank_promotion('allow'):
    results = load('keras_round_trip').main(
      ['--steps=60', '--samples=64', f'--output={tmp_path}', '--quiet']
    )
  assert results['last_loss'] < 0.5 * results['first_loss']
  assert results['predict_diff'] < 1e-5
  assert results['reload_diff'] < 1e-5
  assert results['export_diff'] < 1e-5
  assert results['keras_path'] == tmp_path / 'round_trip.keras'
  assert results['keras_path'].stat().st_size > 0
  assert results['layers'] == [
    'masking',
    'encode',
    'encode_activation',
    'per_position',
    'pool',
    'head',
  ]
