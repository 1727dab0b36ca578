"""The main example resumes from its checkpoints to exactly the same weights."""

import os
import sys

import jax
import numpy as np
import pytest

import flax_dense as fd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'examples'))
import train_per_position  # noqa: E402

MODELS = ('PerPositionDense', 'shared_nn.Dense')
STEPS = 10


def run(tmp_path, checkpoint_dir, steps=STEPS):
  return train_per_position.main(
    ['--positions', '4', '--in-features', '3', '--classes', '3']
    + ['--train-samples', '64', '--test-samples', '32', '--batch-size', '16']
    + ['--steps', str(steps), '--checkpoint-every', '3', '--quiet']
    + ['--checkpoint-dir', str(checkpoint_dir)]
    + ['--plot', str(tmp_path / 'loss.png')]
  )


def final_state(checkpoint_dir, model):
  path = checkpoint_dir / model
  assert fd.checkpoint.latest_step(path) == STEPS
  return fd.checkpoint.restore(path)


def assert_same_final_states(left, right):
  for model in MODELS:
    saved, resumed = final_state(left, model), final_state(right, model)
    assert jax.tree.structure(saved) == jax.tree.structure(resumed)
    for a, b in zip(
      jax.tree.leaves(saved), jax.tree.leaves(resumed), strict=True
    ):
      assert a.dtype == b.dtype
      assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('uninterrupted')
  return run(tmp_path, tmp_path / 'checkpoints'), tmp_path / 'checkpoints'


def test_killed_run_resumes_to_the_same_parameters(
  tmp_path, uninterrupted, monkeypatch, capsys
):
  results, expected = uninterrupted
  save, saves = fd.checkpoint.save, []

  def dies_at_third_save(*args, **kwargs):
    if len(saves) == 2:
      raise KeyboardInterrupt('killed')
    saves.append(kwargs['step'])
    return save(*args, **kwargs)

  monkeypatch.setattr(fd.checkpoint, 'save', dies_at_third_save)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path, tmp_path / 'checkpoints')
  # Killed at step 9 of the first model, with steps 7 to 9 unsaved.
  assert saves == [3, 6]
  monkeypatch.undo()
  assert run(tmp_path, tmp_path / 'checkpoints') == results
  assert 'PerPositionDense: resumed at step 6' in capsys.readouterr().out
  assert_same_final_states(expected, tmp_path / 'checkpoints')


def test_longer_run_continues_a_finished_one(tmp_path, uninterrupted):
  results, expected = uninterrupted
  run(tmp_path, tmp_path / 'checkpoints', steps=4)
  assert run(tmp_path, tmp_path / 'checkpoints') == results
  assert_same_final_states(expected, tmp_path / 'checkpoints')
