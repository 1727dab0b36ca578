"""Tests of fd.checkpoint on damaged checkpoints: one clear error, no noise.

Each test saves a checkpoint, damages its files as a crash, a full disk or
a careless hand would, and checks that :func:`fd.checkpoint.restore` raises
our ``ValueError`` or ``FileNotFoundError`` naming the path, the step and
the damaged part, and that nothing of Orbax's (a traceback from one of its
threads, a logged error) reaches stderr.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax_dense as fd

# Arrays above 1 KiB, whose chunks live in data files of their own rather
# than inline in the array index; 'big' makes the largest data file.
TREE = {
  'params': {
    'big': np.random.default_rng(0).standard_normal((64, 64), np.float32),
    'bias': np.arange(5000, dtype=np.int32),
  },
  'small': np.arange(3.0, dtype=np.float32),
  'step': 7,
}


def tree():
  return {**jax.tree.map(jnp.asarray, TREE), 'step': TREE['step']}


def files(path, pattern):
  """The files matching ``pattern`` in step 0 of ``path``, largest first."""
  found = [f for f in glob.glob(f'{path}/0/{pattern}') if os.path.isfile(f)]
  return sorted(found, key=os.path.getsize, reverse=True)


def truncate(file):
  with open(file, 'r+b') as handle:
    handle.truncate(os.path.getsize(file) // 2)


def write(file, text):
  with open(file, 'w') as handle:
    handle.write(text)


def scramble_start(file):
  """Flips the first bytes of ``file``: its first value's Zstd frame."""
  with open(file, 'r+b') as handle:
    data = bytearray(handle.read(4))
    handle.seek(0)
    handle.write(bytes(byte ^ 0xFF for byte in data))


DATA_FILES = 'default/ocdbt.process_0/d/*'
# The largest data file holds the chunk of 'big', and sometimes, written in
# the same batch, that of 'bias' too.
LARGEST_DATA_FILE = (
  r'the data of (variable params/big is|variables params/bias, params/big'
  r' are) truncated or missing in \S+/0/default'
)

# Name: (damage to step 0 of a checkpoint, error, the damaged part).
DAMAGES = {
  'step_metadata_deleted': (
    lambda path: os.remove(f'{path}/0/_CHECKPOINT_METADATA'),
    FileNotFoundError,
    r'its file \S+/0/_CHECKPOINT_METADATA is missing',
  ),
  'step_metadata_corrupt': (
    lambda path: truncate(f'{path}/0/_CHECKPOINT_METADATA'),
    ValueError,
    r'its file \S+/0/_CHECKPOINT_METADATA is corrupt JSON',
  ),
  'array_metadata_deleted': (
    lambda path: os.remove(f'{path}/0/default/_METADATA'),
    FileNotFoundError,
    r'its file \S+/0/default/_METADATA is missing',
  ),
  'array_metadata_truncated': (
    lambda path: truncate(f'{path}/0/default/_METADATA'),
    ValueError,
    r'its file \S+/0/default/_METADATA is corrupt JSON',
  ),
  'array_metadata_not_an_object': (
    lambda path: write(f'{path}/0/default/_METADATA', '[1, 2]'),
    ValueError,
    r'its file \S+/0/default/_METADATA holds no JSON object',
  ),
  'array_metadata_malformed': (
    lambda path: write(f'{path}/0/default/_METADATA', '{"tree_metadata": 3}'),
    ValueError,
    r'its metadata file \S+/0/default/_METADATA is corrupt: its'
    r' tree_metadata is malformed',
  ),
  'shardings_deleted': (
    lambda path: os.remove(f'{path}/0/default/_sharding'),
    FileNotFoundError,
    r'its file \S+/0/default/_sharding is missing',
  ),
  'array_index_deleted': (
    lambda path: os.remove(f'{path}/0/default/manifest.ocdbt'),
    FileNotFoundError,
    r'its array index \S+/0/default/manifest.ocdbt is missing',
  ),
  'array_index_truncated': (
    lambda path: truncate(f'{path}/0/default/manifest.ocdbt'),
    ValueError,
    r'its array index in \S+/0/default is unreadable \(ValueError: DATA_LOSS:'
    r' .*manifest.ocdbt',
  ),
  'array_index_nodes_deleted': (
    lambda path: shutil.rmtree(f'{path}/0/default/d'),
    ValueError,
    r'its array index in \S+/0/default is unreadable \(ValueError: NOT_FOUND:',
  ),
  'array_index_node_scrambled': (
    lambda path: scramble_start(files(path, 'default/d/*')[0]),
    ValueError,
    r'its array index in \S+/0/default is unreadable \(ValueError: DATA_LOSS:',
  ),
  'data_file_truncated': (
    lambda path: truncate(files(path, DATA_FILES)[0]),
    ValueError,
    LARGEST_DATA_FILE,
  ),
  'data_file_deleted': (
    lambda path: os.remove(files(path, DATA_FILES)[0]),
    ValueError,
    LARGEST_DATA_FILE,
  ),
  'data_directory_deleted': (
    lambda path: shutil.rmtree(f'{path}/0/default/ocdbt.process_0'),
    ValueError,
    r'the data of variables params/bias, params/big are truncated or'
    r' missing in \S+/0/default',
  ),
  'data_scrambled': (
    lambda path: [scramble_start(file) for file in files(path, DATA_FILES)],
    ValueError,
    r'its arrays in \S+/0/default could not be read \(ValueError:'
    r' FAILED_PRECONDITION: .*ZSTD',
  ),
  'item_directory_deleted': (
    lambda path: shutil.rmtree(f'{path}/0/default'),
    FileNotFoundError,
    r'its directory \S+/0/default is missing',
  ),
  'item_directory_a_file': (
    lambda path: [
      shutil.rmtree(f'{path}/0/default'),
      write(f'{path}/0/default', 'x'),
    ],
    ValueError,
    r'its directory \S+/0/default is a file',
  ),
  'step_directory_emptied': (
    lambda path: [shutil.rmtree(f'{path}/0'), os.mkdir(f'{path}/0')],
    FileNotFoundError,
    r'its file \S+/0/_CHECKPOINT_METADATA is missing',
  ),
}


def damaged_message(function, path, part):
  return (
    rf'checkpoint\.{function}: step 0 of the checkpoint'
    rf' {re.escape(str(path))} is damaged: {part}'
  )


def assert_quiet(capfd, caplog):
  """Nothing of Orbax's failure reached stderr or the logs as a traceback."""
  err = capfd.readouterr().err
  assert 'Traceback' not in err, err
  assert 'Exception ignored' not in err, err
  noisy = [
    record.getMessage()
    for record in caplog.records
    if record.exc_info or 'never retrieved' in record.getMessage()
  ]
  assert not noisy, noisy


# A leaked error of an abandoned Orbax read would reach pytest's hook.
pytestmark = pytest.mark.filterwarnings(
  'error::pytest.PytestUnraisableExceptionWarning'
)


@pytest.mark.parametrize('damage', DAMAGES)
def test_damaged_checkpoint_gives_one_clear_error(
  tmp_path, damage, capfd, caplog
):
  damage_files, error, part = DAMAGES[damage]
  fd.checkpoint.save(tmp_path, tree())
  damage_files(tmp_path)
  capfd.readouterr()
  caplog.clear()
  assert fd.checkpoint.latest_step(tmp_path) == 0
  abstract = {**jax.eval_shape(tree), 'step': TREE['step']}
  for target in (None, tree(), abstract):
    with pytest.raises(error, match=damaged_message('restore', tmp_path, part)):
      fd.checkpoint.restore(tmp_path, target=target)
  assert_quiet(capfd, caplog)


@pytest.mark.parametrize(
  'damage',
  [name for name in DAMAGES if not name.startswith('data_')],
)
def test_save_does_not_replace_a_damaged_checkpoint_unasked(
  tmp_path, damage, capfd, caplog
):
  damage_files, error, part = DAMAGES[damage]
  fd.checkpoint.save(tmp_path, tree())
  damage_files(tmp_path)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(error, match=damaged_message('save', tmp_path, part)):
    fd.checkpoint.save(tmp_path, tree())
  assert sorted(os.listdir(tmp_path)) == before
  assert_quiet(capfd, caplog)
  assert fd.checkpoint.save(tmp_path, tree(), overwrite=True) == 1
  restored = fd.checkpoint.restore(tmp_path, target=tree())
  for name, leaf in TREE['params'].items():
    np.testing.assert_array_equal(restored['params'][name], leaf)


def test_save_replaces_a_checkpoint_of_damaged_data(tmp_path):
  # Only the data is damaged: the variables can still be compared, and the
  # new save of the same variables replaces the damaged one.
  fd.checkpoint.save(tmp_path, tree())
  truncate(files(tmp_path, DATA_FILES)[0])
  assert fd.checkpoint.save(tmp_path, tree()) == 1
  restored = fd.checkpoint.restore(tmp_path, target=tree())
  np.testing.assert_array_equal(
    restored['params']['big'], TREE['params']['big']
  )


def test_path_is_a_file(tmp_path, capfd, caplog):
  path = tmp_path / 'checkpoint'
  write(path, 'not a checkpoint')
  message = rf'{re.escape(str(path))} is a file, not a checkpoint directory'
  for function, call in [
    ('latest_step', lambda: fd.checkpoint.latest_step(path)),
    ('restore', lambda: fd.checkpoint.restore(path)),
    ('save', lambda: fd.checkpoint.save(path, tree())),
  ]:
    with pytest.raises(ValueError, match=rf'checkpoint\.{function}: {message}'):
      call()
  assert path.read_text() == 'not a checkpoint'
  assert_quiet(capfd, caplog)


def test_array_directory_deleted_without_ocdbt(tmp_path, capfd, caplog):
  # Orbax's other layout, one directory per array, as older Orbax wrote.
  import orbax.checkpoint as ocp

  with ocp.CheckpointManager(
    tmp_path,
    options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False),
    item_handlers=ocp.StandardCheckpointHandler(use_ocdbt=False),
  ) as manager:
    manager.save(0, args=ocp.args.StandardSave(tree()))
  restored = fd.checkpoint.restore(tmp_path, target=tree())
  np.testing.assert_array_equal(
    restored['params']['big'], TREE['params']['big']
  )
  shutil.rmtree(tmp_path / '0' / 'default' / 'params.bias')
  capfd.readouterr()
  caplog.clear()
  with pytest.raises(
    FileNotFoundError,
    match=damaged_message(
      'restore',
      tmp_path,
      r'variable params/bias is missing from its arrays in \S+/0/default',
    ),
  ):
    fd.checkpoint.restore(tmp_path, target=tree())
  assert_quiet(capfd, caplog)


@pytest.mark.parametrize(
  'unneeded',
  [
    'commit_success.txt',
    'default/commit_success.txt',
    'default/array_metadatas/process_0',
    'default/ocdbt.process_0/manifest.ocdbt',
  ],
)
def test_files_restore_does_not_read_may_go(tmp_path, unneeded):
  # Orbax writes these but reads none of them to restore: the arrays are
  # still all there, bit for bit.
  fd.checkpoint.save(tmp_path, tree())
  os.remove(tmp_path / '0' / unneeded)
  restored = fd.checkpoint.restore(tmp_path, target=tree())
  for name, leaf in TREE['params'].items():
    np.testing.assert_array_equal(restored['params'][name], leaf)


# Restores a checkpoint whose array data Orbax fails to decompress, in a
# fresh process, so that its stderr holds everything, up to its exit.
SCRAMBLED_RESTORER = textwrap.dedent(
  """
  import sys
  import jax.numpy as jnp
  import flax_dense as fd

  path = sys.argv[1]
  target = {'a': jnp.zeros((64, 64)), 'b': jnp.zeros(5000, jnp.int32)}
  for _ in range(3):
    for given in (None, target):
      try:
        fd.checkpoint.restore(path, target=given)
      except ValueError as err:
        assert 'is damaged: its arrays in' in str(err), err
      else:
        raise AssertionError('restored a scrambled checkpoint')
  print('all refused', flush=True)
  """
)


def test_failed_orbax_read_leaves_nothing_on_stderr(tmp_path):
  data = np.random.default_rng(1).standard_normal((64, 64), np.float32)
  fd.checkpoint.save(
    tmp_path, {'a': data, 'b': np.arange(5000, dtype=np.int32)}
  )
  for file in files(tmp_path, DATA_FILES):
    scramble_start(file)
  result = subprocess.run(
    [sys.executable, '-c', SCRAMBLED_RESTORER, str(tmp_path)],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == 'all refused'
  for noise in ('Traceback', 'Exception ignored', 'never retrieved'):
    assert noise not in result.stderr, result.stderr


def test_metadata_json_is_what_restore_checks(tmp_path):
  # The damage cases above assume this layout of Orbax's; fail loudly here,
  # rather than in every damage test, if an Orbax upgrade changes it.
  fd.checkpoint.save(tmp_path, tree())
  with open(tmp_path / '0' / 'default' / '_METADATA') as handle:
    metadata = json.load(handle)
  assert metadata['use_ocdbt'] is True
  assert not metadata['use_zarr3']
  assert files(tmp_path, DATA_FILES)
  assert (tmp_path / '0' / 'default' / 'manifest.ocdbt').is_file()
