"""Hidden units times constant weights, then their product: three variants.

The classic 75 -> Dense(75, tanh) -> Dense(3, tanh) -> product -> Dense(1)
network, with the product's weights

  1. frozen at given values (saved with the model, never trained),
  2. trainable from given values,
  3. trainable from a random (Keras-default) initialisation.

Prints each summary, then trains a frozen variant a few steps with optax
to show its constant weights stay fixed while the rest learns.

  python examples/const_product.py --help
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flax_dense as fd


class ProductNet(nn.Module):
  weights: object = None
  trainable: bool = False

  @nn.compact
  def __call__(self, x):
    x = nn.tanh(nn.Dense(75)(x))
    x = nn.tanh(nn.Dense(3)(x))
    x = fd.ConstProduct(self.weights, trainable=self.trainable)(x)
    return nn.Dense(1)(x)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--samples', type=int, default=512)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)

  given = [[0.0, 1.0, 2.0]]
  variants = {
    'frozen, given weights': ProductNet(given, trainable=False),
    'trainable, given weights': ProductNet(given, trainable=True),
    'trainable, random weights': ProductNet(None, trainable=True),
  }
  x = jnp.ones((1, 75))
  for name, model in variants.items():
    print(f'\n{name}')
    print(fd.summary(model, x))
    variables = model.init(jax.random.key(args.seed), x)
    collection = 'params' if model.trainable else fd.CONSTANTS
    weights = variables[collection]['ConstProduct_0']['kernel']
    print(f'product weights: {np.asarray(weights)}')

  # A zero weight makes the product identically zero, so train a frozen
  # variant whose weights are all non-zero.
  model = ProductNet([[0.5, 1.0, 2.0]], trainable=False)
  data_key, init_key = jax.random.split(jax.random.key(args.seed))
  inputs = jax.random.normal(data_key, (args.samples, 75))
  targets = jnp.prod(jnp.tanh(inputs[:, :3]), axis=-1, keepdims=True)
  variables = model.init(init_key, inputs)
  params, constants = variables['params'], variables['constants']
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  def loss_fn(params):
    pred = model.apply({'params': params, 'constants': constants}, inputs)
    return jnp.mean((pred - targets) ** 2)

  @jax.jit
  def train_step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  first_loss = float(loss_fn(params))
  for _ in range(args.steps):
    params, opt_state, loss = train_step(params, opt_state)
  print(
    f'\ntrained the frozen variant {args.steps} steps: loss'
    f' {first_loss:.4f} -> {float(loss):.4f}; constants still'
    f' {np.asarray(constants["ConstProduct_0"]["kernel"])}'
  )
  return first_loss, float(loss), constants


if __name__ == '__main__':
  main()
