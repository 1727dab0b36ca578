"""Sharded per-position training on 1 process x 8 devices vs 2 processes x 4.

Runs ``examples/train_sharded.py`` (PerPositionDense, Adam, a ``('data',
'model')`` mesh of 2 x 4) as one process with 8 simulated CPU devices and
as two local processes with 4 each, joined by ``jax.distributed`` over
127.0.0.1 with gloo collectives; one process with one device is the
reference without collectives. Each run reports its median step time
(steps after the first two, which compile: the jitted step up to reading
its loss), its median time to make and place its process's rows of the
batch, and what each process holds: its bytes of the batch and of the train
state on its devices, and its peak resident memory. The topologies are run
in turn within each repeat (``timing.interleave``), and medians over repeats
are kept, with each time over 1 x 8's in the same repeat, so other processes
sharing the CPU slow all alike.

Simulated CPU devices share this machine's cores, so these figures price
the machinery (the gloo all-reduce across processes, a second Python and
XLA runtime) rather than predict a cluster's speed.

Usage::

  python benchmarks/multiprocess.py            # full run, ~6 min
  python benchmarks/multiprocess.py --quick    # tiny sizes, one repeat

Prints a table and writes ``multiprocess.json`` under ``--out`` (default
``benchmarks/results``).
"""

import os
import sys
import time

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'examples')
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common  # noqa: E402
import timing  # noqa: E402
import train_sharded  # noqa: E402

SIZE_KEYS = ('batch', 'positions', 'in_features', 'classes')
#: (processes, devices per process), all on one ('data', 'model') mesh of
#: 2 x 4 but the reference, which has one device.
TOPOLOGIES = ((1, 8), (2, 4), (1, 1))
BASELINE = '1x8'
FULL = {
  # The example's task, and one with more arithmetic per step.
  'sizes': [(256, 64, 32, 10), (512, 128, 128, 64)],
  'steps': 30,
  'repeats': 3,
}
QUICK = {'sizes': [(16, 8, 4, 3)], 'steps': 6, 'repeats': 1}


def name(processes, devices):
  return f'{processes}x{devices}'


def launch(size, processes, devices, steps, launches):
  """The :func:`timing.interleave` round of one topology.

  A round launches the example once and returns its median step and feed
  seconds (the example times its own steps) and the launch's wall time;
  the results of every launch are appended to ``launches``.
  """
  batch, positions, in_features, classes = size

  def one_round():
    start = time.perf_counter()
    results = train_sharded.main(
      [f'--batch-size={batch}', f'--positions={positions}']
      + [f'--in-features={in_features}', f'--classes={classes}']
      + [f'--train-samples={batch * 4}', f'--test-samples={batch}']
      + [f'--steps={steps}', '--quiet']
      + [f'--processes={processes}', f'--devices-per-process={devices}']
      # A launch that hangs (a collective waiting on a starved peer) fails
      # within minutes, not the example's default quarter of an hour.
      + ['--timeout=240']
    )
    wall = time.perf_counter() - start
    launches.append(results)
    return {
      'step': results['step_seconds'],
      'feed': results['feed_seconds'],
      'launch_wall': wall,
    }

  return one_round


def bench_size(size, steps, repeats):
  """Every topology at ``size``, interleaved over ``repeats``."""
  launches = {topology: [] for topology in TOPOLOGIES}
  rounds = {
    name(*topology): launch(size, *topology, steps, launches[topology])
    for topology in TOPOLOGIES
  }
  # Every launch compiles its own programs: no warm-up round.
  summaries = timing.summarize(
    timing.interleave(rounds, repeats, warmups=0), BASELINE
  )
  records = {}
  for (processes, devices), runs in launches.items():
    first = runs[0]
    records[name(processes, devices)] = {
      'processes': processes,
      'devices_per_process': devices,
      'mesh': first['mesh'],
      **summaries[name(processes, devices)],
      'final_loss': first['losses'][-1],
      'global_batch_bytes': first['global_batch_bytes'],
      'global_state_bytes': first['global_state_bytes'],
      'per_process': [
        {
          key: process[key]
          for key in ('batch_bytes', 'state_bytes', 'max_rss_bytes')
        }
        for process in first['processes']
      ],
    }
  return records


def print_table(results):
  print(
    f'{"B, P, D, K":<20} {"topology":<9} {"step ms":>9} {"/1x8":>6}'
    f' {"feed ms":>8}'
    f' {"batch KiB/proc":>15} {"state KiB/proc":>15} {"RSS MiB/proc":>13}'
  )
  for entry in results['sizes']:
    size = ', '.join(str(entry[key]) for key in SIZE_KEYS)
    for name, record in entry['topologies'].items():
      per_process = record['per_process']
      print(
        f'{size:<20} {name:<9} {record["step_median_s"] * 1e3:>9.2f}'
        f' {record["step_over_baseline"]:>6.2f}'
        f' {record["feed_median_s"] * 1e3:>8.2f}'
        f' {max(p["batch_bytes"] for p in per_process) / 1024:>15.1f}'
        f' {max(p["state_bytes"] for p in per_process) / 1024:>15.1f}'
        f' {max(p["max_rss_bytes"] for p in per_process) / 2**20:>13.0f}'
      )


def main(argv=None):
  args = bench_common.parser(
    __doc__,
    quick_help='tiny sizes, one repeat',
    out_help='directory for multiprocess.json',
    repeats_help='rounds of all topologies',
  ).parse_args(argv)
  config = bench_common.config(args, FULL, QUICK)
  results = {
    **bench_common.new_results(
      config, argv, bench_common.machine_info(devices=False)
    ),
    'sizes': [],
  }
  for size in config['sizes']:
    print(f'size {size} ...', flush=True)
    results['sizes'].append(
      {
        **dict(zip(SIZE_KEYS, size, strict=True)),
        'topologies': bench_size(size, config['steps'], config['repeats']),
      }
    )
  print_table(results)
  bench_common.save_results(results, args.out, 'multiprocess')
  return results


if __name__ == '__main__':
  main()
