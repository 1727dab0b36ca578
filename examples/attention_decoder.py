"""Reverses sequences of digits with an AttentionDecoder, and plots where it looks.

The task of the Keras attention tutorial, made small: the input is a sequence
of random digits, the target the same digits in reverse order. Digit and
position embeddings feed a ``fd.AttentionDecoder``, trained with optax; the
decoder must learn to attend to the last timestep first, then step backwards,
so the attention weights of a trained model form an anti-diagonal. The script
prints the held-out accuracy per digit (chance: 1 / 10) and per whole
sequence, and saves a heat map of the attention weights of one example.

Runs on CPU by default and unchanged on GPU/TPU.

  python examples/attention_decoder.py --help
"""

import argparse
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

import flax_dense as fd

DIGITS = 10


class Reverser(nn.Module):
  """Embeddings of digits and positions, then an attention decoder.

  Maps digits ``(..., T)`` to label distributions ``(..., T, 10)``, or to the
  attention weights ``(..., T, T)`` with ``return_probabilities``; both share
  the same params.
  """

  timesteps: int
  features: int
  units: int
  return_probabilities: bool = False

  @nn.compact
  def __call__(self, digits: jax.Array) -> jax.Array:
    # The positions tell the decoder where each encoder state sits, so that
    # it can find "the last one" whatever the digits are.
    positions = jnp.broadcast_to(jnp.arange(self.timesteps), digits.shape)
    positions = nn.Embed(self.timesteps, self.features)(positions)
    states = nn.Embed(DIGITS, self.features)(digits) + positions
    return fd.AttentionDecoder(
      self.units, DIGITS, return_probabilities=self.return_probabilities
    )(jnp.tanh(states))


def sample(key, samples, timesteps):
  """Digits (N, T) and their reversal (N, T)."""
  digits = jax.random.randint(key, (samples, timesteps), 0, DIGITS)
  return digits, digits[:, ::-1]


def train(model, args):
  """Trains ``model`` with Adam; returns its params and the losses."""
  init_key, data_key = jax.random.split(jax.random.key(args.seed))
  example = jnp.zeros((1, args.timesteps), int)
  params = jax.jit(model.init)(init_key, example)['params']
  optimizer = optax.adam(args.learning_rate)
  opt_state = optimizer.init(params)

  def loss_fn(params, digits, targets):
    probabilities = model.apply({'params': params}, digits)
    # The decoder emits probabilities: their log are logits up to a constant.
    logits = jnp.log(probabilities + 1e-9)
    return optax.softmax_cross_entropy_with_integer_labels(
      logits, targets
    ).mean()

  @jax.jit
  def train_step(params, opt_state, key):
    digits, targets = sample(key, args.batch_size, args.timesteps)
    loss, grads = jax.value_and_grad(loss_fn)(params, digits, targets)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  progress = tqdm(range(args.steps), desc='training', disable=args.quiet)
  for step in progress:
    params, opt_state, loss = train_step(
      params, opt_state, jax.random.fold_in(data_key, step)
    )
    losses.append(float(loss))
    if step % 100 == 0:
      progress.set_postfix(loss=f'{losses[-1]:.3f}')
  return params, losses


def plot_attention(weights, digits, predicted, path):
  """Heat map of one example's attention weights (decoder step x timestep)."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  timesteps = len(digits)
  fig, ax = plt.subplots(figsize=(5, 4.5))
  image = ax.imshow(weights, cmap='viridis', vmin=0, vmax=1)
  ax.set_xticks(range(timesteps), [str(int(d)) for d in digits])
  ax.set_yticks(range(timesteps), [str(int(d)) for d in predicted])
  ax.set_xlabel('input digit (encoder timestep)')
  ax.set_ylabel('predicted digit (decoder step)')
  ax.set_title('AttentionDecoder weights, reversing digits')
  fig.colorbar(image, ax=ax, label='attention weight')
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--timesteps', type=int, default=8)
  parser.add_argument('--features', type=int, default=32)
  parser.add_argument('--units', type=int, default=64)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--learning-rate', type=float, default=1e-2)
  parser.add_argument('--test-samples', type=int, default=2048)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--plot',
    default='outputs/attention_decoder.png',
    help='attention heat-map PNG',
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  args = parser.parse_args(argv)

  print(
    f'JAX backend: {jax.default_backend()}; task: reverse {args.timesteps}'
    f' digits; AttentionDecoder(units={args.units}, output_dim={DIGITS})'
  )
  model = Reverser(args.timesteps, args.features, args.units)
  start = time.perf_counter()
  params, _ = train(model, args)
  train_seconds = time.perf_counter() - start

  digits, targets = sample(
    jax.random.key(args.seed + 1), args.test_samples, args.timesteps
  )
  predicted = jnp.argmax(model.apply({'params': params}, digits), axis=-1)
  digit_accuracy = float(jnp.mean(predicted == targets))
  sequence_accuracy = float(jnp.mean(jnp.all(predicted == targets, axis=-1)))
  print(
    f'held-out accuracy: {digit_accuracy:.3f} per digit (chance'
    f' {1 / DIGITS:.3f}), {sequence_accuracy:.3f} per whole sequence;'
    f' trained in {train_seconds:.1f} s (compilation included)'
  )

  attention = model.clone(return_probabilities=True)
  weights = attention.apply({'params': params}, digits[:1])[0]
  plot_attention(weights, digits[0], predicted[0], args.plot)
  print(f'attention heat map saved to {args.plot}')
  return {
    'digit_accuracy': digit_accuracy,
    'sequence_accuracy': sequence_accuracy,
  }


if __name__ == '__main__':
  main()
