"""Lossless, atomic checkpoints of variables and train states, on Orbax."""

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from flax_dense._src import checkpoint_files as files
from flax_dense._src.validate import check_bool

if TYPE_CHECKING:
  import orbax.checkpoint as ocp

# Orbax refuses zero-size arrays: each is saved as this one-byte stand-in and
# rebuilt on restore from its shape and dtype, kept in the item's metadata.
_ZERO_SIZE = 'flax_dense_zero_size_arrays'

# TensorStore's errors reading the files start with their status code.
_STORAGE_ERROR = re.compile(r'[A-Z_]+: ')

# The Python numbers a tree may hold, and the dtypes Orbax stores them with.
_PYTHON_SCALARS = {bool: np.dtype(bool), int: np.dtype(np.int64)}
_PYTHON_SCALARS[float] = np.dtype(np.float64)


def _manager(where: epath.Path, create: bool) -> 'ocp.CheckpointManager':
  """Orbax manager of ``where`` that keeps only its newest complete step."""
  # Imported here: Orbax takes a second to import, which a program that
  # never checkpoints should not pay on ``import flax_dense``.
  import orbax.checkpoint as ocp

  return ocp.CheckpointManager(
    where,
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1, enable_async_checkpointing=False, create=create
    ),
    item_handlers=ocp.StandardCheckpointHandler(),
  )


def save(
  path: str | bytes | os.PathLike,
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
  :func:`restore` never sees a partial one. Saves and restores of one local
  directory take turns: each holds a lock (``fcntl.flock`` on the file
  ``.flax_dense.lock`` in ``path``) throughout, so two processes saving at
  once write one version after the other. (The processes of one multi-host
  run, which save together in Orbax's barriers, take no lock.)

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
    path: the checkpoint directory, created if absent: a ``str``, UTF-8
      ``bytes`` or ``os.PathLike`` (``pathlib.Path``, ``epath.Path``). Any
      name the file system accepts works, spaces, ``#%?[{\\`` and non-ASCII
      letters included; a URL such as ``gs://bucket/run`` goes to Orbax
      as is.
    tree: a pytree of arrays and numbers: ``variables`` of any collections,
      an optax state, a ``flax.training.train_state.TrainState``, or a dict
      of them; it must hold at least one. A leaf is a JAX array, a NumPy
      array or scalar of a numeric or bool dtype, or a Python ``bool``,
      ``int`` (within int64) or ``float``; a NumPy scalar is stored as a
      0-d array and restored as the scalar it was. Dict keys must be
      non-empty and hold no ``/``, and no two leaves may have the same
      dotted name (``{'a.b': x, 'a': {'b': y}}``), which Orbax stores them
      under.
    step: number of the new version, a non-negative Python or NumPy
      integer, e.g. the training step; default: one more than the newest
      saved, or 0.
    overwrite: ``True`` to replace the newest version even if its variables
      differ from those of ``tree``, or if it is damaged; a bool.

  Returns:
    The number of the version saved.

  Raises:
    TypeError: if ``path`` is not a path, ``step`` not an integer (a
      float, a bool, ...), ``overwrite`` not a bool, or a leaf of ``tree``
      of a type that cannot be stored (a string, ``None``-like objects, a
      complex Python number, an array of strings or objects); the message
      names the leaf.
    ValueError: if ``step`` is negative or not greater than the newest
      version already in ``path``; if ``tree`` holds no array or number, an
      empty key or one with ``/``, two leaves of one dotted name (both
      named), or a Python int beyond int64; if ``path`` is empty, holds a
      NUL or is not UTF-8, or is a file; or, without ``overwrite``, if the
      variables of ``tree`` differ from those of the newest version (the
      message names each difference) or that version is damaged.
    FileNotFoundError: without ``overwrite``, if a file of the newest
      version is missing.
  """
  import orbax.checkpoint as ocp

  directory = files.directory_of(path, 'save')
  if step is not None:
    step = _checked_step(step, 'save')
  overwrite = check_bool(overwrite, 'checkpoint.save', 'overwrite')
  tree = _checked_tree(nn.meta.unbox(tree), 'save', 'tree')
  if not jax.tree.leaves(tree):
    raise ValueError(
      f'checkpoint.save: tree holds no array or scalar to save, got {tree!r};'
      ' pass the variables or train state to checkpoint.'
    )
  metadata: dict[str, Any] = {_ZERO_SIZE: _zero_size_arrays(tree)}
  if files.is_local(directory):
    os.makedirs(directory, exist_ok=True)
  # The lock serialises independent processes. The processes of one
  # multi-host run save and restore together, in Orbax's own barriers: a
  # lock held by one of them while another waits on it would deadlock them.
  with (
    files.locked(directory, exclusive=True, hold=jax.process_count() == 1),
    files.orbax_path(directory) as where,
    _manager(where, create=True) as manager,
  ):
    latest = manager.latest_step()
    if step is None:
      step = 0 if latest is None else latest + 1
    elif latest is not None and step <= latest:
      raise ValueError(
        f'checkpoint.save: step must be a non-negative integer greater than'
        f' the newest step saved in {directory} ({latest}), got {step}; pass'
        ' a larger step, or step=None for the next one.'
      )
    if latest is not None and not overwrite:
      saved = _saved_variables(manager, directory, where, latest, 'save')[0]
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


def latest_step(path: str | bytes | os.PathLike) -> int | None:
  """The newest complete version in the checkpoint ``path``, or ``None``.

  A version counts once its save has committed; whether its files are still
  intact is checked by :func:`restore`. A save under way is waited for.

  Args:
    path: a checkpoint directory written by :func:`save` (a ``str``, UTF-8
      ``bytes`` or ``os.PathLike``); it may not exist.

  Returns:
    The step number, or ``None`` if ``path`` holds no complete checkpoint.

  Raises:
    TypeError: if ``path`` is not a path.
    ValueError: if ``path`` is a file, empty, or not UTF-8.
  """
  directory = files.directory_of(path, 'latest_step')
  if not epath.Path(directory).exists():
    return None
  with (
    files.locked(directory, exclusive=False, hold=jax.process_count() == 1),
    files.orbax_path(directory) as where,
    _manager(where, create=False) as manager,
  ):
    return manager.latest_step()


def restore(
  path: str | bytes | os.PathLike, target: Any = None, step: int | None = None
) -> Any:
  """Restores the checkpoint ``path``, bit for bit, into ``target``'s shape.

  With a ``target`` (concrete arrays or ``jax.ShapeDtypeStruct``, e.g.
  ``jax.eval_shape(model.init, key, x)``), the result has ``target``'s
  structure (optax namedtuples, ``TrainState``). Every array lands on the
  target leaf's sharding, so a checkpoint saved on one mesh restores onto
  another; a leaf without one (a ``ShapeDtypeStruct`` whose ``sharding`` is
  ``None``) lands on the default device, whatever the devices the checkpoint
  was saved from; NumPy leaves come back as NumPy arrays, NumPy scalars as
  NumPy scalars, Python numbers as Python numbers. Nothing is converted: a
  target leaf must have the stored dtype, a Python ``bool``, ``int`` or
  ``float`` standing for bool, int64 or float64. Without a target, the raw
  pytree comes back: dicts, lists for tuples, ``None`` for empty states,
  0-d NumPy arrays for NumPy scalars, and arrays on the sharding they were
  saved with, or on the default device where this process lacks those
  devices.

  Before reading any array, the version's files are checked: its metadata,
  the index of its arrays, and that every array's data is present in full
  and decodes. A save of the same directory under way is waited for, so the
  tree restored is always one that a save wrote whole.

  Args:
    path: a checkpoint directory written by :func:`save` (a ``str``, UTF-8
      ``bytes`` or ``os.PathLike``).
    target: a pytree with the structure, shapes and dtypes of the saved
      one; boxed (partitioned) leaves are unboxed first.
    step: the version to read, a non-negative Python or NumPy integer;
      default: the newest.

  Returns:
    The saved pytree.

  Raises:
    TypeError: if ``path`` is not a path, ``step`` not an integer, or a
      leaf of ``target`` is of a type that is never stored.
    FileNotFoundError: if ``path`` holds no complete checkpoint, or not
      ``step``, or a file of the version is missing; the message names the
      path, the step and the file.
    ValueError: if ``step`` is negative; if ``path`` is a file, empty or not
      UTF-8; if the version is damaged (a corrupt metadata file or array
      index, truncated, missing or undecodable array data; the message
      names the path, the step and the damaged part); or if ``target`` has
      other variables than the checkpoint, or a variable of another shape
      or dtype (a Python number counting as its int64, float64 or bool),
      e.g. a model built for other inputs; the message names the variable
      and both shapes or dtypes; or if ``target`` has keys that ``save``
      refuses (empty, with ``/``, or two leaves of one dotted name).
  """
  import orbax.checkpoint as ocp

  directory = files.directory_of(path, 'restore')
  if step is not None:
    step = _checked_step(step, 'restore')
  like = None if target is None else nn.meta.unbox(target)
  if target is not None:
    target = _checked_tree(like, 'restore', 'target')
  if not epath.Path(directory).is_dir():
    raise FileNotFoundError(
      f'checkpoint.restore: no complete checkpoint in {directory}.'
    )
  with (
    files.locked(directory, exclusive=False, hold=jax.process_count() == 1),
    files.orbax_path(directory) as where,
    _manager(where, create=False) as manager,
  ):
    if manager.latest_step() is None:
      raise FileNotFoundError(
        f'checkpoint.restore: no complete checkpoint in {directory}.'
      )
    step = manager.latest_step() if step is None else step
    if step not in manager.all_steps():
      raise FileNotFoundError(
        f'checkpoint.restore: no step {step} in {directory}; it holds steps'
        f' {sorted(manager.all_steps())}.'
      )
    saved, zero_size = _saved_variables(
      manager, directory, where, step, 'restore'
    )
    default = jax.sharding.SingleDeviceSharding(_default_device())
    if target is None:
      args = ocp.args.StandardRestore(fallback_sharding=default)
    else:
      problems = _differences(saved, _variables(target), 'the target')
      if problems:
        raise ValueError(
          f'checkpoint.restore: the target does not match the checkpoint'
          f' {directory} (step {step}): {"; ".join(problems)}. Build the'
          " target from a model of the checkpoint's shapes and dtypes, or"
          ' restore with target=None to read the arrays as saved.'
        )
      args = ocp.args.StandardRestore(
        jax.tree.map(
          lambda leaf: _placed(leaf, default), _with_stand_ins(target)
        )
      )
    try:
      restored = manager.restore(step, args=args)
    except Exception as err:
      if not _STORAGE_ERROR.match(str(files.root_cause(err))):
        raise  # Not the files: e.g. a target leaf of a type Orbax lacks.
      raise files.damaged(
        ValueError,
        'restore',
        directory,
        step,
        f'its arrays in {epath.Path(directory) / str(step) / files.ITEM}'
        f' could not be read ({files.reason(err)})',
      ) from err

  def rebuilt(name: str, leaf: Any, like: Any) -> Any:
    """``leaf``, or the zero-size array it stands in for, placed as ``like``."""
    if name in zero_size:
      if target is None:
        return _zeros(zero_size[name], default, zero_size[name]['numpy'])
      sharding = getattr(like, 'sharding', None) or default
      return _zeros(zero_size[name], sharding, _is_numpy(like))
    if isinstance(like, np.generic):  # A NumPy scalar, stored 0-d.
      return np.asarray(leaf, like.dtype)[()]
    return leaf

  return _map_with_names(rebuilt, restored, restored if like is None else like)


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
      shape, dtype, _ = _stored_as(leaf)
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
  manager: Any, directory: str, where: epath.Path, step: int, function: str
) -> tuple[dict[str, Any], dict[str, Any]]:
  """The shape and dtype of each saved variable, and the zero-size arrays.

  Checks the step's files first (for a restore, its array data too), so
  that Orbax never reads a damaged one.

  Returns:
    The stored shape and dtype of each variable by name, and the
    description of each zero-size array by name.
  """
  item = epath.Path(directory) / str(step) / files.ITEM
  files.check_files(directory, where, step, function, function == 'restore')
  try:
    metadata = manager.item_metadata(step)
    saved = {
      name: (tuple(leaf.shape), leaf.dtype)
      for name, leaf in _by_name(metadata.tree).items()
    }
    zero_size = dict((metadata.custom_metadata or {}).get(_ZERO_SIZE, {}))
    for name, description in zero_size.items():
      saved[name] = (tuple(description['shape']), description['dtype'])
  except Exception as err:
    raise files.damaged(
      ValueError,
      function,
      directory,
      step,
      f'the metadata of its arrays in {item} is unreadable'
      f' ({files.reason(err)})',
    ) from err
  return saved, zero_size


def _checked_tree(tree: Any, function: str, name: str) -> Any:
  """``tree`` with NumPy scalars as 0-d arrays, once its keys and leaves pass.

  Raises:
    TypeError: for a leaf that cannot be stored, naming it.
    ValueError: for an empty key, a key with ``/``, two leaves of one
      dotted name, or a Python int beyond int64.
  """
  where = f'checkpoint.{function}: {name}'
  dotted: dict[str, str] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    shown = jax.tree_util.keystr(path) or '(the root)'
    for key in map(_key_name, path):
      if key == '' or '/' in key:
        raise ValueError(
          f'{where} has the key {key!r} (at {shown}), which Orbax cannot'
          ' store: a key must be non-empty and hold no "/"; rename it.'
        )
    stored = '.'.join(map(_key_name, path))
    if stored in dotted:
      raise ValueError(
        f'{where} has the leaves {dotted[stored]} and {shown}, which Orbax'
        f' would both store under the name {stored!r}; rename one of them.'
      )
    dotted[stored] = shown
    _check_leaf(leaf, f'{where} leaf {shown}', function == 'restore')
  return jax.tree.map(
    lambda leaf: np.asarray(leaf) if isinstance(leaf, np.generic) else leaf,
    tree,
  )


def _check_leaf(leaf: Any, where: str, abstract: bool) -> None:
  """Raises our error for a leaf that cannot be stored (or is no target)."""
  if type(leaf) in _PYTHON_SCALARS or isinstance(leaf, bool):
    if isinstance(leaf, int) and not -(2**63) <= leaf < 2**63:
      raise ValueError(
        f'{where} is the Python int {leaf}, beyond int64, the largest'
        ' integer Orbax stores; store it as a float or split it.'
      )
    return
  kinds = (jax.Array, np.ndarray, np.generic)
  kinds += (jax.ShapeDtypeStruct,) if abstract else ()
  dtype = getattr(leaf, 'dtype', None) if isinstance(leaf, kinds) else None
  if dtype is not None and (
    jnp.issubdtype(dtype, jax.dtypes.prng_key)
    or jnp.issubdtype(dtype, jnp.number)
    or jnp.issubdtype(dtype, jnp.bool_)
  ):
    return
  raise TypeError(
    f'{where} is {leaf!r:.80} of type {type(leaf).__name__}'
    f'{f" with dtype {dtype}" if dtype is not None else ""}; a leaf must be'
    ' a JAX or NumPy array or NumPy scalar of a numeric or bool dtype, or a'
    ' Python bool, int or float'
    f'{", or a jax.ShapeDtypeStruct" if abstract else ""}.'
  )


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


def _stored_as(leaf: Any) -> tuple[tuple[int, ...], Any, str]:
  """Shape, dtype and dtype's name under which ``leaf`` is stored.

  A typed PRNG key is stored as its data; a Python number as a scalar of
  the dtype of ``_PYTHON_SCALARS``.
  """
  if type(leaf) in _PYTHON_SCALARS:
    dtype = _PYTHON_SCALARS[type(leaf)]
    return (), dtype, f'{dtype} (a Python {type(leaf).__name__})'
  dtype = getattr(leaf, 'dtype', None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    leaf = jax.eval_shape(jax.random.key_data, leaf)
    dtype = leaf.dtype
  return tuple(np.shape(leaf)), dtype, str(jnp.dtype(dtype))


def _variables(tree: Any) -> dict[str, tuple[tuple[int, ...], Any, str]]:
  """The shape and dtype under which each variable of ``tree`` is stored."""
  return {name: _stored_as(leaf) for name, leaf in _by_name(tree).items()}


def _differences(
  saved: dict[str, tuple[tuple[int, ...], Any]],
  given: dict[str, tuple[tuple[int, ...], Any, str]],
  given_as: str,
) -> list[str]:
  """Every variable where ``given`` (called ``given_as``) differs from ``saved``.

  Dtypes must be equal: a Python number counts as the dtype Orbax stores
  it with, so that nothing is converted on restore.
  """
  problems = []
  missing = sorted(given.keys() - saved.keys())
  if missing:
    problems.append(f'the checkpoint has no {", ".join(missing)}')
  unexpected = sorted(saved.keys() - given.keys())
  if unexpected:
    problems.append(f'{given_as} has no {", ".join(unexpected)}')
  for name in sorted(saved.keys() & given.keys()):
    (saved_shape, saved_dtype), (shape, dtype, label) = saved[name], given[name]
    if saved_shape != shape:
      problems.append(
        f'variable {name} has shape {saved_shape} in the checkpoint but'
        f' {shape} in {given_as}'
      )
    elif saved_dtype is not None and jnp.dtype(saved_dtype) != jnp.dtype(dtype):
      problems.append(
        f'variable {name} has dtype {jnp.dtype(saved_dtype)} in the'
        f' checkpoint but {label} in {given_as}'
      )
  return problems
