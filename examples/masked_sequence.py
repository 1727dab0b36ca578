"""Sequence labelling on padded variable-length sequences, mask made explicit.

Every sequence has its own length; all are padded to ``--max-length`` steps
with ``--mask-value``. The model is the Keras classic
``Masking -> PerPositionDense(classes, 'softmax')``, and the mask Keras
would carry as hidden state is a value here: ``fd.compute_mask`` gives it
and ``fd.masked_sparse_categorical_crossentropy`` consumes it, so padded
steps count for nothing in the loss, the gradient or the accuracy. The label
of a real step p is ``argmax(x_p @ W_p)`` for a hidden map W_p per position.

Trained with optax; runs on CPU in seconds by default.

  python examples/masked_sequence.py --help
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

import flax_dense as fd


class Tagger(nn.Module):
  """Masking, then one softmax classifier per position."""

  classes: int
  mask_value: float = 0.0
  from_logits: bool = False

  @nn.compact
  def __call__(self, inputs):
    x = fd.Masking(self.mask_value)(inputs)
    activation = None if self.from_logits else 'softmax'
    return fd.PerPositionDense(self.classes, activation=activation)(x)


def padded_sequences(rng, true_maps, samples, mask_value):
  """Inputs (N, T, D) padded with ``mask_value``, labels (N, T) with -1.

  Drawn with NumPy on the host: data needs no compiling.
  """
  max_length, in_features, _ = true_maps.shape
  lengths = rng.integers(1, max_length + 1, samples)
  real = np.arange(max_length)[None, :] < lengths[:, None]
  inputs = rng.normal(size=(samples, max_length, in_features))
  labels = np.argmax(np.einsum('ntd,tdk->ntk', inputs, true_maps), axis=-1)
  inputs = np.where(real[..., None], inputs, mask_value).astype(np.float32)
  return jnp.asarray(inputs), jnp.asarray(np.where(real, labels, -1))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--max-length', type=int, default=12)
  parser.add_argument('--in-features', type=int, default=8)
  parser.add_argument('--classes', type=int, default=4)
  parser.add_argument('--mask-value', type=float, default=0.0)
  parser.add_argument('--train-samples', type=int, default=4096)
  parser.add_argument('--test-samples', type=int, default=1024)
  parser.add_argument('--batch-size', type=int, default=128)
  parser.add_argument('--steps', type=int, default=400)
  parser.add_argument('--learning-rate', type=float, default=0.05)
  parser.add_argument(
    '--from-logits',
    action='store_true',
    help='activation=None and the logits form of the loss (optax-based)',
  )
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  args = parser.parse_args(argv)

  rng = np.random.default_rng(args.seed)
  true_maps = rng.normal(size=(args.max_length, args.in_features, args.classes))
  inputs, labels = padded_sequences(
    rng, true_maps, args.train_samples, args.mask_value
  )
  test_inputs, test_labels = padded_sequences(
    rng, true_maps, args.test_samples, args.mask_value
  )
  model = Tagger(args.classes, args.mask_value, args.from_logits)

  def loss_fn(params, x, y):
    predictions = model.apply({'params': params}, x)
    mask = fd.compute_mask(x, args.mask_value)
    return fd.masked_sparse_categorical_crossentropy(
      y, predictions, mask, from_logits=args.from_logits
    )

  @jax.jit
  def accuracy(params, x, y):
    predictions = model.apply({'params': params}, x)
    mask = fd.compute_mask(x, args.mask_value)
    return fd.masked_sparse_categorical_accuracy(y, predictions, mask)

  params = model.init(jax.random.key(args.seed), inputs[:1])['params']
  optimizer = optax.adam(args.learning_rate)
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  real_steps = int(jnp.sum(labels >= 0))
  print(
    f'JAX backend: {jax.default_backend()}; {args.train_samples} sequences'
    f' of 1..{args.max_length} steps padded to {args.max_length}'
    f' ({1 - real_steps / labels.size:.0%} of the steps are padding)'
  )
  start = time.perf_counter()
  losses = []
  batches = args.train_samples // args.batch_size
  for step in tqdm(range(args.steps), desc='train', disable=args.quiet):
    begin = (step % batches) * args.batch_size
    x = inputs[begin : begin + args.batch_size]
    y = labels[begin : begin + args.batch_size]
    params, opt_state, loss = train_step(params, opt_state, x, y)
    losses.append(float(loss))
  test_accuracy = float(accuracy(params, test_inputs, test_labels))
  print(
    f'masked loss {losses[0]:.3f} -> {losses[-1]:.3f}; held-out accuracy on'
    f' real steps {test_accuracy:.3f} (chance {1 / args.classes:.3f});'
    f' {time.perf_counter() - start:.1f} s'
  )

  # The padded steps' labels are arbitrary: replacing them changes nothing.
  relabelled = jnp.where(
    test_labels >= 0,
    test_labels,
    rng.integers(0, args.classes, test_labels.shape),
  )
  value_grad = jax.jit(jax.value_and_grad(loss_fn))
  (loss, grads), (other_loss, other_grads) = (
    value_grad(params, test_inputs, test_labels),
    value_grad(params, test_inputs, relabelled),
  )
  invariant = bool(loss == other_loss) and all(
    bool(jnp.array_equal(a, b))
    for a, b in zip(
      jax.tree.leaves(grads), jax.tree.leaves(other_grads), strict=True
    )
  )
  print(f'loss and gradient independent of the padded labels: {invariant}')
  return {
    'accuracy': test_accuracy,
    'first_loss': losses[0],
    'final_loss': losses[-1],
    'padding_invariant': invariant,
    'padding_fraction': 1 - real_steps / labels.size,
  }


if __name__ == '__main__':
  main()
