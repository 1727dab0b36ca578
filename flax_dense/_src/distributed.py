"""Training on several processes: joining them and feeding them.

Two small pieces around ``jax.distributed``:

* :func:`initialize` joins a process to the others (``jax.distributed
  .initialize``) with bounded timeouts, and our own errors for a
  coordinator that cannot be reached or served.
* :func:`process_rows` says which rows of a global batch this process
  feeds to ``jax.make_array_from_process_local_data``, so that each process
  makes only its own rows and no process holds the global batch.

To try several processes on one machine, ``examples/local_processes.py``
starts them, each with its own simulated CPU devices.
"""

import socket
import time
from collections.abc import Sequence

import jax
import numpy as np


def _split_address(address: str) -> tuple[str, int]:
  """``('10.0.0.1', 1234)`` of ``'10.0.0.1:1234'`` (``'[::1]:1234'`` too)."""
  host, separator, port = address.rpartition(':')
  if not separator or not host or not port.isdigit():
    raise ValueError(
      f'initialize: coordinator_address must be host:port, e.g.'
      f' 127.0.0.1:1234, got {address!r}.'
    )
  return host.strip('[]'), int(port)


def _check_bindable(address: str) -> None:
  """Process 0 serves the coordinator: ``address`` must be of this host."""
  host, port = _split_address(address)
  try:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except socket.gaierror as error:
    raise ValueError(
      f'initialize: process 0 runs the coordinator at {address}, but'
      f' {host!r} is not a known host name ({error}).'
    ) from None
  family, _, _, _, sockaddr = infos[0]
  with socket.socket(family, socket.SOCK_STREAM) as probe:
    # As the coordinator's server does, so that a port a previous run left
    # in TIME_WAIT counts as free.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      probe.bind(sockaddr)
    except OSError as error:
      raise ValueError(
        f'initialize: process 0 runs the coordinator at {address}, but it'
        f' cannot listen there ({error.strerror}): give an address of the'
        ' host of process 0, with a free port.'
      ) from None


def _wait_reachable(address: str, timeout: float) -> float:
  """Waits until the coordinator accepts connections; returns the seconds."""
  host, port = _split_address(address)
  start = time.monotonic()
  while True:
    try:
      with socket.create_connection((host, port), timeout=1.0):
        return time.monotonic() - start
    except OSError as error:
      if time.monotonic() - start >= timeout:
        raise TimeoutError(
          f'initialize: could not reach the JAX coordinator at {address}'
          f' within {timeout:g} s ({error.strerror or error}). Start process'
          ' 0 there first, check the address and port, or raise'
          ' initialization_timeout.'
        ) from None
      time.sleep(0.2)


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  *,
  initialization_timeout: int = 300,
  heartbeat_timeout: int = 100,
) -> None:
  """Joins this process to the others of a multi-process JAX program.

  ``jax.distributed.initialize`` with bounded waits. (On CPU, collectives
  across processes run over gloo, JAX's default
  ``jax_cpu_collectives_implementation``, so the CPU devices of several
  processes form one mesh.) With all of ``coordinator_address``,
  ``num_processes`` and ``process_id`` given, the address is checked first
  with our own errors: JAX itself aborts the process, without a Python
  exception, when it cannot reach its coordinator. Without them, JAX finds
  them on Cloud TPU, SLURM, Open MPI or Kubernetes (and reads
  ``JAX_COORDINATOR_ADDRESS``).

  JAX's own limits, after these checks: if not all ``num_processes`` join
  within ``initialization_timeout`` seconds, JAX aborts the processes that
  did (``DEADLINE_EXCEEDED``, SIGABRT). Once joined, a process that dies
  makes the others fail at their next collective (over gloo: at once) and
  ends them within ``heartbeat_timeout`` seconds, when the coordinator
  stops hearing from it; a coordinator that dies ends them at once.

  Args:
    coordinator_address: ``host:port`` of process 0, which serves the
      coordinator there: a name or address of its host, and a free port.
    num_processes: the number of processes.
    process_id: this process's index, ``0 <= process_id < num_processes``.
    initialization_timeout: seconds to wait for the coordinator and for all
      processes to join.
    heartbeat_timeout: seconds without a heartbeat after which a process is
      taken for dead.

  Raises:
    ValueError: if the address is not ``host:port``, or is not one process
      0 can listen on (another host, or a port in use).
    TimeoutError: if a process other than 0 cannot reach the coordinator
      within ``initialization_timeout`` seconds; the message names the
      address.
  """
  if (
    coordinator_address is not None
    and num_processes is not None
    and process_id is not None
  ):
    if not 0 <= process_id < num_processes:
      raise ValueError(
        f'initialize: process_id must be in [0, {num_processes}), got'
        f' {process_id}.'
      )
    if process_id == 0:
      _check_bindable(coordinator_address)
    else:
      waited = _wait_reachable(coordinator_address, initialization_timeout)
      initialization_timeout = max(1, round(initialization_timeout - waited))
  jax.distributed.initialize(
    coordinator_address,
    num_processes,
    process_id,
    initialization_timeout=initialization_timeout,
    heartbeat_timeout_seconds=heartbeat_timeout,
  )


def process_rows(
  sharding: jax.sharding.Sharding, global_shape: Sequence[int], axis: int = 0
) -> np.ndarray:
  """Indices along ``axis`` of the global array that this process feeds.

  ``jax.make_array_from_process_local_data(sharding, local, global_shape)``
  takes from each process only the slices its own devices hold, in order:
  ``local`` holds, along ``axis``, the rows ``global[process_rows(...)]``.
  When the process holds every row (the axis is not split across
  processes), that is ``range(global_shape[axis])``.

  Example usage::

    >>> import jax, numpy as np
    >>> from jax.sharding import NamedSharding, PartitionSpec
    >>> from flax_dense._src.distributed import process_rows
    >>> mesh = jax.make_mesh((1,), ('data',))
    >>> sharding = NamedSharding(mesh, PartitionSpec('data'))
    >>> process_rows(sharding, (6, 3))
    array([0, 1, 2, 3, 4, 5])

  Args:
    sharding: the sharding of the global array.
    global_shape: its shape.
    axis: the axis split over processes, e.g. the batch axis 0.

  Returns:
    A sorted ``int`` array of global indices along ``axis``.
  """
  global_shape = tuple(global_shape)
  indices = sharding.addressable_devices_indices_map(global_shape).values()
  # An index of None (typed so by JAX) would be the whole array.
  ranges = {
    (slice(None) if index is None else index[axis]).indices(global_shape[axis])[
      :2
    ]
    for index in indices
  }
  return np.concatenate(
    [np.arange(start, stop) for start, stop in sorted(ranges)]
  )
