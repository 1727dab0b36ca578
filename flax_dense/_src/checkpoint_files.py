"""The files of a checkpoint: its paths, its lock and the checks of a step.

:mod:`flax_dense._src.checkpoint` saves and restores through Orbax; this
module makes sure that Orbax only ever sees a path it handles, one writer at
a time, and a step whose files are whole. Every check reads the files
itself (JSON, and TensorStore for the arrays), so a damaged step is one
clear error raised before Orbax reads anything, and none of Orbax's
background reads is left to fail noisily.
"""

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from etils import epath

# The files of one step that restoring it reads: Orbax's layout of a step
# with one item, ``default``, in a TensorStore key-value store (OCDBT).
STEP_METADATA = '_CHECKPOINT_METADATA'
ITEM = 'default'
ITEM_METADATA = '_METADATA'
SHARDINGS = '_sharding'
ARRAY_INDEX = 'manifest.ocdbt'

#: The lock file that serialises the writers of one checkpoint directory.
LOCK_FILE = '.flax_dense.lock'

# Characters of a local path that TensorStore (a backslash) or Orbax's
# globs misread.
_UNSAFE = frozenset('\\[]*?')

# A URL such as ``gs://bucket/run``, which Orbax opens itself.
_URL = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*://')

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


def directory_of(path: Any, function: str) -> str:
  """``path`` as an absolute path (or a URL), checked to be usable.

  Raises:
    TypeError: unless ``path`` is a string, bytes or an ``os.PathLike``.
    ValueError: for an empty path, a NUL character, bytes that are not
      UTF-8 or a string that cannot be written as UTF-8 (a lone surrogate),
      or a path that is a file.
  """
  if not isinstance(path, str | bytes | os.PathLike):
    raise TypeError(
      f'checkpoint.{function}: path must be a str, bytes or os.PathLike'
      f' (e.g. pathlib.Path), got {path!r} of type {type(path).__name__}.'
    )
  directory = os.fspath(path)
  if isinstance(directory, bytes):
    try:
      directory = directory.decode('utf-8')
    except UnicodeDecodeError as err:
      raise ValueError(
        f'checkpoint.{function}: path {path!r} is not UTF-8 (byte'
        f' {directory[err.start : err.start + 1]!r} at {err.start}); TensorStore,'
        ' which writes the arrays, takes UTF-8 paths only.'
      ) from None
  if not directory:
    raise ValueError(
      f'checkpoint.{function}: path is empty; pass the checkpoint directory.'
    )
  for char in directory:
    if char == '\0' or '\ud800' <= char <= '\udfff':
      raise ValueError(
        f'checkpoint.{function}: path {directory!r} holds the character'
        f' {char!r}, which {"no file system" if char == chr(0) else "UTF-8"}'
        ' accepts; pass another path.'
      )
  if not _URL.match(directory):
    directory = os.path.abspath(directory)
  if epath.Path(directory).is_file():
    raise ValueError(
      f'checkpoint.{function}: {directory} is a file, not a checkpoint'
      ' directory; pass the directory that checkpoint.save writes.'
    )
  return directory


def is_local(directory: str) -> bool:
  return not _URL.match(directory)


@contextlib.contextmanager
def orbax_path(directory: str) -> Iterator[epath.Path]:
  """The path under which Orbax and TensorStore reach ``directory``.

  TensorStore reads a backslash in a local path as a separator, so it
  would write elsewhere, and Orbax globs for the files of a step, so that
  ``[x]`` in a path would match ``x``. A directory whose path holds one of
  these characters is reached through a symbolic link of a plain name in a
  fresh temporary directory, removed afterwards. ``directory`` must exist.
  """
  if not (set(directory) & _UNSAFE) or not is_local(directory):
    yield epath.Path(directory)
    return
  alias_directory = tempfile.mkdtemp(prefix='flax_dense_checkpoint_')
  try:
    if set(alias_directory) & _UNSAFE:
      raise ValueError(
        f'checkpoint: the path {directory} holds one of the characters'
        f' {"".join(sorted(_UNSAFE))}, which Orbax or TensorStore misread,'
        f' and the temporary directory {alias_directory} that would link to'
        ' it holds one too; set TMPDIR to a directory without them, or pass'
        ' another path.'
      )
    alias = os.path.join(alias_directory, 'checkpoint')
    os.symlink(directory, alias)
    yield epath.Path(alias)
  finally:
    shutil.rmtree(alias_directory, ignore_errors=True)


@contextlib.contextmanager
def locked(
  directory: str, exclusive: bool, hold: bool = True
) -> Iterator[None]:
  """Holds the checkpoint's lock: ``exclusive`` to write, shared to read.

  The lock is ``fcntl.flock`` on ``LOCK_FILE`` in ``directory``: a save
  waits for every other save and restore of the directory, in any process
  of this machine (or of a file system that honours ``flock``). A
  directory that is not local, or where the lock file cannot be made (a
  read-only file system), is used without it, as it is if not ``hold``.
  """
  if not hold:
    yield
    return
  try:
    import fcntl
  except ImportError:  # Not on a POSIX system.
    yield
    return
  if not is_local(directory):
    yield
    return
  lock_file = os.path.join(directory, LOCK_FILE)
  try:
    handle = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as err:
    if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
      raise
    try:
      handle = os.open(lock_file, os.O_RDONLY)
    except OSError:
      yield
      return
  try:
    fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
    yield
  finally:
    os.close(handle)  # Closing releases the lock.


def damaged(
  error: type[Exception], function: str, directory: str, step: int, part: str
) -> Exception:
  """The error ``function`` raises for a damaged step, naming the damage."""
  return error(
    f'checkpoint.{function}: step {step} of the checkpoint {directory} is'
    f' damaged: {part}. {_IF_DAMAGED[function]}'
  )


def root_cause(err: BaseException) -> BaseException:
  while err.__cause__ is not None:
    err = err.__cause__
  return err


def reason(err: BaseException) -> str:
  """The first line of the error at the root of ``err``, without specs."""
  err = root_cause(err)
  text = str(err).split(' [tensorstore_spec=')[0].split(' See full')[0]
  text = text.strip().splitlines()[0] if text.strip() else ''
  return f'{type(err).__name__}: {text[:300]}'


def _variables_named(names: list[str]) -> str:
  """``'variable a is'`` or ``'variables a, b are'``."""
  if len(names) == 1:
    return f'variable {names[0]} is'
  return f'variables {", ".join(names)} are'


def _read_json(
  file: epath.Path, fail: Callable[[type[Exception], str], Exception]
) -> dict[str, Any]:
  """The JSON object in ``file``; ``fail``'s error if missing or corrupt."""
  try:
    text = file.read_text()
  except FileNotFoundError as err:
    raise fail(FileNotFoundError, f'its file {file} is missing') from err
  except (OSError, UnicodeDecodeError) as err:
    raise fail(ValueError, f'its file {file} is unreadable ({err})') from err
  try:
    value = json.loads(text)
  except json.JSONDecodeError as err:
    raise fail(ValueError, f'its file {file} is corrupt JSON ({err})') from err
  if not isinstance(value, dict):
    raise fail(ValueError, f'its file {file} holds no JSON object')
  return value


def check_files(
  directory: str,
  where: epath.Path,
  step: int,
  function: str,
  check_data: bool,
) -> None:
  """Raises an error naming the first damaged part of the step's files.

  Checks that the metadata files parse, that the array index lists every
  array, and, if ``check_data``, that every array decodes in full (one
  array at a time), which it does not if a data file is missing,
  truncated or scrambled.

  Args:
    directory: the checkpoint, as the messages name it.
    where: the path through which TensorStore reaches it.
    step: the step to check.
    function: ``'save'`` or ``'restore'``, named in the messages.
    check_data: whether to read the arrays' data too.
  """
  import tensorstore as ts

  def fail(error: type[Exception], part: str) -> Exception:
    return damaged(error, function, directory, step, part)

  step_directory = epath.Path(directory) / str(step)
  item = step_directory / ITEM
  _read_json(step_directory / STEP_METADATA, fail)
  if item.exists() and not item.is_dir():
    raise fail(ValueError, f'its directory {item} is a file')
  if not item.exists():
    raise fail(FileNotFoundError, f'its directory {item} is missing')
  metadata = _read_json(item / ITEM_METADATA, fail)
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
    raise fail(
      ValueError,
      f'its metadata file {item / ITEM_METADATA} is corrupt: its'
      f' tree_metadata is malformed ({type(err).__name__}: {err})',
    ) from err
  if any(kind == 'jax.Array' for _, kind in arrays.values()):
    _read_json(item / SHARDINGS, fail)
  base = os.fspath(where / str(step) / ITEM) + '/'
  store_spec: Any = {'driver': 'file', 'path': base}
  if not is_local(directory):
    store_spec = base
  if metadata.get('use_ocdbt'):
    if not (item / ARRAY_INDEX).exists():
      raise fail(
        FileNotFoundError, f'its array index {item / ARRAY_INDEX} is missing'
      )
    store_spec = {'driver': 'ocdbt', 'base': store_spec}
  try:
    store = ts.KvStore.open(store_spec).result()
    keys = [key.decode() for key in store.list().result()]
  except Exception as err:
    raise fail(
      ValueError, f'its array index in {item} is unreadable ({reason(err)})'
    ) from err
  array_metadata = 'zarr.json' if metadata.get('use_zarr3') else '.zarray'
  missing = [
    name
    for stored_name, (name, _) in sorted(arrays.items())
    if f'{stored_name}/{array_metadata}' not in keys
  ]
  if missing:
    raise fail(
      FileNotFoundError,
      f'{_variables_named(missing)} missing from its arrays in {item}',
    )
  if not check_data:
    return
  # Each key is an array's name (keys hold no '/'), then '/', then its
  # metadata or a chunk: a deleted data file reads empty, a truncated one
  # fails.
  reads = {
    key: store.read(key, byte_range=slice(-1, None))
    for key in keys
    if key.partition('/')[0] in arrays
  }
  broken = set()
  for key, read in reads.items():
    try:
      intact = bool(read.result().value)
    except Exception:
      intact = False
    if not intact:
      broken.add(arrays[key.partition('/')[0]][0])
  if broken:
    raise fail(
      ValueError,
      f'the data of {_variables_named(sorted(broken))} truncated or missing'
      f' in {item}',
    )
  # Every chunk is there: decode each array, so that one whose data is
  # scrambled fails here rather than inside Orbax's concurrent reads.
  driver = 'zarr3' if metadata.get('use_zarr3') else 'zarr'
  for stored_name in sorted(arrays):
    if metadata.get('use_ocdbt'):
      kvstore = {**store_spec, 'path': f'{stored_name}/'}
    elif is_local(directory):
      kvstore = {'driver': 'file', 'path': f'{base}{stored_name}/'}
    else:
      kvstore = f'{base}{stored_name}/'
    try:
      array = ts.open({'driver': driver, 'kvstore': kvstore}).result()
      array.read().result()
    except Exception as err:
      raise fail(
        ValueError,
        f'its arrays in {item} could not be read ({reason(err)})',
      ) from err
