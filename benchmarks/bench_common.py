"""What every benchmark here records besides its timings, and how it saves.

Each benchmark script imports this module from its own folder; the results
files all start with the same header (date, command, machine, config) and
end with the run's duration.
"""

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time

import flax
import jax
import jaxlib
import numpy as np
import optax


def machine_info(devices: bool = True, packages: tuple[str, ...] = ()) -> dict:
  """The machine and the versions a result was measured with.

  Args:
    devices: also record JAX's backend and devices, which initialises the
      backend (a launcher of other processes leaves it off).
    packages: more packages whose versions to record (imported here).
  """
  info = {
    'platform': platform.platform(),
    'processor': platform.processor() or platform.machine(),
    'cpu_count': os.cpu_count(),
    'load_average_1min': os.getloadavg()[0],
    'load_average_1_5_15min': list(os.getloadavg()),
    'jax': jax.__version__,
    'jaxlib': jaxlib.__version__,
    'flax': flax.__version__,
    'optax': optax.__version__,
    'python': sys.version.split()[0],
  }
  for name in packages:
    info[name] = importlib.import_module(name).__version__
  if devices:
    info['backend'] = jax.default_backend()
    info['devices'] = [str(device) for device in jax.devices()]
  return info


def new_results(config: dict, argv: list[str] | None, machine: dict) -> dict:
  """The header of a results file (``machine`` from :func:`machine_info`)."""
  return {
    'date': datetime.date.today().isoformat(),
    'command': ' '.join(
      [os.path.basename(sys.executable), *(sys.argv if argv is None else argv)]
    ),
    'machine': machine,
    'config': config,
    'started': time.time(),
  }


def save_results(results: dict, out: str, name: str) -> str:
  """Closes ``results`` (load at the end, seconds) and writes ``name.json``."""
  results['load_average_1min_end'] = os.getloadavg()[0]
  results['seconds'] = time.time() - results.pop('started')
  path = os.path.join(out, f'{name}.json')
  with open(path, 'w') as f:
    json.dump(results, f, indent=1)
  print(f'wrote {path} in {results["seconds"]:.0f} s')
  return path


def parser(
  description: str, quick_help: str, out_help: str, repeats_help: str
) -> argparse.ArgumentParser:
  """The options every benchmark takes: ``--quick``, ``--out``, ``--repeats``."""
  parser = argparse.ArgumentParser(description=description.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help=quick_help)
  parser.add_argument(
    '--out',
    default=os.path.join(os.path.dirname(__file__), 'results'),
    help=out_help,
  )
  parser.add_argument('--repeats', type=int, help=repeats_help)
  return parser


def config(args: argparse.Namespace, full: dict, quick: dict) -> dict:
  """The sizes and counts to run: ``quick`` or ``full``, ``--repeats`` applied.

  Also makes the ``--out`` folder.
  """
  chosen = dict(quick if args.quick else full)
  if args.repeats:
    chosen['repeats'] = args.repeats
  os.makedirs(args.out, exist_ok=True)
  return chosen


def relative_error(got, want) -> float:
  """The largest absolute difference over the largest ``|want|``, in float64."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def train_step(loss_fn, optimizer):
  """An optax step of ``loss_fn(params, *batch) -> scalar``.

  The step maps ``(params, opt_state, *batch)`` to ``(params, opt_state,
  loss)`` (jit it with ``donate_argnums=(0, 1)`` and time it with
  ``timing.time_calls(..., carry=2)``).
  """

  def step(params, opt_state, *batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step
