"""examples/translate_dates.py: its data are right and a short run learns."""

import datetime
import importlib.util
import pathlib
import random

import numpy as np
import pytest

EXAMPLE = (
  pathlib.Path(__file__).resolve().parent.parent
  / 'examples'
  / 'translate_dates.py'
)


@pytest.fixture(scope='module')
def dates():
  spec = importlib.util.spec_from_file_location('translate_dates', EXAMPLE)
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_formats_write_the_date(dates):
  formats = dates.formats(datetime.date(1979, 5, 3))
  for expected in [
    '3 May 1979',
    '03/05/79',
    'Thursday, May 3, 1979',
    'may 3 1979',
    '1979.05.03',
    'THURSDAY 3 MAY 1979',
    '3rd of May 1979',
    'Thu 03-May-1979',
  ]:
    assert expected in formats
  assert [dates.ordinal(day) for day in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == [
    '1st',
    '2nd',
    '3rd',
    '4th',
    '11th',
    '12th',
    '13th',
    '21st',
    '22nd',
  ]


def test_samples_round_trip_through_the_vocabularies(dates):
  vocabulary = dates.input_vocabulary()
  length = dates.input_length()
  texts, inputs, targets = dates.make_split(
    random.Random(1), 300, length, vocabulary
  )
  assert inputs.shape == (300, length) and targets.shape == (300, 10)
  assert dates.decode(inputs, vocabulary) == texts
  for text, iso in zip(
    texts, dates.decode(targets, dates.OUTPUT_VOCABULARY), strict=True
  ):
    date = datetime.date.fromisoformat(iso)
    assert 1950 <= date.year <= 2049
    assert text in dates.formats(date)
  # Right padding with id 0, which the mask drops, and nothing else.
  lengths = np.array([len(text) for text in texts])
  np.testing.assert_array_equal((inputs != 0).sum(axis=1), lengths)
  assert length == len('Wednesday, September 27, 1978')


def test_held_out_split_shares_no_input(dates):
  rng = random.Random(2)
  vocabulary, length = dates.input_vocabulary(), dates.input_length()
  texts, _, _ = dates.make_split(rng, 500, length, vocabulary)
  held_out, _, _ = dates.make_split(rng, 200, length, vocabulary, exclude=texts)
  assert len(held_out) == 200 and not set(held_out) & set(texts)


def test_encode_refuses_what_it_cannot_hold(dates):
  with pytest.raises(ValueError, match=r"'3 May 1979' has 10 characters"):
    dates.encode(['3 May 1979'], dates.input_vocabulary(), 8)
  with pytest.raises(ValueError, match=r"characters \['#'\] outside"):
    dates.encode(['#3'], dates.input_vocabulary(), 8)


def test_short_run_learns_and_plots_masked_attention(dates, tmp_path):
  pytest.importorskip('matplotlib')
  plot = tmp_path / 'attention.png'
  results = dates.main(
    [
      '--train-samples=256',
      '--test-samples=32',
      '--steps=40',
      '--batch-size=32',
      '--learning-rate=1e-2',
      '--features=8',
      '--encoder-units=8',
      '--decoder-units=16',
      '--plot-examples=2',
      f'--plot={plot}',
      '--quiet',
    ]
  )
  losses = results['losses']
  assert len(losses) == 40
  assert np.mean(losses[-5:]) < 0.8 * losses[0]
  assert 0.0 <= results['accuracy'] <= results['character_accuracy'] <= 1.0
  weights, inputs = results['attention'], results['test_inputs']
  length = dates.input_length()
  assert weights.shape == (2, length, length)
  # Each decoder step spreads its attention over the real characters only.
  padding = inputs[:, None, :] == 0
  assert np.all(weights[np.broadcast_to(padding, weights.shape)] == 0)
  np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
  assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
