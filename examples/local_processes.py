"""Runs several JAX processes on this machine, as a cluster runs one per host.

Test and example machinery, not library API: ``train_sharded.py --processes
N`` and the multi-process tests start each process with its own simulated
CPU devices, and a process that fails or hangs takes the others down with
it instead of leaving them waiting in a collective. The processes join each
other with ``fd.sharding.initialize``.
"""

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence


def free_port() -> int:
  """A TCP port of 127.0.0.1 that nothing listens on at the moment."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class LocalProcess:
  """A process started by :func:`start_local_processes`.

  Attributes:
    process_id: its index among the processes started together.
    popen: its ``subprocess.Popen``.
    log: the file its output goes to, or ``None`` if it is not captured.
  """

  process_id: int
  popen: subprocess.Popen
  log: str | None


@dataclasses.dataclass(frozen=True)
class ProcessExit:
  """How a local process ended.

  Attributes:
    process_id: its index among the processes started together.
    returncode: its exit status; ``-9`` for a SIGKILL, ``-6`` for an abort.
    seconds: when it ended, in seconds since the wait began.
    killed: whether :func:`wait_local_processes` killed it.
    log: the file its output went to, or ``None`` if it was not captured.
  """

  process_id: int
  returncode: int
  seconds: float
  killed: bool
  log: str | None

  def describe(self) -> str:
    """``'process 1 exited with status 1 after 3.2 s'``, and the like."""
    if self.killed:
      how = 'was killed by the launcher'
    elif self.returncode < 0:
      how = f'died of {signal.Signals(-self.returncode).name}'
    else:
      how = f'exited with status {self.returncode}'
    return f'process {self.process_id} {how} after {self.seconds:.1f} s'

  def tail(self, lines: int = 15) -> str:
    """The last ``lines`` lines of its log, or ``''`` without one."""
    if self.log is None or not os.path.exists(self.log):
      return ''
    with open(self.log, errors='replace') as log:
      return ''.join(log.readlines()[-lines:])


def start_local_processes(
  commands: Sequence[Sequence[str]],
  devices_per_process: int,
  *,
  log_dir: str | os.PathLike,
  echo_leader: bool = False,
  env: Mapping[str, str] | None = None,
) -> list[LocalProcess]:
  """Starts one process per command on this machine, with CPU devices.

  Each process sees ``devices_per_process`` simulated CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count``, ``JAX_PLATFORMS=
  cpu``) and uses gloo for collectives across processes
  (``JAX_CPU_COLLECTIVES_IMPLEMENTATION``, JAX's default too). The commands
  join each other themselves, e.g. by :func:`initialize` with the same
  coordinator address, their process ids and their number.

  Args:
    commands: one argument list per process, process 0 first.
    devices_per_process: CPU devices of each process.
    log_dir: a directory for ``process-<i>.log``, the output (stdout and
      stderr) of each process.
    echo_leader: if true, process 0 writes to this process's stdout and
      stderr instead of a log.
    env: environment of the processes; default: this process's.

  Returns:
    The processes, in order; wait for them with :func:`wait_local_processes`.

  Raises:
    ValueError: if there is no command or ``devices_per_process < 1``.
  """
  if not commands or devices_per_process < 1:
    raise ValueError(
      'start_local_processes: needs at least one command and'
      f' devices_per_process >= 1, got {len(commands)} commands and'
      f' devices_per_process={devices_per_process}.'
    )
  env = dict(os.environ if env is None else env)
  device_count = f'--xla_force_host_platform_device_count={devices_per_process}'
  env.update(
    XLA_FLAGS=f'{env.get("XLA_FLAGS", "")} {device_count}'.strip(),
    JAX_PLATFORMS='cpu',
    JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo',
    PYTHONUNBUFFERED='1',
  )
  os.makedirs(log_dir, exist_ok=True)
  started = []
  try:
    for process_id, command in enumerate(commands):
      if echo_leader and process_id == 0:
        popen, log = subprocess.Popen(list(command), env=env), None
      else:
        log = os.path.join(log_dir, f'process-{process_id}.log')
        with open(log, 'wb') as output:
          popen = subprocess.Popen(
            list(command), env=env, stdout=output, stderr=subprocess.STDOUT
          )
      started.append(LocalProcess(process_id, popen, log))
  except BaseException:
    _kill(started)
    raise
  return started


def _kill(processes: Sequence[LocalProcess]) -> set[int]:
  """SIGKILLs those of ``processes`` still running; returns their ids."""
  killed = set()
  for process in processes:
    if process.popen.poll() is None:
      process.popen.kill()
      killed.add(process.process_id)
  return killed


def wait_local_processes(
  processes: Sequence[LocalProcess], *, timeout: float, grace: float
) -> list[ProcessExit]:
  """Waits for processes started together; none outlives a failed one.

  When one process fails (a non-zero status or a signal), the others have
  ``grace`` more seconds to end by themselves, as JAX ends them when a peer
  dies, and are then killed; all are killed at ``timeout``, e.g. when a
  collective hangs. An exception in the wait (Ctrl-C) kills them all too.

  Args:
    processes: from :func:`start_local_processes`.
    timeout: seconds for all of them to end.
    grace: seconds the others have to end after one failed.

  Returns:
    How each ended, in order; the caller decides what a failure means.
  """
  start = time.monotonic()
  deadline = start + timeout
  ended: dict[int, ProcessExit] = {}
  killed: set[int] = set()
  try:
    while len(ended) < len(processes):
      now = time.monotonic()
      for process in processes:
        if process.process_id in ended or process.popen.poll() is None:
          continue
        failed = process.popen.returncode != 0
        ended[process.process_id] = ProcessExit(
          process.process_id,
          process.popen.returncode,
          now - start,
          process.process_id in killed,
          process.log,
        )
        if failed and process.process_id not in killed:
          deadline = min(deadline, now + grace)
      if now >= deadline:
        killed |= _kill(processes)
        deadline = float('inf')
      time.sleep(0.05)
  finally:
    _kill(processes)
  return [ended[process.process_id] for process in processes]
