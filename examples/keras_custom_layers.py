"""Importing Keras models that use layers of your own: a converter each.

``fd.from_keras`` knows the Keras layers listed in docs/keras_import.md. A
layer class you wrote yourself is imported once you register a converter
for it with ``fd.register_keras_layer``. A converter receives what Keras
keeps of the layer (class name, ``get_config()``, ``get_weights()``; the
same for a live model and an ``.h5`` file) and returns the Flax module it
becomes, with its variables.

This example registers converters for the two custom layers of the Keras
tutorials that flax_dense ships Flax counterparts of:

* ``ConstProductLayer``: multiplies its inputs by a non-trainable weight
  vector and takes their product, ``(..., N) -> (..., 1)``; it becomes
  ``fd.ConstProduct`` with the vector in the ``constants`` collection.
* ``MultiIOLayer``: the 2-in/2-out ``MyLayer``, ``[a, b] -> [a @ kernel + b,
  mean(b, -1)]``; it becomes ``fd.MultiIODense``.

Then it builds a functional Keras model with both, imports it for linen
and NNX, and checks every output against Keras. Run it with::

  python examples/keras_custom_layers.py
"""

import argparse
import os
from typing import Any

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import flax_dense as fd  # noqa: E402

# --- The Keras side: two custom layers, as a Keras user writes them. ------


@keras.saving.register_keras_serializable(package='flax_dense_example')
class ConstProductLayer(keras.layers.Layer):
  """``prod(inputs * kernel, axis=-1)`` with a frozen ``kernel`` (N,)."""

  def build(self, input_shape):
    self.kernel = self.add_weight(
      shape=(input_shape[-1],), initializer='ones', trainable=False
    )

  def call(self, inputs):
    return keras.ops.prod(inputs * self.kernel, axis=-1, keepdims=True)


@keras.saving.register_keras_serializable(package='flax_dense_example')
class MultiIOLayer(keras.layers.Layer):
  """``[a, b] -> [a @ kernel + b, mean(b, axis=-1)]``, kernel (D, units)."""

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units

  def build(self, input_shape):
    self.kernel = self.add_weight(shape=(input_shape[0][-1], self.units))

  def call(self, inputs):
    a, b = inputs
    return [a @ self.kernel + b, keras.ops.mean(b, axis=-1)]

  def get_config(self):
    return {**super().get_config(), 'units': self.units}


# --- The converters: Keras's class name, config and weights to Flax. ------


def const_product(
  class_name: str, config: dict[str, Any], weights: list[np.ndarray]
) -> tuple[fd.ConstProduct, dict[str, Any]]:
  """``ConstProductLayer`` as a frozen ``fd.ConstProduct``.

  Args:
    class_name: ``'ConstProductLayer'``.
    config: the layer's ``get_config()`` (unused: the weights say it all).
    weights: ``[kernel (N,)]``, the non-trainable weight.

  Returns:
    The module and its variables: the kernel as a constant, never trained.
  """
  del class_name, config
  (kernel,) = weights
  return fd.ConstProduct(weights=kernel, trainable=False), {
    fd.CONSTANTS: {'kernel': kernel}
  }


def multi_io(
  class_name: str, config: dict[str, Any], weights: list[np.ndarray]
) -> tuple[fd.MultiIODense, dict[str, Any]]:
  """``MultiIOLayer(units)`` as ``fd.MultiIODense(features=units)``.

  Args:
    class_name: ``'MultiIOLayer'``.
    config: the layer's ``get_config()``, holding ``units``.
    weights: ``[kernel (D, units)]``.

  Returns:
    The module, called as ``module(a, b)``, and its params.
  """
  del class_name
  (kernel,) = weights
  return fd.MultiIODense(features=config['units']), {
    'params': {'kernel': kernel}
  }


def register() -> None:
  """Teaches ``fd.from_keras`` both layers (by class; a name works too)."""
  fd.register_keras_layer(ConstProductLayer, const_product)
  fd.register_keras_layer(MultiIOLayer, multi_io)


def build_model(features: int, units: int, seed: int) -> keras.Model:
  """Two inputs; hidden units, their constant product, the 2-out layer."""
  a = keras.Input((features,), name='a')
  b = keras.Input((units,), name='b')
  hidden = keras.layers.Dense(units, activation='tanh', name='hidden')(a)
  product = ConstProductLayer(name='product')(hidden)
  projected, mean = MultiIOLayer(units, name='multi_io')([hidden, b])
  model = keras.Model([a, b], [product, projected, mean])
  rng = np.random.default_rng(seed)
  model.set_weights(
    [rng.normal(0, 0.5, w.shape).astype('float32') for w in model.weights]
  )
  return model


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Imports the model both ways and compares with Keras.

  Returns:
    ``{'linen': [max |difference| per output], 'nnx': [...], 'variables':
    {collection: {layer: {weight: shape}}}, 'constant_weights': [N values],
    'keras_file': [max |difference| per output of the reloaded .keras
    file]}``.
  """
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--features', type=int, default=6)
  parser.add_argument('--units', type=int, default=3)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--keras-file', default=None, help='also save and re-import this .keras'
  )
  args = parser.parse_args(argv)

  register()
  # JAX's default; Keras's own code relies on it (tests make it 'raise').
  with jax.numpy_rank_promotion('allow'):
    return _compare(args)


def _compare(args: argparse.Namespace) -> dict[str, Any]:
  model = build_model(args.features, args.units, args.seed)
  rng = np.random.default_rng(args.seed + 1)
  inputs = [
    rng.normal(size=(args.batch, args.features)).astype('float32'),
    rng.normal(size=(args.batch, args.units)).astype('float32'),
  ]
  want = [np.asarray(y) for y in model(inputs)]

  def differences(outputs):
    return [
      float(np.max(np.abs(np.asarray(got) - expected)))
      for got, expected in zip(outputs, want, strict=True)
    ]

  module, variables = fd.from_keras(model)
  results = {
    'linen': differences(module.apply(variables, *inputs)),
    'nnx': differences(fd.from_keras(model, api='nnx')(*inputs)),
    'variables': jax.tree.map(np.shape, variables),
    'constant_weights': np.asarray(
      variables[fd.CONSTANTS]['product']['kernel']
    ).tolist(),
  }
  if args.keras_file:
    model.save(args.keras_file)
    module, variables = fd.from_keras(args.keras_file)
    results['keras_file'] = differences(module.apply(variables, *inputs))
  for name, value in results.items():
    print(f'{name}: {value}')
  return results


if __name__ == '__main__':
  main()
