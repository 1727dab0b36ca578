"""How every benchmark here times its programs.

One method for all of them:

- compile ahead of time (:func:`compiled`) so that compiling is never timed,
  and time a call only once its outputs are ready (:func:`time_calls`);
- time the implementations in turn within each round, in a new order each
  round, and drop the first ``warmups`` rounds (:func:`interleave`), so that
  other processes on the machine slow all of them alike;
- keep every round's seconds, and report their median, minimum, spread and
  the median over rounds of the ratio to a baseline timed in the same round
  (:func:`summarize`): a load that changes between rounds cancels out of a
  ratio of two times taken seconds apart.

Example::

  forward, compile_s = timing.compiled(apply, params, x)
  samples = timing.interleave(
    {'ours': lambda: {'forward': timing.time_calls(forward, params, x)[1]},
     'theirs': ...},
    repeats=5, warmups=1,
  )
  records = timing.summarize(samples, baseline='ours')
  records['theirs']['forward_median_s'], records['theirs']['forward_over_baseline']
"""

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

#: One round of an implementation: runs its programs once and returns the
#: seconds of each, by metric name (e.g. ``{'forward': s, 'step': s}``).
Round = Callable[[], Mapping[str, float]]


def compiled(fn: Callable, *args: Any, **jit_kwargs: Any) -> tuple[Any, float]:
  """``fn`` jitted, lowered and compiled for ``args``, and the seconds it took.

  Args:
    fn: the function to compile.
    *args: example arguments (arrays or pytrees of them).
    **jit_kwargs: passed to ``jax.jit`` (e.g. ``donate_argnums``).

  Returns:
    ``(executable, seconds to lower and compile)``.
  """
  start = time.perf_counter()
  executable = jax.jit(fn, **jit_kwargs).lower(*args).compile()
  return executable, time.perf_counter() - start


def first_call(fn: Callable, *args: Any) -> tuple[Any, float]:
  """``(outputs, seconds)`` of a first call of ``fn``: trace, compile and run.

  For functions that cannot be compiled ahead of time (``nnx.jit`` of
  objects); the seconds include one run.
  """
  start = time.perf_counter()
  outputs = jax.block_until_ready(fn(*args))
  return outputs, time.perf_counter() - start


def time_calls(
  fn: Callable,
  *args: Any,
  calls: int = 1,
  carry: int = 0,
  settle_s: float = 0.0,
) -> tuple[Any, float, float]:
  """Wall and process CPU seconds per call of ``fn``, its outputs ready.

  ``calls`` calls are made back to back and waited for once at the end, so
  that on an accelerator the time is the device's, not the Python dispatch
  of one call.

  Args:
    fn: the (compiled) function.
    *args: its arguments.
    calls: how many calls to make.
    carry: how many leading outputs are passed back as the leading
      arguments of the next call (a training step ``(params, opt_state,
      ...) -> (params, opt_state, loss)`` has ``carry=2``), so that buffers
      it donates are never used again.
    settle_s: idle seconds before the clock starts, so that a program timed
      right after another does not pay for what that one left behind (on
      the CPU, threads still spinning).

  Returns:
    ``(outputs of the last call, wall seconds per call, CPU seconds per
    call)``.
  """
  if calls < 1:
    raise ValueError(f'time_calls: calls must be at least 1, not {calls}')
  if settle_s:
    time.sleep(settle_s)
  wall, cpu = time.perf_counter(), time.process_time()
  outputs = None
  for _ in range(calls):
    outputs = fn(*args)
    if carry:
      args = (*outputs[:carry], *args[carry:])
  outputs = jax.block_until_ready(outputs)
  return (
    outputs,
    (time.perf_counter() - wall) / calls,
    (time.process_time() - cpu) / calls,
  )


def interleave(
  rounds: Mapping[str, Round], repeats: int, warmups: int = 1
) -> dict[str, dict[str, list[float]]]:
  """Runs every implementation's round in turn, ``warmups + repeats`` times.

  The order is shuffled each round (seeded by the round, so runs repeat):
  in a fixed order each implementation would always follow the same one and
  pay for what it leaves behind.

  Args:
    rounds: ``{name: round}``; a round runs the implementation's programs
      once and returns ``{metric: seconds}`` (it keeps its own state, such
      as a training state, between rounds).
    repeats: rounds kept.
    warmups: first rounds run but not kept.

  Returns:
    ``{name: {metric: [seconds in each kept round]}}``, rounds in order.
  """
  if repeats < 1:
    raise ValueError(f'interleave: repeats must be at least 1, not {repeats}')
  names = list(rounds)
  samples = {name: {} for name in names}
  for index in range(warmups + repeats):
    for name in random.Random(index).sample(names, len(names)):
      seconds = rounds[name]()
      if index >= warmups:
        for metric, value in seconds.items():
          samples[name].setdefault(metric, []).append(value)
  return samples


def forward_and_step(
  forward: Callable,
  forward_args: Sequence[Any],
  step: Callable,
  state: Sequence[Any],
  batch: Sequence[Any],
  calls: int = 1,
  calls_in_program: int = 1,
  settle_s: float = 0.0,
) -> Round:
  """The :func:`interleave` round of a forward program and a training step.

  Each round times ``forward(*forward_args)`` and then ``step(*state,
  *batch) -> (*state, loss)``, with :func:`time_calls` (``calls`` calls,
  ``settle_s`` before each), and keeps the training state the steps leave
  for the next round.

  Args:
    forward: the compiled forward program.
    forward_args: its arguments.
    step: the compiled training step; it may donate its state.
    state: the training state it starts from (e.g. ``(params,
      opt_state)``).
    batch: the step's other arguments.
    calls: calls per timing.
    calls_in_program: calls of the layer in one program; times are divided
      by it.
    settle_s: see :func:`time_calls`.

  Returns:
    A round returning the seconds per call of the layer: ``{'forward',
    'forward_cpu', 'step', 'step_cpu'}`` (wall and process CPU).
  """
  state = list(state)

  def one_round():
    _, forward_s, forward_cpu_s = time_calls(
      forward, *forward_args, calls=calls, settle_s=settle_s
    )
    outputs, step_s, step_cpu_s = time_calls(
      step, *state, *batch, calls=calls, carry=len(state), settle_s=settle_s
    )
    state[:] = outputs[:-1]
    seconds = {
      'forward': forward_s,
      'forward_cpu': forward_cpu_s,
      'step': step_s,
      'step_cpu': step_cpu_s,
    }
    return {metric: s / calls_in_program for metric, s in seconds.items()}

  return one_round


def paired_ratio(seconds: Sequence[float], baseline: Sequence[float]) -> float:
  """The median over rounds of ``seconds / baseline`` in the same round."""
  return statistics.median(
    [s / b for s, b in zip(seconds, baseline, strict=True)]
  )


def spread(seconds: Sequence[float]) -> float:
  """The interquartile range over the median (0 for a single round)."""
  if len(seconds) < 2:
    return 0.0
  low, _, high = statistics.quantiles(seconds, n=4, method='inclusive')
  return (high - low) / statistics.median(seconds)


def summarize(
  samples: Mapping[str, Mapping[str, Sequence[float]]],
  baseline: str | Mapping[str, str],
) -> dict[str, dict[str, Any]]:
  """Statistics of :func:`interleave`'s samples, each against a baseline.

  Args:
    samples: ``{name: {metric: [seconds per round]}}``.
    baseline: the name every implementation is compared with, or ``{name:
      baseline name}``.

  Returns:
    ``{name: record}``, a record holding for each ``metric``: ``metric_s``
    (the seconds of every round), ``metric_median_s``, ``metric_min_s``,
    ``metric_spread`` (:func:`spread`) and ``metric_over_baseline``
    (:func:`paired_ratio` to the baseline's same metric).
  """
  records = {}
  for name, metrics in samples.items():
    base = samples[baseline if isinstance(baseline, str) else baseline[name]]
    record = {}
    for metric, seconds in metrics.items():
      record[f'{metric}_s'] = list(seconds)
      record[f'{metric}_median_s'] = statistics.median(seconds)
      record[f'{metric}_min_s'] = min(seconds)
      record[f'{metric}_spread'] = spread(seconds)
      record[f'{metric}_over_baseline'] = paired_ratio(seconds, base[metric])
    records[name] = record
  return records
