"""A Keras model imported, fine-tuned in JAX, handed back to Keras, exported.

1. Build a small Keras 3 model (Masking -> Dense -> per-position
   EinsumDense -> GlobalAveragePooling1D -> Dense; as in Keras, the mask
   ends at the EinsumDense) and import it with ``fd.from_keras``.
2. Fine-tune the Flax module with optax on padded sequences (the target is
   the mean of the kept steps' features).
3. Hand it back with ``fd.to_keras_model``: Keras's ``predict`` equals the
   trained Flax outputs; save it as a ``.keras`` file and reload it.
4. Export the trained Flax model with ``jax.export`` for a symbolic batch
   size and call it at two batch sizes (serialised too, when the optional
   ``flatbuffers`` package is installed).

Needs Keras 3 on the JAX backend (``KERAS_BACKEND=jax``).

  python examples/keras_round_trip.py --help
"""

import argparse
import importlib.util
import os
import pathlib
import tempfile

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import export  # noqa: E402
from tqdm import tqdm  # noqa: E402

import flax_dense as fd  # noqa: E402

STEPS, FEATURES = 6, 3


def keras_model() -> keras.Model:
  """The Keras model to import: masked steps, a per-position layer."""
  return keras.Sequential(
    [
      keras.Input((STEPS, FEATURES)),
      keras.layers.Masking(0.0, name='masking'),
      keras.layers.Dense(8, activation='tanh', name='encode'),
      keras.layers.EinsumDense(
        'abc,bcd->abd',
        output_shape=(STEPS, 8),
        bias_axes='bd',
        activation='relu',
        name='per_position',
      ),
      keras.layers.GlobalAveragePooling1D(name='pool'),
      keras.layers.Dense(1, name='head'),
    ],
    name='round_trip',
  )


def data(key: jax.Array, samples: int) -> tuple[np.ndarray, np.ndarray]:
  """Padded sequences and the mean over their kept steps of the features."""
  values_key, lengths_key = jax.random.split(key)
  x = np.array(jax.random.normal(values_key, (samples, STEPS, FEATURES)))
  lengths = np.array(jax.random.randint(lengths_key, (samples,), 2, STEPS + 1))
  kept = np.arange(STEPS)[None, :] < lengths[:, None]
  x = np.where(kept[..., None], x, 0.0).astype(np.float32)
  target = x.sum(axis=(1, 2)) / lengths
  return x, target[:, None].astype(np.float32)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--samples', type=int, default=256)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
    '--output',
    type=pathlib.Path,
    default=None,
    help='folder for the .keras file (default: a temporary one)',
  )
  parser.add_argument('--quiet', action='store_true')
  args = parser.parse_args(argv)
  keras.utils.set_random_seed(args.seed)
  output = args.output or pathlib.Path(tempfile.mkdtemp())
  output.mkdir(parents=True, exist_ok=True)

  module, variables = fd.from_keras(keras_model())
  x, y = data(jax.random.key(args.seed), args.samples)
  optimizer = optax.adam(1e-2)
  params = variables['params']
  opt_state = optimizer.init(params)

  def loss_fn(params):
    outputs = module.apply({**variables, 'params': params}, x)
    return jnp.mean(jnp.square(outputs - y))

  @jax.jit
  def train_step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  first_loss = float(loss_fn(params))
  for _ in tqdm(range(args.steps), desc='fine-tune', disable=args.quiet):
    params, opt_state, loss = train_step(params, opt_state)
  trained = {**variables, 'params': params}
  last_loss = float(loss_fn(params))
  flax_outputs = np.asarray(module.apply(trained, x))

  back = fd.to_keras_model(module, trained, input_shape=(STEPS, FEATURES))
  predict_diff = float(np.abs(back.predict(x, verbose=0) - flax_outputs).max())
  keras_path = output / 'round_trip.keras'
  back.save(keras_path)
  reloaded = keras.models.load_model(keras_path)
  reload_diff = float(
    np.abs(reloaded.predict(x, verbose=0) - flax_outputs).max()
  )

  # Serving: the Flax model for any batch size, one compiled program.
  (batch,) = export.symbolic_shape('batch')
  exported = export.export(jax.jit(module.apply))(
    trained, jax.ShapeDtypeStruct((batch, STEPS, FEATURES), jnp.float32)
  )
  serialized = importlib.util.find_spec('flatbuffers') is not None
  if serialized:
    blob = exported.serialize()
    (output / 'round_trip.jax_export').write_bytes(blob)
    exported = export.deserialize(blob)
  export_diff = max(
    float(np.abs(exported.call(trained, x[:size]) - flax_outputs[:size]).max())
    for size in (1, 7)
  )
  print(
    f'fine-tuned {args.steps} steps: loss {first_loss:.4f} ->'
    f' {last_loss:.4f}\nKeras predict vs Flax: max |diff| {predict_diff:.2e};'
    f' reloaded from {keras_path}: {reload_diff:.2e}\njax.export for a'
    f' symbolic batch {exported.in_avals[-1]}'
    f' ({"serialised" if serialized else "not serialised: no flatbuffers"}):'
    f' max |diff| {export_diff:.2e} at batch sizes 1 and 7'
  )
  return {
    'first_loss': first_loss,
    'last_loss': last_loss,
    'predict_diff': predict_diff,
    'reload_diff': reload_diff,
    'export_diff': export_diff,
    'keras_path': keras_path,
    'serialized': serialized,
    'layers': [layer.name for layer in back.layers],
  }


if __name__ == '__main__':
  main()
