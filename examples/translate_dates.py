"""Translates human-readable dates to ISO 8601 with attention, and plots it.

The Keras attention tutorial's task: dates written in many ways ("3 May
1979", "03/05/79", "Thursday, May 3, 1979", "may 3 1979", "1979.05.03", ...)
go in character by character, "1979-05-03" comes out. The dates are
generated with the standard library (``datetime``, ``random``), days from
1950 to 2049 so that a two-digit year names one century (50-99: 19xx,
00-49: 20xx); numeric formats put the day first, so none is ambiguous.

Model: ``fd.Embedding(mask_zero=True)`` -> ``fd.Bidirectional(fd.LSTM(...,
return_sequences=True))`` -> ``fd.AttentionDecoder``, trained with optax's
Adam on the cross-entropy of the decoder's distributions.

The decoder emits one distribution per *input* step (it decodes T steps
for T encoder states), while every output has 10 characters and the
inputs are longer: up to 29. So the inputs are padded with id 0 to a fixed
length T >= 10 (masked: the encoder and the attention skip the padding),
and the loss and the accuracy read only the first 10 decoder steps; the
steps after them are never trained and are dropped. Padding the targets to
T with an end symbol would work too, but would spend most of the loss on
teaching the decoder to repeat that symbol.

The script prints the held-out accuracy over whole dates (all 10
characters right; the held-out strings never occur in training) and per
character, and saves a heat map of the attention weights of a few held-out
examples: ``model.clone(return_probabilities=True)`` applied with the
trained variables.

Runs on CPU by default and unchanged on GPU/TPU.

  python examples/translate_dates.py --help
"""

import argparse
import datetime
import os
import random
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import flax_dense as fd

MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
]
WEEKDAYS = [
  'Monday',
  'Tuesday',
  'Wednesday',
  'Thursday',
  'Friday',
  'Saturday',
  'Sunday',
]
FIRST_DAY = datetime.date(1950, 1, 1)
DAYS = (datetime.date(2049, 12, 31) - FIRST_DAY).days + 1
OUTPUT_LENGTH = len('1979-05-03')
# Id 0 is padding in both vocabularies, so the input mask is ids != 0.
PAD = '\0'
OUTPUT_VOCABULARY = PAD + '-0123456789'


def ordinal(day: int) -> str:
  """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
  if 11 <= day <= 13:
    return f'{day}th'
  return f'{day}{ {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th") }'


def formats(date: datetime.date) -> list[str]:
  """``date`` written in every human format the task uses."""
  day, month, year = date.day, MONTHS[date.month - 1], date.year
  short = month[:3]
  weekday = WEEKDAYS[date.weekday()]
  dd, mm, yy = f'{day:02d}', f'{date.month:02d}', f'{year % 100:02d}'
  return [
    f'{day} {month} {year}',  # 3 May 1979
    f'{dd}/{mm}/{yy}',  # 03/05/79
    f'{weekday}, {month} {day}, {year}',  # Thursday, May 3, 1979
    f'{month.lower()} {day} {year}',  # may 3 1979
    f'{year}.{mm}.{dd}',  # 1979.05.03
    f'{dd} {short} {year}',  # 03 May 1979
    f'{short} {day}, {year}',  # May 3, 1979
    f'{day}/{date.month}/{year}',  # 3/5/1979
    f'{dd}.{mm}.{yy}',  # 03.05.79
    f'{weekday.upper()} {day} {month.upper()} {year}',  # THURSDAY 3 MAY 1979
    f'{ordinal(day)} of {month} {year}',  # 3rd of May 1979
    f'{day} {short.lower()} {yy}',  # 3 may 79
    f'{weekday[:3]} {dd}-{short}-{year}',  # Thu 03-May-1979
  ]


def sample_dates(rng: random.Random, samples: int) -> list[tuple[str, str]]:
  """``samples`` pairs (human date, ISO date), day and format at random."""
  pairs = []
  for _ in range(samples):
    date = FIRST_DAY + datetime.timedelta(days=rng.randrange(DAYS))
    pairs.append((rng.choice(formats(date)), date.isoformat()))
  return pairs


def all_formats_of_a_year() -> list[str]:
  """Every day of 2000 in every format: all months, weekdays and widths."""
  first = datetime.date(2000, 1, 1)
  return [
    text
    for day in range(366)
    for text in formats(first + datetime.timedelta(days=day))
  ]


def input_vocabulary() -> str:
  """Every character a format can write, after the padding id 0."""
  characters = set(''.join(all_formats_of_a_year())) | set('0123456789')
  return PAD + ''.join(sorted(characters))


def input_length() -> int:
  """The longest human date, in characters."""
  return max(len(text) for text in all_formats_of_a_year())


def encode(texts: list[str], vocabulary: str, length: int) -> np.ndarray:
  """Ids ``(N, length)`` of ``texts``, padded with id 0 on the right.

  Raises:
    ValueError: for a text longer than ``length`` or a character not in
      ``vocabulary``: nothing is cut or replaced silently.
  """
  index = {character: i for i, character in enumerate(vocabulary)}
  ids = np.zeros((len(texts), length), np.int32)
  for row, text in enumerate(texts):
    if len(text) > length:
      raise ValueError(
        f'encode: {text!r} has {len(text)} characters, more than the'
        f' length {length}.'
      )
    unknown = sorted(set(text) - set(index))
    if unknown:
      raise ValueError(
        f'encode: {text!r} has characters {unknown} outside the vocabulary.'
      )
    ids[row, : len(text)] = [index[character] for character in text]
  return ids


def decode(ids: np.ndarray, vocabulary: str) -> list[str]:
  """Texts of ids ``(N, T)``, padding dropped."""
  return [
    ''.join(vocabulary[i] for i in row if i != 0) for row in np.asarray(ids)
  ]


def make_split(
  rng: random.Random, samples: int, length: int, vocabulary: str, exclude=()
) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Human dates, input ids ``(N, length)``, target ids ``(N, 10)``.

  Human dates in ``exclude`` are drawn again, so a held-out split shares
  no input with the training split.
  """
  excluded, pairs = set(exclude), []
  while len(pairs) < samples:
    pairs.extend(
      pair
      for pair in sample_dates(rng, samples - len(pairs))
      if pair[0] not in excluded
    )
  texts = [text for text, _ in pairs]
  inputs = encode(texts, vocabulary, length)
  targets = encode([iso for _, iso in pairs], OUTPUT_VOCABULARY, OUTPUT_LENGTH)
  return texts, inputs, targets


class DateTranslator(nn.Module):
  """Character ids ``(..., T)`` to distributions ``(..., T, 12)``.

  With ``return_probabilities`` the attention weights ``(..., T, T)``
  instead; both share the same params. Padding (id 0) is masked for the
  encoder and the attention.
  """

  input_size: int
  features: int = 32
  encoder_units: int = 32
  decoder_units: int = 64
  return_probabilities: bool = False

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    embedding = fd.Embedding(self.input_size, self.features, mask_zero=True)
    mask = embedding.compute_mask(ids)
    states = fd.Bidirectional(
      fd.LSTM(self.encoder_units, return_sequences=True)
    )(embedding(ids), mask)
    return fd.AttentionDecoder(
      self.decoder_units,
      len(OUTPUT_VOCABULARY),
      return_probabilities=self.return_probabilities,
    )(states, mask)


def loss_fn(model, params, inputs, targets):
  """Mean cross-entropy of the first 10 decoder steps."""
  probabilities = model.apply({'params': params}, inputs)[
    ..., :OUTPUT_LENGTH, :
  ]
  # The decoder emits probabilities: their logs are logits up to a constant.
  logits = jnp.log(probabilities + 1e-9)
  return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def train(model, inputs, targets, args):
  """Trains ``model`` with Adam; returns its params and the losses."""
  params = jax.jit(model.init)(jax.random.key(args.seed), inputs[:1])['params']
  optimizer = optax.adam(args.learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn, argnums=1)(model, params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  batches = len(inputs) // args.batch_size
  order = np.random.default_rng(args.seed).permutation(len(inputs))
  losses = []
  progress = tqdm(range(args.steps), desc='training', disable=args.quiet)
  for step in progress:
    if step % batches == 0 and step:
      order = np.random.default_rng(args.seed + step).permutation(len(inputs))
    batch = order[(step % batches) * args.batch_size :][: args.batch_size]
    params, opt_state, loss = train_step(
      params, opt_state, inputs[batch], targets[batch]
    )
    losses.append(float(loss))
    if step % 50 == 0:
      progress.set_postfix(loss=f'{losses[-1]:.3f}')
  return params, losses


def translate(model, params, inputs, batch_size=512):
  """Predicted target ids ``(N, 10)``."""
  predict = jax.jit(
    lambda x: jnp.argmax(
      model.apply({'params': params}, x)[..., :OUTPUT_LENGTH, :], axis=-1
    )
  )
  return np.concatenate(
    [
      predict(inputs[start : start + batch_size])
      for start in range(0, len(inputs), batch_size)
    ]
  )


def plot_attention(weights, texts, predictions, path):
  """One heat map per example: output character x input character."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(
    len(texts),
    1,
    figsize=(8, 0.6 + 2.6 * len(texts)),
    squeeze=False,
    layout='constrained',
  )
  images = []
  for ax, example, text, predicted in zip(
    axes[:, 0], weights, texts, predictions, strict=True
  ):
    images.append(
      ax.imshow(
        example[: len(predicted), : len(text)],
        cmap='viridis',
        vmin=0,
        vmax=1,
        aspect='auto',
      )
    )
    ax.set_xticks(range(len(text)), list(text))
    ax.set_yticks(range(len(predicted)), list(predicted))
    ax.set_title(f'{text!r} -> {predicted!r}', fontsize=9)
  fig.colorbar(images[-1], ax=axes[:, 0].tolist(), label='attention weight')
  fig.supxlabel('input character (encoder step)')
  fig.supylabel('output character (decoder step)')
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  """Trains, evaluates and plots; ``argv`` as on the command line.

  Returns a dict: ``accuracy`` (held-out whole dates), ``character_accuracy``,
  ``losses`` (one per step), ``train_seconds`` (compilation included), and
  the plotted examples' ``attention`` weights ``(E, T, T)`` with their
  ``test_inputs`` ids ``(E, T)``.
  """
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--train-samples', type=int, default=20000)
  parser.add_argument('--test-samples', type=int, default=2000)
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--learning-rate', type=float, default=1e-2)
  parser.add_argument('--features', type=int, default=32)
  parser.add_argument('--encoder-units', type=int, default=32)
  parser.add_argument('--decoder-units', type=int, default=64)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--plot-examples', type=int, default=4, help='examples in the heat map'
  )
  parser.add_argument(
    '--plot',
    default='outputs/translate_dates_attention.png',
    help='attention heat-map PNG',
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  args = parser.parse_args(argv)
  if args.batch_size > args.train_samples:
    parser.error('--batch-size must not exceed --train-samples.')

  vocabulary = input_vocabulary()
  length = input_length()
  rng = random.Random(args.seed)
  texts, inputs, targets = make_split(
    rng, args.train_samples, length, vocabulary
  )
  test_texts, test_inputs, test_targets = make_split(
    rng, args.test_samples, length, vocabulary, exclude=texts
  )
  print(
    f'JAX backend: {jax.default_backend()}; {args.train_samples} training'
    f' dates, e.g. {texts[0]!r} -> {decode(targets[:1], OUTPUT_VOCABULARY)[0]!r};'
    f' inputs padded to {length} characters'
  )
  model = DateTranslator(
    len(vocabulary), args.features, args.encoder_units, args.decoder_units
  )
  start = time.perf_counter()
  params, losses = train(model, inputs, targets, args)
  train_seconds = time.perf_counter() - start

  predicted = translate(model, params, test_inputs)
  accuracy = float(np.mean(np.all(predicted == test_targets, axis=-1)))
  character_accuracy = float(np.mean(predicted == test_targets))
  print(
    f'held-out accuracy: {accuracy:.3f} of whole dates,'
    f' {character_accuracy:.3f} per character; trained in'
    f' {train_seconds:.1f} s (compilation included)'
  )
  shown = slice(0, args.plot_examples)
  predictions = decode(predicted[shown], OUTPUT_VOCABULARY)
  for text, prediction in zip(test_texts[shown], predictions, strict=True):
    print(f'  {text!r:>34} -> {prediction}')

  attention = model.clone(return_probabilities=True)
  weights = attention.apply({'params': params}, test_inputs[shown])
  plot_attention(np.asarray(weights), test_texts[shown], predictions, args.plot)
  print(f'attention heat maps saved to {args.plot}')
  return {
    'accuracy': accuracy,
    'character_accuracy': character_accuracy,
    'losses': losses,
    'train_seconds': train_seconds,
    'attention': np.asarray(weights),
    'test_inputs': test_inputs[shown],
  }


if __name__ == '__main__':
  main()
