"""Property tests of fd.checkpoint over paths and tree keys (hypothesis).

A save either raises our ``ValueError`` before writing anything, for a
reason this file computes on its own, or returns, and then the checkpoint
restores bit for bit, with a target and without. Derandomized and bounded,
like tests/test_fuzz.py.
"""

import os
import re
import string
import tempfile

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import flax_dense as fd

SETTINGS = settings(
  max_examples=20,
  deadline=None,
  derandomize=True,
  suppress_health_check=list(HealthCheck),
  database=None,
  phases=[Phase.generate],
)

# Printable ASCII but the separator, and a few letters beyond it.
CHARACTERS = [c for c in string.printable if c not in '/\n\r\x0b\x0c']
CHARACTERS += ['é', 'ß', '日', '😀', '\u200b']

names = st.text(st.sampled_from(CHARACTERS), min_size=1, max_size=8).filter(
  lambda name: name not in ('.', '..')
)

DTYPES = [np.float32, np.float16, np.int8, np.uint32, np.bool_, np.int64]


@st.composite
def leaves(draw):
  """An array, a NumPy scalar or a Python number."""
  kind = draw(st.sampled_from(['array', 'numpy', 'python']))
  dtype = np.dtype(draw(st.sampled_from(DTYPES)))
  seed = draw(st.integers(0, 2**16))
  data = np.random.default_rng(seed).integers(0, 100, size=3).astype(dtype)
  if kind == 'array':
    return data
  if kind == 'numpy':
    return data[0]
  return draw(st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1)))


# Any keys, and a few that collide once joined with dots ('a.b', a/b, x/0).
keys = st.one_of(
  st.text(st.sampled_from(CHARACTERS + ['.', '/']), max_size=4),
  st.sampled_from(['a', 'b', 'a.b', 'a.', '.b', '0', 'a.0', 'x']),
)
trees = st.recursive(
  leaves(),
  lambda children: st.one_of(
    st.dictionaries(keys, children, min_size=1, max_size=3),
    st.lists(children, min_size=1, max_size=2),
  ),
  max_leaves=6,
).filter(lambda tree: isinstance(tree, dict))


def _colliding(drawn):
  """``{'a.b': x, 'a': {'b': y}}`` and the like: one name, two leaves."""
  first, second, name = drawn
  head, _, tail = name.partition('.')
  return {name: first, head: {tail: second}}


# Three draws in four of any tree, one of a colliding one.
trees = st.one_of(
  trees,
  trees,
  trees,
  st.tuples(
    leaves(), leaves(), st.sampled_from(['a.b', 'a..b', 'a.b.c', '.a'])
  ).map(_colliding),
)


def bit_identical(restored, saved):
  assert jax.tree.structure(restored) == jax.tree.structure(saved)
  for got, want in zip(
    jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True
  ):
    assert type(got) is type(want)
    got, want = np.asarray(got), np.asarray(want)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    assert got.tobytes() == want.tobytes()


@settings(SETTINGS, max_examples=10)
@given(name=names, parent=names)
def test_any_directory_name_round_trips(name, parent):
  with tempfile.TemporaryDirectory() as base:
    path = os.path.join(base, parent, name)
    tree = {'w': np.arange(4, dtype=np.float32) / 3, 'n': np.int16(-7)}
    assert fd.checkpoint.save(path, tree) == 0
    assert fd.checkpoint.save(path, tree) == 1
    bit_identical(fd.checkpoint.restore(path, target=tree), tree)
    assert sorted(os.listdir(path)) == ['.flax_dense.lock', '1']
    assert os.listdir(base) == [parent]


def refusal(tree):
  """The error our save must raise for ``tree``'s keys, as a regex, or None."""
  seen = {}
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = [
      str(getattr(entry, 'key', getattr(entry, 'idx', None))) for entry in path
    ]
    for key in parts:
      if key == '' or '/' in key:
        return re.escape(f'has the key {key!r} (at ')
    dotted = '.'.join(parts)
    if dotted in seen:
      return re.escape(
        f'which Orbax would both store under the name {dotted!r}'
      )
    seen[dotted] = path
  return None


@SETTINGS
@given(tree=trees)
def test_tree_keys_round_trip_or_are_refused(tree):
  expected = refusal(tree)
  with tempfile.TemporaryDirectory() as base:
    path = os.path.join(base, 'ckpt')
    if expected is not None:
      with pytest.raises(
        ValueError, match=r'checkpoint\.save: tree .*' + expected
      ):
        fd.checkpoint.save(path, tree)
      assert not os.path.exists(path)
      return
    fd.checkpoint.save(path, tree)
    bit_identical(fd.checkpoint.restore(path, target=tree), tree)
    raw = fd.checkpoint.restore(path)
    assert jax.tree.structure(raw) == jax.tree.structure(tree)
    for got, want in zip(
      jax.tree.leaves(raw), jax.tree.leaves(tree), strict=True
    ):
      assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
