"""Tests of fd.checkpoint on odd inputs: paths, keys, leaves, targets, flags.

Every path the file system accepts saves and restores bit for bit; every
tree or target that cannot be stored or restored as it is raises our error
before anything is written or converted; concurrent saves of one directory
take turns.
"""

import os
import re
import string
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_dense as fd


def tree():
  return {
    'w': np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    'n': np.arange(5000, dtype=np.int32),
    'j': jnp.arange(3, dtype=jnp.bfloat16),
  }


def assert_bit_exact(restored, saved):
  assert jax.tree.structure(restored) == jax.tree.structure(saved)
  for got, want in zip(
    jax.tree.leaves(restored), jax.tree.leaves(saved), strict=True
  ):
    assert type(got) is type(want) or isinstance(want, jax.Array)
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def round_trip(path):
  """Saves twice into ``path``, then restores with and without a target."""
  assert fd.checkpoint.save(path, tree()) == 0
  assert fd.checkpoint.save(path, tree()) == 1
  assert fd.checkpoint.latest_step(path) == 1
  assert_bit_exact(fd.checkpoint.restore(path, target=tree()), tree())
  raw = fd.checkpoint.restore(path)
  for name, leaf in tree().items():
    np.testing.assert_array_equal(np.asarray(raw[name]), np.asarray(leaf))


# Every printable ASCII character but '/', the separator, and non-ASCII names.
NAMES = [f'a{char}b' for char in string.printable.strip() if char != '/']
NAMES += ['a b', 'é', '日本', '😀', 'a\\\\b', '\\', '#', '%25', '[x]', '{y}']


@pytest.mark.parametrize('name', NAMES, ids=ascii)
def test_any_path_round_trips_where_it_names(tmp_path, name):
  path = tmp_path / name / 'ckpt'
  round_trip(path)
  # The files are where the path says, and nowhere else.
  assert sorted(os.listdir(tmp_path)) == [name]
  assert sorted(os.listdir(path)) == ['.flax_dense.lock', '1']


def test_url_characters_were_read_as_damage(tmp_path):
  # The array index was opened as 'file://' + path, so '#' cut the path.
  for name in ('a#b', 'c%d', 'e?f'):
    fd.checkpoint.save(tmp_path / name, tree())
    assert_bit_exact(
      fd.checkpoint.restore(tmp_path / name, target=tree()), tree()
    )


def test_path_types(tmp_path):
  from etils import epath

  for path in (
    str(tmp_path / 's'),
    os.fsencode(tmp_path / 'bytes'),
    os.fsencode(tmp_path / 'é'),
    epath.Path(tmp_path / 'e'),
    tmp_path / 'p',
  ):
    round_trip(path)
  assert os.path.isdir(tmp_path / 'bytes' / '1')
  assert os.path.isdir(tmp_path / 'é' / '1')


def test_relative_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  round_trip('relative[1]')
  assert os.path.isdir(tmp_path / 'relative[1]' / '1')


@pytest.mark.parametrize(
  'path, error, message',
  [
    (b'\xff\xfe', ValueError, r"path b'\\xff\\xfe' is not UTF-8"),
    ('a\0b', ValueError, r"holds the character '\\x00', which no file system"),
    ('a\udcffb', ValueError, r"holds the character '\\udcff', which UTF-8"),
    ('', ValueError, 'path is empty'),
    (3, TypeError, 'path must be a str, bytes or os.PathLike'),
    (None, TypeError, 'got None of type NoneType'),
  ],
  ids=repr,
)
def test_paths_refused(tmp_path, monkeypatch, path, error, message):
  monkeypatch.chdir(tmp_path)
  for function, call in [
    ('save', lambda: fd.checkpoint.save(path, tree())),
    ('restore', lambda: fd.checkpoint.restore(path)),
    ('latest_step', lambda: fd.checkpoint.latest_step(path)),
  ]:
    with pytest.raises(error, match=rf'checkpoint\.{function}: .*{message}'):
      call()
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
  'bad, message',
  [
    (
      {'a.b': np.zeros(2), 'a': {'b': np.ones(2)}},
      r"the leaves \['a'\]\['b'\] and \['a.b'\], which Orbax would both store"
      r" under the name 'a.b'",
    ),
    (
      {'x': [np.zeros(2)], 'x.0': np.ones(2)},
      r"the leaves \['x'\]\[0\] and \['x.0'\], .* the name 'x.0'",
    ),
    ({'': np.zeros(2)}, r"the key '' \(at \[''\]\), which Orbax cannot store"),
    ({'a': {'b/c': np.zeros(2)}}, r"the key 'b/c' \(at \['a'\]\['b/c'\]\)"),
  ],
)
def test_keys_refused_before_writing(tmp_path, bad, message):
  with pytest.raises(
    ValueError, match=r'checkpoint\.save: tree has ' + message
  ):
    fd.checkpoint.save(tmp_path / 'ckpt', bad)
  assert not os.path.exists(tmp_path / 'ckpt')
  fd.checkpoint.save(tmp_path / 'ckpt', tree())
  with pytest.raises(ValueError, match=r'checkpoint\.restore: target has '):
    fd.checkpoint.restore(tmp_path / 'ckpt', target=bad)


@pytest.mark.parametrize(
  'leaf, error, message',
  [
    ('abc', TypeError, "is 'abc' of type str; a leaf must be"),
    (b'x', TypeError, 'of type bytes'),
    (1 + 2j, TypeError, r'is \(1\+2j\) of type complex'),
    (np.array(['a']), TypeError, 'of type ndarray with dtype <U1'),
    (np.array([object()]), TypeError, 'with dtype object'),
    (object(), TypeError, 'of type object'),
    (jax.ShapeDtypeStruct((2,), jnp.float32), TypeError, 'ShapeDtypeStruct'),
    (2**63, ValueError, 'the Python int 9223372036854775808, beyond int64'),
  ],
  # Stable ids (an object's repr holds its address, which differs between
  # the test processes).
  ids=lambda value: (
    type(value).__name__ if not isinstance(value, str) else value
  ),
)
def test_leaves_refused_before_writing(tmp_path, leaf, error, message):
  with pytest.raises(
    error, match=rf"checkpoint\.save: tree leaf \['x'\] (is )?.*{message}"
  ):
    fd.checkpoint.save(tmp_path, {'x': leaf, 'y': np.zeros(2)})
  assert not os.listdir(tmp_path)


def test_numpy_and_python_scalars_round_trip(tmp_path):
  saved = {
    'i32': np.int32(11),
    'f32': np.float32(2.5),
    'f16': np.float16(-0.0),
    'b': np.bool_(True),
    'u8': np.uint8(255),
    'c64': np.complex64(1 - 2j),
    'int': -(2**63),
    'float': 3.75,
    'bool': False,
  }
  fd.checkpoint.save(tmp_path, saved)
  restored = fd.checkpoint.restore(tmp_path, target=saved)
  for name, leaf in saved.items():
    assert type(restored[name]) is type(leaf), name
    assert np.asarray(restored[name]).tobytes() == np.asarray(leaf).tobytes()
  raw = fd.checkpoint.restore(tmp_path)
  assert raw['i32'].dtype == np.int32 and raw['i32'].shape == ()
  assert raw['i32'] == 11 and raw['float'] == 3.75


@pytest.mark.parametrize(
  'saved, target, message',
  [
    (3.75, 3, r'float64 in the checkpoint but int64 \(a Python int\)'),
    (0.5, True, r'float64 in the checkpoint but bool \(a Python bool\)'),
    (
      np.float32(3.75),
      3,
      r'float32 in the checkpoint but int64 \(a Python int\)',
    ),
    (jnp.float32(1.5), True, r'float32 in the checkpoint but bool \(a Python'),
    (7, 7.0, r'int64 in the checkpoint but float64 \(a Python float\)'),
    (np.float32(2.5), np.int32(0), 'float32 in the checkpoint but int32'),
    (np.float32(2.5), 2.5, 'float32 in the checkpoint but float64'),
  ],
  ids=repr,
)
def test_restore_never_converts_a_leaf(tmp_path, saved, target, message):
  fd.checkpoint.save(tmp_path, {'s': saved})
  with pytest.raises(
    ValueError,
    match=r'checkpoint\.restore: the target does not match .* variable s has dtype '
    + message,
  ):
    fd.checkpoint.restore(tmp_path, target={'s': target})
  # A target of the stored kind gets the stored value.
  restored = fd.checkpoint.restore(tmp_path, target={'s': saved})
  assert np.asarray(restored['s']).tobytes() == np.asarray(saved).tobytes()


@pytest.mark.parametrize('flag', ['False', 0, 1, None, np.float32(1)], ids=repr)
def test_overwrite_must_be_a_bool(tmp_path, flag):
  fd.checkpoint.save(tmp_path, {'w': np.zeros(3)})
  with pytest.raises(
    TypeError,
    match=rf'checkpoint\.save: overwrite must be True or False \(a bool\),'
    rf' got {re.escape(repr(flag))}',
  ):
    fd.checkpoint.save(tmp_path, {'v': np.ones(2)}, overwrite=flag)
  np.testing.assert_array_equal(fd.checkpoint.restore(tmp_path)['w'], 0.0)
  assert fd.checkpoint.save(tmp_path, {'v': np.ones(2)}, overwrite=True) == 1
  assert fd.checkpoint.save(tmp_path, {'v': 2.0}, overwrite=np.bool_(True))


# Saves whole trees into one checkpoint directory, with a sibling process
# doing the same: each tree's 'w' is full of its 'tag'. Two saves take the
# next step; a third asks for step 100, which only the first to get there
# may take.
WRITER = textwrap.dedent(
  """
  import os, sys, time
  import numpy as np
  import flax_dense as fd

  path, tag, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  print('ready', flush=True)
  while not os.path.exists(go):
    time.sleep(0.001)
  for i in range(3):
    value = tag * 10 + i
    tree = {'tag': value, 'w': np.full(100_000, value, np.int64)}
    try:
      step = fd.checkpoint.save(path, tree, step=100 if i == 2 else None)
    except ValueError as err:
      assert 'greater than the newest step saved' in str(err), err
      print('refused', flush=True)
    else:
      print('saved', step, flush=True)
  """
)


def test_concurrent_saves_take_turns(tmp_path):
  path, go = tmp_path / 'ckpt', tmp_path / 'go'
  fd.checkpoint.save(path, {'tag': -1, 'w': np.full(100_000, -1, np.int64)})
  writers = [
    subprocess.Popen(
      [sys.executable, '-c', WRITER, str(path), str(tag), str(go)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for tag in (1, 2)
  ]
  for writer in writers:
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == 'ready'
  go.touch()
  # Read while they write: every restore is one tree that was saved whole.
  reads = 0
  deadline = time.monotonic() + 60
  while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
    state = fd.checkpoint.restore(path)
    assert np.all(state['w'] == state['tag']), state['tag']
    reads += 1
  outputs = [writer.communicate(timeout=60) for writer in writers]
  for writer, (_, err) in zip(writers, outputs, strict=True):
    assert writer.returncode == 0, err
  lines = [line for out, _ in outputs for line in out.split()]
  steps = sorted(
    int(line.split()[1])
    for out, _ in outputs
    for line in out.splitlines()
    if line.startswith('saved')
  )
  # No two saves took one step, and the second ask for step 100 was refused.
  assert lines.count('refused') == 1, outputs
  assert len(steps) == 5 and len(set(steps)) == 5 and 100 in steps, outputs
  latest = fd.checkpoint.latest_step(path)
  assert latest == max(steps)
  state = fd.checkpoint.restore(path)
  assert np.all(state['w'] == state['tag'])
  assert reads >= 1
