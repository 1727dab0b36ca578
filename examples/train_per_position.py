"""Per-position weights versus one shared Dense on a sequence-labelling task.

Every position p of a sequence has its own true linear map W_p: the label of
position p is argmax(x_p @ W_p). A ``PerPositionDense`` layer can learn all of
them; a single ``nn.Dense`` shared by every position cannot. Both are trained
with the same optax optimizer and budget, then evaluated on held-out data.

Runs on CPU by default and unchanged on GPU/TPU.

  python examples/train_per_position.py --help
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


def sample(key, true_maps, samples):
  """Inputs (N, P, D) and labels (N, P) = argmax_k of x_p @ true_maps[p]."""
  positions, in_features, _ = true_maps.shape
  inputs = jax.random.normal(key, (samples, positions, in_features))
  labels = jnp.argmax(jnp.einsum('npd,pdk->npk', inputs, true_maps), axis=-1)
  return inputs, labels


def train(model, inputs, labels, test_inputs, test_labels, args, name):
  """Trains ``model`` (logits out) with Adam; returns losses and accuracy.

  With ``--checkpoint-dir``, params, optimizer state and losses are saved
  every ``--checkpoint-every`` steps and at the end, and training resumes
  from the newest checkpoint: batches depend on the step only, so a resumed
  run ends with exactly the parameters of an uninterrupted one.
  """
  key = jax.random.key(args.seed)
  params = model.init(key, inputs[:1])['params']
  optimizer = optax.adam(args.learning_rate)
  opt_state = optimizer.init(params)

  def loss_fn(params, x, y):
    logits = model.apply({'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def accuracy(params, x, y):
    logits = model.apply({'params': params}, x)
    return jnp.mean(jnp.argmax(logits, -1) == y)

  losses, first_step = [], 0
  checkpoint = args.checkpoint_dir and os.path.join(
    args.checkpoint_dir, name.replace(' ', '_')
  )
  # Checkpoints are saved after a step, so a saved step is at least 1.
  saved_step = checkpoint and fd.checkpoint.latest_step(checkpoint)
  if saved_step:
    first_step = saved_step
    saved = fd.checkpoint.restore(
      checkpoint,
      target={
        'params': params,
        'opt_state': opt_state,
        'losses': jax.ShapeDtypeStruct((first_step,), jnp.float32),
      },
    )
    params, opt_state = saved['params'], saved['opt_state']
    losses = [float(loss) for loss in saved['losses']]
    print(f'{name}: resumed at step {first_step} from {checkpoint}')
  batches = inputs.shape[0] // args.batch_size
  for step in tqdm(
    range(first_step, args.steps),
    desc=name,
    disable=args.quiet,
    initial=first_step,
    total=args.steps,
  ):
    start = (step % batches) * args.batch_size
    x = inputs[start : start + args.batch_size]
    y = labels[start : start + args.batch_size]
    params, opt_state, loss = train_step(params, opt_state, x, y)
    losses.append(float(loss))
    done = step + 1
    if checkpoint and (done % args.checkpoint_every == 0 or done == args.steps):
      state = {
        'params': params,
        'opt_state': opt_state,
        'losses': jnp.asarray(losses, jnp.float32),
      }
      # The loss history grows with every save: a deliberate change of the
      # stored structure, which save refuses unless told.
      fd.checkpoint.save(checkpoint, state, step=done, overwrite=True)
  return losses, float(accuracy(params, test_inputs, test_labels))


def plot(curves, path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for name, losses in curves.items():
    ax.plot(losses, label=name)
  ax.set_xlabel('step')
  ax.set_ylabel('training loss (cross-entropy)')
  ax.set_yscale('log')
  ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def add_task_flags(parser, steps):
  """The flags of the per-position task and its training budget."""
  parser.add_argument('--positions', type=int, default=64)
  parser.add_argument('--in-features', type=int, default=32)
  parser.add_argument('--classes', type=int, default=10)
  parser.add_argument('--train-samples', type=int, default=8192)
  parser.add_argument('--test-samples', type=int, default=2048)
  parser.add_argument('--batch-size', type=int, default=256)
  parser.add_argument('--steps', type=int, default=steps)
  parser.add_argument('--learning-rate', type=float, default=1e-2)
  parser.add_argument('--seed', type=int, default=0)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  add_task_flags(parser, steps=600)
  parser.add_argument(
    '--plot', default='outputs/per_position_loss.png', help='loss-curve PNG'
  )
  parser.add_argument(
    '--checkpoint-dir',
    default=None,
    help='save checkpoints here (one folder per model) and resume from them',
  )
  parser.add_argument(
    '--checkpoint-every', type=int, default=100, help='steps between saves'
  )
  parser.add_argument('--quiet', action='store_true', help='no progress bar')
  args = parser.parse_args(argv)
  if args.checkpoint_every < 1:
    parser.error('--checkpoint-every must be a positive number of steps.')

  map_key, train_key, test_key = jax.random.split(jax.random.key(args.seed), 3)
  true_maps = jax.random.normal(
    map_key, (args.positions, args.in_features, args.classes)
  )
  inputs, labels = sample(train_key, true_maps, args.train_samples)
  test_inputs, test_labels = sample(test_key, true_maps, args.test_samples)

  print(
    f'JAX backend: {jax.default_backend()}; task: {args.positions}'
    f' positions x {args.in_features} features -> {args.classes} classes'
  )
  models = {
    'PerPositionDense': fd.PerPositionDense(args.classes),
    'shared nn.Dense': nn.Dense(args.classes),
  }
  curves, results = {}, {}
  for name, model in models.items():
    start = time.perf_counter()
    losses, acc = train(
      model, inputs, labels, test_inputs, test_labels, args, name
    )
    curves[name] = losses
    params = fd.summary(model, inputs[:1]).total_params
    results[name] = acc
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
