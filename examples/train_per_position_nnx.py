"""Per-position weights versus one shared Linear, with Flax NNX.

The task of ``train_per_position.py`` (the same data from the same seed and
flags): every position p of a sequence has its own true linear map W_p and
the label of position p is argmax(x_p @ W_p). ``fd.nnx.PerPositionDense``
can learn all of them; one ``nnx.Linear`` shared by every position cannot.
Both are trained with ``nnx.Optimizer`` over optax's Adam, one step per
``nnx.jit`` call, then evaluated on held-out data.

Runs on CPU by default and unchanged on GPU/TPU.

  python examples/train_per_position_nnx.py --help
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from tqdm import tqdm

import flax_dense as fd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_per_position import add_task_flags, plot, sample  # noqa: E402


def loss_fn(model, x, y):
  logits = model(x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
  """One Adam step on a batch, updating ``model`` in place; returns the loss."""
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def accuracy(model, x, y):
  return jnp.mean(jnp.argmax(model(x), -1) == y)


def train(model, inputs, labels, test_inputs, test_labels, args, name):
  """Trains ``model`` (logits out) with Adam; returns losses and accuracy.

  The batches are those of ``train_per_position.train``: batch ``step`` is
  slice ``step % batches`` of the training set, so a model with the same
  initial weights follows the linen example's losses step for step.
  """
  optimizer = nnx.Optimizer(
    model, optax.adam(args.learning_rate), wrt=nnx.Param
  )
  losses = []
  batches = inputs.shape[0] // args.batch_size
  for step in tqdm(range(args.steps), desc=name, disable=args.quiet):
    start = (step % batches) * args.batch_size
    x = inputs[start : start + args.batch_size]
    y = labels[start : start + args.batch_size]
    losses.append(float(train_step(model, optimizer, x, y)))
  return losses, float(accuracy(model, test_inputs, test_labels))


def task(args):
  """The training and held-out sets of ``train_per_position.main``.

  Returns:
    ``(inputs, labels, test_inputs, test_labels)``: inputs ``(N, P, D)``,
    labels ``(N, P)``.
  """
  map_key, train_key, test_key = jax.random.split(jax.random.key(args.seed), 3)
  true_maps = jax.random.normal(
    map_key, (args.positions, args.in_features, args.classes)
  )
  return (
    *sample(train_key, true_maps, args.train_samples),
    *sample(test_key, true_maps, args.test_samples),
  )


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_task_flags(parser, steps=600)
  parser.add_argument(
    '--plot', default='outputs/per_position_nnx_loss.png', help='loss-curve PNG'
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  return parser.parse_args(argv)


def main(argv=None):
  """Trains both models; returns ``{name: {'accuracy', 'losses'}}``."""
  args = parse(argv)
  inputs, labels, test_inputs, test_labels = task(args)

  print(
    f'JAX backend: {jax.default_backend()}; task: {args.positions}'
    f' positions x {args.in_features} features -> {args.classes} classes'
  )
  rngs = nnx.Rngs(args.seed)
  models = {
    'PerPositionDense': fd.nnx.PerPositionDense(
      args.positions, args.in_features, args.classes, rngs=rngs
    ),
    'shared nnx.Linear': nnx.Linear(args.in_features, args.classes, rngs=rngs),
  }
  curves, results = {}, {}
  for name, model in models.items():
    start = time.perf_counter()
    losses, acc = train(
      model, inputs, labels, test_inputs, test_labels, args, name
    )
    curves[name] = losses
    results[name] = {'accuracy': acc, 'losses': losses}
    params = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(
      f'{name:>18}: held-out accuracy {acc:.3f}, {params:,} params,'
      f' {time.perf_counter() - start:.1f} s'
    )
  print(f'chance level: {1 / args.classes:.3f}')
  plot(curves, args.plot)
  print(f'loss curves saved to {args.plot}')
  return results


if __name__ == '__main__':
  main()
