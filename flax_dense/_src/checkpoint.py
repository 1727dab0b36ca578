"""Lossless, atomic checkpoints of variables and train states, on Orbax."""

import os
from typing import Any

import flax.linen as nn
import jax
import numpy as np


def _manager(path: str | os.PathLike, create: bool) -> Any:
  """Orbax manager of ``path`` that keeps only its newest complete step."""
  # Imported here: Orbax takes a second to import, which a program that
  # never checkpoints should not pay on ``import flax_dense``.
  import orbax.checkpoint as ocp

  directory = os.fspath(path)
  if '://' not in directory:
    directory = os.path.abspath(directory)
  return ocp.CheckpointManager(
    directory,
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1, enable_async_checkpointing=False, create=create
    ),
    item_handlers=ocp.StandardCheckpointHandler(),
  )


def save(path: str | os.PathLike, tree: Any, step: int | None = None) -> int:
  """Saves every array of ``tree`` as a new version of the checkpoint ``path``.

  ``path`` is a directory of numbered versions (Orbax steps). The new one is
  written to a temporary directory and renamed into place only once complete
  (Orbax's atomic commit); only then are the older versions deleted. A save
  killed midway therefore leaves the previous version readable, and
  :func:`restore` never sees a partial one.

  Arrays are stored exactly, whatever their dtype (float32, bfloat16,
  integers, typed PRNG keys) and sharding: every process of a multi-host
  run writes its own shards; all of them must call ``save``. Partitioning
  boxes (``nn.LogicallyPartitioned``) are unboxed: the layout lives in the
  restore target's shardings, not in the file.

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

  Args:
    path: the checkpoint directory; created if absent.
    tree: a pytree of arrays and scalars: ``variables`` of any collections,
      an optax state, a ``flax.training.train_state.TrainState``, or a dict
      of them.
    step: number of the new version, e.g. the training step; default: one
      more than the newest saved, or 0.

  Returns:
    The number of the version saved.

  Raises:
    ValueError: if ``step`` is negative or not greater than the newest
      version already in ``path``.
  """
  import orbax.checkpoint as ocp

  tree = nn.meta.unbox(tree)
  with _manager(path, create=True) as manager:
    latest = manager.latest_step()
    if step is None:
      step = 0 if latest is None else latest + 1
    elif step < 0 or (latest is not None and step <= latest):
      raise ValueError(
        f'checkpoint.save: step must be a non-negative integer greater than'
        f' the newest step saved in {path} ({latest}), got {step}; pass a'
        ' larger step, or step=None for the next one.'
      )
    manager.save(step, args=ocp.args.StandardSave(tree))
  return step


def latest_step(path: str | os.PathLike) -> int | None:
  """The newest complete version in the checkpoint ``path``, or ``None``.

  Args:
    path: a checkpoint directory written by :func:`save`; it may not exist.

  Returns:
    The step number, or ``None`` if ``path`` holds no complete checkpoint.
  """
  if not os.path.isdir(path) and '://' not in os.fspath(path):
    return None
  with _manager(path, create=False) as manager:
    return manager.latest_step()


def restore(
  path: str | os.PathLike, target: Any = None, step: int | None = None
) -> Any:
  """Restores the checkpoint ``path``, bit for bit, into ``target``'s shape.

  With a ``target`` (concrete arrays or ``jax.ShapeDtypeStruct``, e.g.
  ``jax.eval_shape(model.init, key, x)``), the result has ``target``'s
  structure (optax namedtuples, ``TrainState``) and every array lands on
  the target leaf's sharding, so a checkpoint saved on one mesh restores
  onto another. Without a target, the raw pytree comes back: dicts, lists
  for tuples, ``None`` for empty states.

  Args:
    path: a checkpoint directory written by :func:`save`.
    target: a pytree with the structure, shapes and dtypes of the saved
      one; boxed (partitioned) leaves are unboxed first.
    step: the version to read; default: the newest.

  Returns:
    The saved pytree.

  Raises:
    FileNotFoundError: if ``path`` holds no complete checkpoint, or not
      ``step``.
    ValueError: if ``target`` has other variables than the checkpoint, or a
      variable of another shape or dtype, e.g. a model built for other
      inputs; the message names the variable and both shapes.
  """
  import orbax.checkpoint as ocp

  if latest_step(path) is None:
    raise FileNotFoundError(
      f'checkpoint.restore: no complete checkpoint in {path}.'
    )
  with _manager(path, create=False) as manager:
    step = manager.latest_step() if step is None else step
    if step not in manager.all_steps():
      raise FileNotFoundError(
        f'checkpoint.restore: no step {step} in {path}; it holds steps'
        f' {sorted(manager.all_steps())}.'
      )
    if target is None:
      return manager.restore(step, args=ocp.args.StandardRestore())
    target = nn.meta.unbox(target)
    _check_matches(
      manager.item_metadata(step).tree, target, f'{path} (step {step})'
    )
    return manager.restore(step, args=ocp.args.StandardRestore(target))


def _by_name(tree: Any) -> dict[str, Any]:
  """The leaves of ``tree`` by their path, e.g. ``'params/kernel'``."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(map(_key_name, path)): leaf for path, leaf in leaves}


def _key_name(key: Any) -> str:
  """``'kernel'`` for a dict key or an attribute, ``'0'`` for an index."""
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _stored_as(leaf: Any) -> tuple[tuple[int, ...], Any]:
  """Shape and dtype under which ``leaf`` is stored; keys as their data."""
  dtype = getattr(leaf, 'dtype', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    leaf = jax.eval_shape(jax.random.key_data, leaf)
    dtype = leaf.dtype
  return tuple(np.shape(leaf) if dtype is None else leaf.shape), dtype


def _check_matches(stored: Any, target: Any, where: str) -> None:
  """Raises a ValueError naming every variable where the two trees differ."""
  stored, target = _by_name(stored), _by_name(target)
  problems = []
  missing = sorted(target.keys() - stored.keys())
  if missing:
    problems.append(f'the checkpoint has no {", ".join(missing)}')
  unexpected = sorted(stored.keys() - target.keys())
  if unexpected:
    problems.append(f'the target has no {", ".join(unexpected)}')
  for name in sorted(stored.keys() & target.keys()):
    shape, dtype = _stored_as(target[name])
    saved = stored[name]
    if tuple(saved.shape) != shape:
      problems.append(
        f'variable {name} has shape {tuple(saved.shape)} in the checkpoint'
        f' but {shape} in the target'
      )
    elif dtype is not None and np.dtype(saved.dtype) != np.dtype(dtype):
      problems.append(
        f'variable {name} has dtype {np.dtype(saved.dtype)} in the checkpoint'
        f' but {np.dtype(dtype)} in the target'
      )
  if problems:
    raise ValueError(
      f'checkpoint.restore: the target does not match the checkpoint {where}:'
      f' {"; ".join(problems)}. Build the target from a model of the'
      " checkpoint's shapes, or restore with target=None to read the arrays"
      ' as saved.'
    )
