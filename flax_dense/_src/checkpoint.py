"""Lossless, atomic checkpoints of variables and train states, on Orbax."""

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

if TYPE_CHECKING:
  import orbax.checkpoint as ocp

# The files of one step that restoring it reads: Orbax's layout of a step
# with one item, ``default``, in a TensorStore key-value store (OCDBT).
_STEP_METADATA = '_CHECKPOINT_METADATA'
_ITEM = 'default'
_ITEM_METADATA = '_METADATA'
_SHARDINGS = '_sharding'
_ARRAY_INDEX = 'manifest.ocdbt'

# Orbax refuses zero-size arrays: each is saved as this one-byte stand-in and
# rebuilt on restore from its shape and dtype, kept in the item's metadata.
_ZERO_SIZE = 'flax_dense_zero_size_arrays'

# TensorStore's errors reading the files start with their status code.
_STORAGE_ERROR = re.compile(r'[A-Z_]+: ')

# How long a failed read waits at most for Orbax's abandoned reads to end.
_ABANDONED_TASKS_TIMEOUT_S = 10.0

_IF_DAMAGED = {
  'restore': (
    'Restore a copy of it from elsewhere, or start again from a new'
    ' checkpoint: fd.checkpoint.save(path, tree, overwrite=True) replaces it.'
  ),
  'save': (
    'The new tree cannot be checked against it; pass overwrite=True to'
    ' replace it anyway.'
  ),
}


def _manager(directory: str, create: bool) -> 'ocp.CheckpointManager':
  """Orbax manager of ``directory`` that keeps only its newest complete step."""
  # Imported here: Orbax takes a second to import, which a program that
  # never checkpoints should not pay on ``import flax_dense``.
  import orbax.checkpoint as ocp

  return ocp.CheckpointManager(
    directory,
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1, enable_async_checkpointing=False, create=create
    ),
    item_handlers=ocp.StandardCheckpointHandler(),
  )


def save(
  path: str | os.PathLike,
  tree: Any,
  step: int | None = None,
  *,
  overwrite: bool = False,
) -> int:
  """Saves every array of ``tree`` as a new version of the checkpoint ``path``.

  ``path`` is a directory of numbered versions (Orbax steps). The new one is
  written to a temporary directory and renamed into place only once complete
  (Orbax's atomic commit); only then are the older versions deleted. A save
  killed midway therefore leaves the previous version readable, and
  :func:`restore` never sees a partial one.

  Since only the newest version is kept, a save that would replace a model
  with another one is refused: the variables of ``tree`` (their paths,
  shapes and dtypes) must be those of the newest version, unless
  ``overwrite=True``. Every check runs before anything is written.

  Arrays are stored exactly, whatever their dtype (float32, bfloat16,
  integers, typed PRNG keys), size (zero-size arrays included) and sharding:
  every process of a multi-host run writes its own shards; all of them must
  call ``save``. Partitioning boxes (``nn.LogicallyPartitioned``) are
  unboxed: the layout lives in the restore target's shardings, not in the
  file.

  Example usage::

    >>> import flax_dense as fd
    >>> import jax, jax.numpy as jnp, tempfile
    >>> layer = fd.PerPositionDense(3)
    >>> variables = layer.init(jax.random.key(0), jnp.ones((2, 5, 4)))
    >>> path = tempfile.mkdtemp()
    >>> fd.checkpoint.save(path, variables)
    0
    >>> restored = fd.checkpoint.restore(path, target=variables)
    >>> bool((restored['params']['kernel'] == variables['params']['kernel']).all())
    True
    >>> fd.checkpoint.save(path, variables)
    1

  Args:
    path: the checkpoint directory; created if absent.
    tree: a pytree of arrays and scalars: ``variables`` of any collections,
      an optax state, a ``flax.training.train_state.TrainState``, or a dict
      of them; it must hold at least one array or scalar.
    step: number of the new version, a non-negative Python or NumPy
      integer, e.g. the training step; default: one more than the newest
      saved, or 0.
    overwrite: replace the newest version even if its variables differ from
      those of ``tree``, or if it is damaged.

  Returns:
    The number of the version saved.

  Raises:
    TypeError: if ``step`` is not an integer (a float, a bool, ...).
    ValueError: if ``step`` is negative or not greater than the newest
      version already in ``path``; if ``tree`` holds no array or scalar; if
      ``path`` is a file; or, without ``overwrite``, if the variables of
      ``tree`` differ from those of the newest version (the message names
      each difference) or that version is damaged.
    FileNotFoundError: without ``overwrite``, if a file of the newest
      version is missing.
  """
  import orbax.checkpoint as ocp

  directory = _directory(path, 'save')
  if step is not None:
    step = _checked_step(step, 'save')
  tree = nn.meta.unbox(tree)
  if not jax.tree.leaves(tree):
    raise ValueError(
      f'checkpoint.save: tree holds no array or scalar to save, got {tree!r};'
      ' pass the variables or train state to checkpoint.'
    )
  metadata: dict[str, Any] = {_ZERO_SIZE: _zero_size_arrays(tree)}
  with _manager(directory, create=True) as manager:
    latest = manager.latest_step()
    if step is None:
      step = 0 if latest is None else latest + 1
    elif latest is not None and step <= latest:
      raise ValueError(
        f'checkpoint.save: step must be a non-negative integer greater than'
        f' the newest step saved in {path} ({latest}), got {step}; pass a'
        ' larger step, or step=None for the next one.'
      )
    if latest is not None and not overwrite:
      saved = _saved_variables(manager, directory, latest, 'save', False)[0]
      problems = _differences(saved, _variables(tree), 'the tree')
      if problems:
        raise ValueError(
          f'checkpoint.save: the tree does not match the newest step'
          f' {latest} of the checkpoint {directory}: {"; ".join(problems)}.'
          ' Saving it would delete that step, since only the newest is'
          ' kept; pass overwrite=True to replace it, or save to another path.'
        )
    manager.save(
      step,
      args=ocp.args.StandardSave(
        _with_stand_ins(tree), custom_metadata=metadata
      ),
    )
  return step


def latest_step(path: str | os.PathLike) -> int | None:
  """The newest complete version in the checkpoint ``path``, or ``None``.

  A version counts once its save has committed; whether its files are still
  intact is checked by :func:`restore`.

  Args:
    path: a checkpoint directory written by :func:`save`; it may not exist.

  Returns:
    The step number, or ``None`` if ``path`` holds no complete checkpoint.

  Raises:
    ValueError: if ``path`` is a file.
  """
  directory = _directory(path, 'latest_step')
  if not epath.Path(directory).exists():
    return None
  with _manager(directory, create=False) as manager:
    return manager.latest_step()


def restore(
  path: str | os.PathLike, target: Any = None, step: int | None = None
) -> Any:
  """Restores the checkpoint ``path``, bit for bit, into ``target``'s shape.

  With a ``target`` (concrete arrays or ``jax.ShapeDtypeStruct``, e.g.
  ``jax.eval_shape(model.init, key, x)``), the result has ``target``'s
  structure (optax namedtuples, ``TrainState``). Every array lands on the
  target leaf's sharding, so a checkpoint saved on one mesh restores onto
  another; a leaf without one (a ``ShapeDtypeStruct`` whose ``sharding`` is
  ``None``) lands on the default device, whatever the devices the checkpoint
  was saved from; NumPy leaves come back as NumPy arrays. Without a target,
  the raw pytree comes back: dicts, lists for tuples, ``None`` for empty
  states, and arrays on the sharding they were saved with, or on the default
  device where this process lacks those devices.

  Before reading any array, the version's files are checked: its metadata,
  the index of its arrays, and that every array's data is present in full.

  Args:
    path: a checkpoint directory written by :func:`save`.
    target: a pytree with the structure, shapes and dtypes of the saved
      one; boxed (partitioned) leaves are unboxed first.
    step: the version to read, a non-negative Python or NumPy integer;
      default: the newest.

  Returns:
    The saved pytree.

  Raises:
    TypeError: if ``step`` is not an integer.
    FileNotFoundError: if ``path`` holds no complete checkpoint, or not
      ``step``, or a file of the version is missing; the message names the
      path, the step and the file.
    ValueError: if ``step`` is negative; if ``path`` is a file; if the
      version is damaged (a corrupt metadata file or array index, truncated
      or missing array data; the message names the path, the step and the
      damaged part); or if ``target`` has other variables than the
      checkpoint, or a variable of another shape or dtype, e.g. a model
      built for other inputs; the message names the variable and both
      shapes.
  """
  import orbax.checkpoint as ocp

  directory = _directory(path, 'restore')
  if step is not None:
    step = _checked_step(step, 'restore')
  if latest_step(directory) is None:
    raise FileNotFoundError(
      f'checkpoint.restore: no complete checkpoint in {path}.'
    )
  with _manager(directory, create=False) as manager:
    step = manager.latest_step() if step is None else step
    if step not in manager.all_steps():
      raise FileNotFoundError(
        f'checkpoint.restore: no step {step} in {path}; it holds steps'
        f' {sorted(manager.all_steps())}.'
      )
    saved, zero_size = _saved_variables(
      manager, directory, step, 'restore', True
    )
    default = jax.sharding.SingleDeviceSharding(_default_device())
    if target is None:
      args = ocp.args.StandardRestore(fallback_sharding=default)
    else:
      target = nn.meta.unbox(target)
      problems = _differences(saved, _variables(target), 'the target')
      if problems:
        raise ValueError(
          f'checkpoint.restore: the target does not match the checkpoint'
          f' {path} (step {step}): {"; ".join(problems)}. Build the target'
          " from a model of the checkpoint's shapes, or restore with"
          ' target=None to read the arrays as saved.'
        )
      args = ocp.args.StandardRestore(
        jax.tree.map(
          lambda leaf: _placed(leaf, default), _with_stand_ins(target)
        )
      )
    try:
      with _quiet_orbax():
        restored = manager.restore(step, args=args)
    except Exception as err:
      if not _STORAGE_ERROR.match(str(_root_cause(err))):
        raise  # Not the files: e.g. a target leaf of a type Orbax lacks.
      item = epath.Path(directory) / str(step) / _ITEM
      raise _damaged(
        ValueError,
        'restore',
        directory,
        step,
        f'its arrays in {item} could not be read ({_reason(err)})',
      ) from err

  def rebuilt(name: str, leaf: Any, like: Any) -> Any:
    """``leaf``, or the zero-size array it stands in for, placed as ``like``."""
    if name not in zero_size:
      return leaf
    if target is None:
      return _zeros(zero_size[name], default, zero_size[name]['numpy'])
    sharding = getattr(like, 'sharding', None) or default
    return _zeros(zero_size[name], sharding, _is_numpy(like))

  return _map_with_names(
    rebuilt, restored, restored if target is None else target
  )


def _directory(path: str | os.PathLike, function: str) -> str:
  """``path`` as Orbax takes it; a ValueError if it is a file."""
  directory = os.fspath(path)
  if '://' not in directory:
    directory = os.path.abspath(directory)
  if epath.Path(directory).is_file():
    raise ValueError(
      f'checkpoint.{function}: {path} is a file, not a checkpoint directory;'
      ' pass the directory that checkpoint.save writes.'
    )
  return directory


def _checked_step(step: Any, function: str) -> int:
  """``step`` as an int; a TypeError unless it is a non-negative integer."""
  if isinstance(step, bool | np.bool_) or not isinstance(
    step, int | np.integer
  ):
    raise TypeError(
      f'checkpoint.{function}: step must be a non-negative integer (a Python'
      f' or NumPy int), got {step!r} of type {type(step).__name__}; step'
      ' numbers are whole numbers: pass e.g. int(state.step).'
    )
  if step < 0:
    raise ValueError(
      f'checkpoint.{function}: step must be a non-negative integer, got {step}.'
    )
  return int(step)


# ``Any``: ``jax.Device`` is a runtime-only name that type checkers cannot
# resolve (jaxlib has no stubs for it).
def _default_device() -> Any:
  """The device JAX puts new arrays on in this process."""
  # A flag without a typed attribute on ``jax.config``.
  device = jax.config.jax_default_device  # pyright: ignore[reportAttributeAccessIssue]
  if isinstance(device, str):  # A platform name, e.g. 'cpu'.
    return jax.local_devices(backend=device)[0]
  return device if device is not None else jax.local_devices()[0]


def _placed(leaf: Any, sharding: jax.sharding.Sharding) -> Any:
  """``leaf``, given ``sharding`` if it is an abstract array without one."""
  if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
  return leaf


def _is_numpy(leaf: Any) -> bool:
  return isinstance(leaf, np.ndarray | np.generic)


def _is_zero_size(leaf: Any) -> bool:
  return getattr(leaf, 'size', 1) == 0


def _with_stand_ins(tree: Any) -> Any:
  """``tree`` with a one-byte stand-in for each zero-size array."""
  return jax.tree.map(
    lambda leaf: np.zeros((), np.uint8) if _is_zero_size(leaf) else leaf, tree
  )


def _zero_size_arrays(tree: Any) -> dict[str, dict[str, Any]]:
  """How to rebuild each zero-size array of ``tree``, by name, as JSON.

  Each is described by the shape and dtype it is stored with (a typed PRNG
  key's are its data's), its key implementation or ``None``, and whether it
  is a NumPy array.
  """
  descriptions = {}
  for name, leaf in _by_name(tree).items():
    if _is_zero_size(leaf):
      shape, dtype = _stored_as(leaf)
      is_key = jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
      descriptions[name] = {
        'shape': list(shape),
        'dtype': str(jnp.dtype(dtype)),
        'key_impl': str(jax.random.key_impl(leaf)) if is_key else None,
        'numpy': _is_numpy(leaf),
      }
  return descriptions


def _zeros(
  description: dict[str, Any], sharding: jax.sharding.Sharding, numpy: bool
) -> Any:
  """The zero-size array ``description`` tells, NumPy's or on ``sharding``."""
  data = np.zeros(description['shape'], jnp.dtype(description['dtype']))
  if numpy:
    return data
  if description['key_impl'] is not None:
    keys = jax.random.wrap_key_data(
      jnp.asarray(data), impl=description['key_impl']
    )
    return jax.device_put(keys, sharding)
  return jax.device_put(data, sharding)


def _saved_variables(
  manager: Any, directory: str, step: int, function: str, check_data: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
  """The shape and dtype of each saved variable, and the zero-size arrays.

  Checks the step's files first (its array data too if ``check_data``), so
  that Orbax never reads a damaged one.

  Returns:
    The stored shape and dtype of each variable by name, and the
    description of each zero-size array by name.
  """
  item = epath.Path(directory) / str(step) / _ITEM
  _check_files(directory, step, function, check_data)
  try:
    with _quiet_orbax():
      metadata = manager.item_metadata(step)
    saved = {
      name: (tuple(leaf.shape), leaf.dtype)
      for name, leaf in _by_name(metadata.tree).items()
    }
    zero_size = dict((metadata.custom_metadata or {}).get(_ZERO_SIZE, {}))
    for name, description in zero_size.items():
      saved[name] = (tuple(description['shape']), description['dtype'])
  except Exception as err:
    raise _damaged(
      ValueError,
      function,
      directory,
      step,
      f'the metadata of its arrays in {item} is unreadable ({_reason(err)})',
    ) from err
  return saved, zero_size


def _check_files(
  directory: str, step: int, function: str, check_data: bool
) -> None:
  """Raises an error naming the first damaged part of the step's files.

  Checks that the metadata files parse, that the array index lists every
  array, and, if ``check_data``, that the last byte of every stored value
  (an array's chunk or metadata) can be read, which it cannot if its data
  file is missing or truncated.
  """
  import tensorstore as ts

  def damaged(error: type[Exception], part: str) -> Exception:
    return _damaged(error, function, directory, step, part)

  step_directory = epath.Path(directory) / str(step)
  item = step_directory / _ITEM
  _read_json(step_directory / _STEP_METADATA, damaged)
  if item.exists() and not item.is_dir():
    raise damaged(ValueError, f'its directory {item} is a file')
  if not item.exists():
    raise damaged(FileNotFoundError, f'its directory {item} is missing')
  metadata = _read_json(item / _ITEM_METADATA, damaged)
  try:
    arrays = {
      '.'.join(str(key['key']) for key in entry['key_metadata']): (
        '/'.join(str(key['key']) for key in entry['key_metadata']),
        entry['value_metadata']['value_type'],
      )
      for entry in metadata['tree_metadata'].values()
      # Empty nodes (``None``, empty optax states) have no stored value.
      if not entry['value_metadata']['skip_deserialize']
    }
  except (KeyError, TypeError, AttributeError) as err:
    raise damaged(
      ValueError,
      f'its metadata file {item / _ITEM_METADATA} is corrupt: its'
      f' tree_metadata is malformed ({type(err).__name__}: {err})',
    ) from err
  if any(kind == 'jax.Array' for _, kind in arrays.values()):
    _read_json(item / _SHARDINGS, damaged)
  store_spec = os.fspath(item) + '/'
  if '://' not in store_spec:
    store_spec = 'file://' + store_spec
  if metadata.get('use_ocdbt'):
    if not (item / _ARRAY_INDEX).exists():
      raise damaged(
        FileNotFoundError, f'its array index {item / _ARRAY_INDEX} is missing'
      )
    store_spec = {'driver': 'ocdbt', 'base': store_spec}
  try:
    store = ts.KvStore.open(store_spec).result()
    keys = [key.decode() for key in store.list().result()]
  except Exception as err:
    raise damaged(
      ValueError, f'its array index in {item} is unreadable ({_reason(err)})'
    ) from err
  array_metadata = 'zarr.json' if metadata.get('use_zarr3') else '.zarray'
  missing = [
    name
    for stored_name, (name, _) in sorted(arrays.items())
    if f'{stored_name}/{array_metadata}' not in keys
  ]
  if missing:
    raise damaged(
      FileNotFoundError,
      f'{_variables_named(missing)} missing from its arrays in {item}',
    )
  if not check_data:
    return
  # Each key is an array's name, then '/', then its metadata or a chunk.
  reads = {
    key: store.read(key, byte_range=slice(-1, None))
    for key in keys
    if key.partition('/')[0] in arrays
  }
  broken = set()
  for key, read in reads.items():
    try:
      intact = bool(read.result().value)  # A deleted data file reads empty.
    except Exception:  # TensorStore's error when a data file is truncated.
      intact = False
    if not intact:
      broken.add(arrays[key.partition('/')[0]][0])
  if broken:
    raise damaged(
      ValueError,
      f'the data of {_variables_named(sorted(broken))} truncated or missing'
      f' in {item}',
    )


def _variables_named(names: list[str]) -> str:
  """``'variable a is'`` or ``'variables a, b are'``."""
  if len(names) == 1:
    return f'variable {names[0]} is'
  return f'variables {", ".join(names)} are'


def _read_json(
  file: epath.Path, damaged: Callable[[type[Exception], str], Exception]
) -> dict[str, Any]:
  """The JSON object in ``file``; ``damaged``'s error if missing or corrupt."""
  try:
    text = file.read_text()
  except FileNotFoundError as err:
    raise damaged(FileNotFoundError, f'its file {file} is missing') from err
  except (OSError, UnicodeDecodeError) as err:
    raise damaged(ValueError, f'its file {file} is unreadable ({err})') from err
  try:
    value = json.loads(text)
  except json.JSONDecodeError as err:
    raise damaged(
      ValueError, f'its file {file} is corrupt JSON ({err})'
    ) from err
  if not isinstance(value, dict):
    raise damaged(ValueError, f'its file {file} holds no JSON object')
  return value


def _damaged(
  error: type[Exception], function: str, directory: str, step: int, part: str
) -> Exception:
  """The error ``function`` raises for a damaged step, naming the damage."""
  return error(
    f'checkpoint.{function}: step {step} of the checkpoint {directory} is'
    f' damaged: {part}. {_IF_DAMAGED[function]}'
  )


def _root_cause(err: BaseException) -> BaseException:
  while err.__cause__ is not None:
    err = err.__cause__
  return err


def _reason(err: BaseException) -> str:
  """The first line of the error at the root of ``err``, without specs."""
  err = _root_cause(err)
  text = str(err).split(' [tensorstore_spec=')[0].split(' See full')[0]
  text = text.strip().splitlines()[0] if text.strip() else ''
  return f'{type(err).__name__}: {text[:300]}'


@contextlib.contextmanager
def _quiet_orbax() -> Iterator[None]:
  """Keeps what a failed Orbax read leaves behind off stderr.

  When one array fails to read, Orbax closes its event loop on its other
  reads, whose errors then reach ``sys.unraisablehook``, the ``asyncio``
  logger and ``warnings`` from TensorStore's threads, as tracebacks of what
  the error we raise reports. Those are held back while Orbax runs and,
  after a failure, until every task abandoned on a closed loop is gone;
  anything else passes.
  """
  unraisable_hook = sys.unraisablehook
  asyncio_logger = logging.getLogger('asyncio')

  def hook(unraisable: Any) -> None:
    if not _raised_in_orbax(unraisable.exc_traceback):
      unraisable_hook(unraisable)

  def keep(record: logging.LogRecord) -> bool:
    return 'exception was never retrieved' not in record.getMessage() and not (
      record.exc_info and _raised_in_orbax(record.exc_info[2])
    )

  sys.unraisablehook = hook
  asyncio_logger.addFilter(keep)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings(
        'ignore', "coroutine '.*' was never awaited", RuntimeWarning
      )
      try:
        yield
      except BaseException as err:
        _release_frames(err)
        _await_abandoned_tasks()
        raise
  finally:
    asyncio_logger.removeFilter(keep)
    sys.unraisablehook = unraisable_hook


def _await_abandoned_tasks() -> None:
  """Waits until the tasks left pending on closed event loops are freed.

  Each is freed once the TensorStore read it waits on ends; the garbage
  collector then finalizes it, here rather than at some later moment.
  """
  gc.collect()
  abandoned = [
    weakref.ref(task)
    for task in gc.get_objects()
    if isinstance(task, asyncio.Task)
    and not task.done()
    and task.get_loop().is_closed()
  ]
  give_up = time.monotonic() + _ABANDONED_TASKS_TIMEOUT_S
  while any(task() is not None for task in abandoned):
    if time.monotonic() > give_up:
      return
    time.sleep(0.01)
    gc.collect()


def _release_frames(err: BaseException | None) -> None:
  """Frees the variables of the frames ``err`` and its causes went through.

  Orbax's frames hold its abandoned reads, which would otherwise be
  finalized, noisily, whenever the error is.
  """
  while err is not None:
    traceback = err.__traceback__
    while traceback is not None:
      # A frame still running refuses; an abandoned read may raise on close.
      with contextlib.suppress(Exception):
        traceback.tb_frame.clear()
      traceback = traceback.tb_next
    err = err.__cause__ or err.__context__


def _raised_in_orbax(traceback: Any) -> bool:
  """Whether ``traceback`` runs through Orbax's or asyncio's code."""
  while traceback is not None:
    parts = traceback.tb_frame.f_code.co_filename.split(os.sep)
    if 'orbax' in parts or 'asyncio' in parts:
      return True
    traceback = traceback.tb_next
  return False


def _map_with_names(function: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """``tree`` with each leaf as ``function(name, leaf, *rest_leaves)``."""
  return jax.tree_util.tree_map_with_path(
    lambda path, *leaves: function(_path_name(path), *leaves), tree, *rest
  )


def _path_name(path: tuple[Any, ...]) -> str:
  """A leaf's path as a name, e.g. ``'params/kernel'``."""
  return '/'.join(map(_key_name, path))


def _by_name(tree: Any) -> dict[str, Any]:
  """The leaves of ``tree`` by their path, e.g. ``'params/kernel'``."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_path_name(path): leaf for path, leaf in leaves}


def _key_name(key: Any) -> str:
  """``'kernel'`` for a dict key or an attribute, ``'0'`` for an index."""
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _stored_as(leaf: Any) -> tuple[tuple[int, ...], Any]:
  """Shape and dtype under which ``leaf`` is stored; keys as their data."""
  dtype = getattr(leaf, 'dtype', None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    leaf = jax.eval_shape(jax.random.key_data, leaf)
    dtype = leaf.dtype
  return tuple(np.shape(leaf) if dtype is None else leaf.shape), dtype


def _variables(tree: Any) -> dict[str, tuple[tuple[int, ...], Any]]:
  """The shape and dtype under which each variable of ``tree`` is stored."""
  return {name: _stored_as(leaf) for name, leaf in _by_name(tree).items()}


def _differences(
  saved: dict[str, tuple[tuple[int, ...], Any]],
  given: dict[str, tuple[tuple[int, ...], Any]],
  given_as: str,
) -> list[str]:
  """Every variable where ``given`` (called ``given_as``) differs from ``saved``.

  A dtype of ``None`` (a Python scalar's) matches any.
  """
  problems = []
  missing = sorted(given.keys() - saved.keys())
  if missing:
    problems.append(f'the checkpoint has no {", ".join(missing)}')
  unexpected = sorted(saved.keys() - given.keys())
  if unexpected:
    problems.append(f'{given_as} has no {", ".join(unexpected)}')
  for name in sorted(saved.keys() & given.keys()):
    (saved_shape, saved_dtype), (shape, dtype) = saved[name], given[name]
    if saved_shape != shape:
      problems.append(
        f'variable {name} has shape {saved_shape} in the checkpoint but'
        f' {shape} in {given_as}'
      )
    elif (
      dtype is not None
      and saved_dtype is not None
      and jnp.dtype(saved_dtype) != jnp.dtype(dtype)
    ):
      problems.append(
        f'variable {name} has dtype {jnp.dtype(saved_dtype)} in the'
        f' checkpoint but {jnp.dtype(dtype)} in {given_as}'
      )
  return problems
