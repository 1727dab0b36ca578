"""Checkpoints that lose nothing: every collection, bit for bit, atomically.

A thin layer over Orbax (``orbax.checkpoint``, which Flax itself depends
on)::

  fd.checkpoint.save(path, {'params': params, 'opt_state': opt_state})
  state = fd.checkpoint.restore(path, target={'params': ..., 'opt_state': ...})

``path`` is a directory of numbered versions (a ``str``, UTF-8 ``bytes`` or
``os.PathLike``; any name the file system accepts); each :func:`save` writes
a new one atomically and then drops the older ones, so a run killed while
saving resumes from its previous checkpoint. Saves and restores of one
directory take turns under a lock file, ``.flax_dense.lock``, in it. A save
whose variables differ from the newest version's is refused unless
``overwrite=True``, so that no model is deleted by mistake; so is a tree
that Orbax cannot store as it is (a string leaf, an empty key, two leaves
such as ``{'a.b': x, 'a': {'b': y}}`` that Orbax would store under one
name). :func:`restore` checks the version's files, then, with a ``target``,
every variable's shape and dtype (nothing is converted), and restores onto
the target's shardings (the default device for leaves without one); a
damaged checkpoint raises a ``ValueError`` or ``FileNotFoundError`` naming
the path, the step and the damaged file. :func:`latest_step` tells a
training loop where to resume. None of them sets a process-wide hook.
"""

from flax_dense._src.checkpoint import latest_step as latest_step
from flax_dense._src.checkpoint import restore as restore
from flax_dense._src.checkpoint import save as save

__all__ = [
  'latest_step',
  'restore',
  'save',
]
