"""Refusals and checkpoint bookkeeping in process: bad input before anything is written,
another model's workdir, NaN losses, the best checkpoint across resumes, reads beside a
trainer that deletes checkpoints."""

import os
import shutil
import signal

import jax
import numpy as np
import pytest

from latent_flax.tasks import data as data_lib
from latent_flax.evaluation import runs
from latent_flax.training import steps
from latent_flax import trainer
from tests.helpers import restored_params, tiny_config


@pytest.mark.parametrize('overrides,message', [
    ({'per_device_batch_size': 0}, 'per_device_batch_size=0 must be an integer >= 1'),
    ({'learning_rate': -1.0}, 'learning_rate=-1.0 must be in (0, 1]'),
    ({'num_train_steps': 0}, 'num_train_steps=0 must be an integer >= 1'),
    ({'parallelism': 'pjit'}, "parallelism='pjit' is unknown"),
    ({'model.num_heads': 3}, 'not divisible by num_heads=3'),
    ({'data.seq_len': 100_000}, 'fewer than one window'),
    ({'data.name': 'tfds:no_such_dataset_xyz'}, "no tfds dataset named"),
    ({'data.name': 'wikipedia'}, "data.name='wikipedia' is unknown"),
    ({'data.seq_len': 0}, 'seq_len=0 must be an integer >= 1'),
    ({'model.num_latents': 0}, 'num_latents=0 must be an integer >= 1'),
    ({'model.chunk_size': 0}, 'chunk_size=0 must be an integer >= 1'),
    ({'model.attention': 'linear'}, "attention='linear' is unknown"),
    ({'model.attention': 'latent'}, "would see tokens after t"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, overrides, message):
  config = tiny_config(tmp_path, **overrides)
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError) as err:
    trainer.train_and_evaluate(config, str(workdir))
  assert message in str(err.value) and '\n' not in str(err.value)
  assert not workdir.exists()


def test_workdir_with_other_shapes_is_refused_and_eval_mismatch_is_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(tiny_config(tmp_path, num_train_steps=3), workdir)
  other = tiny_config(tmp_path, **{'model.num_latents': 8})
  with pytest.raises(ValueError, match='model.num_latents: saved 4 vs new 8'):
    trainer.train_and_evaluate(other, workdir)
  # Same shapes, another function: the chunk size decides what each latent summary covers.
  with pytest.raises(ValueError, match='model.chunk_size: saved 8 vs new 16'):
    trainer.train_and_evaluate(tiny_config(tmp_path, **{'model.chunk_size': 16}), workdir)
  with pytest.raises(ValueError, match=r"latents'\] is \(4, 16\) in the checkpoint but \(8, 16\)"):
    runs.evaluate_checkpoint(workdir, config=other)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = tiny_config(tmp_path, num_train_steps=3)
  trainer.train_and_evaluate(config, workdir)
  good, _ = restored_params(workdir, config, step=3)
  original = steps.train_step

  def poisoned(state, batch, rng, **kw):
    import jax.numpy as jnp
    state, metrics = original(state, batch, rng, **kw)
    bad = jnp.where(state.step >= 5, jnp.nan, 0.0)
    return state, {**metrics, 'loss': metrics['loss'] + bad}

  monkeypatch.setattr(steps, "train_step", poisoned)
  config = tiny_config(tmp_path, num_train_steps=6)
  with pytest.raises(FloatingPointError, match='last good checkpoint is step 3'):
    trainer.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  after, _ = restored_params(workdir, config)
  jax.tree.map(np.testing.assert_array_equal, after, good)


def test_eval_errors_are_clear(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    runs.evaluate_checkpoint(str(tmp_path / 'missing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no config.json'):
    runs.evaluate_checkpoint(str(tmp_path / 'empty'))


def test_best_checkpoint_is_the_lowest_eval_and_survives_a_resume(tmp_path, monkeypatch):
  """Scripted eval losses 3.0, 1.0, 2.0 | resume | 2.5, 2.2, 2.4 at steps 2..12: with one
  latest checkpoint kept, the best (step 4) must be kept too, across the restart."""
  from latent_flax.evaluation import evaluator
  losses = [3.0, 1.0, 2.0, 2.5, 2.2, 2.4]
  real = evaluator.evaluate

  def scripted(*args, **kwargs):
    result = real(*args, **kwargs)
    loss = losses.pop(0)
    return {**result, 'loss': loss, 'bits_per_byte': loss / np.log(2)}

  monkeypatch.setattr(evaluator, 'evaluate', scripted)
  next_batch = data_lib.TrainIterator.__next__

  def preempting_next(self):
    if self.position == 6:
      signal.raise_signal(signal.SIGTERM)
    return next_batch(self)

  workdir = str(tmp_path / 'run')
  config = tiny_config(tmp_path, num_train_steps=12, eval_every_steps=2,
                       checkpoint_every_steps=2, keep_checkpoints=1)
  monkeypatch.setattr(data_lib.TrainIterator, '__next__', preempting_next)
  assert trainer.train_and_evaluate(config, workdir)['step'] == 7
  monkeypatch.setattr(data_lib.TrainIterator, '__next__', next_batch)
  assert trainer.train_and_evaluate(config, workdir)['step'] == 12
  assert not losses
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints')), key=int) == ['4', '12']
  monkeypatch.setattr(evaluator, 'evaluate', real)
  assert runs.evaluate_checkpoint(workdir, step='best')['step'] == 4
  with pytest.raises(ValueError, match="--step='good' must be a step number, 'latest' or 'best'"):
    runs.evaluate_checkpoint(workdir, step='good')


def test_eval_reads_another_checkpoint_when_a_trainer_deletes_the_one_being_read(
    tmp_path, monkeypatch):
  from latent_flax.training import checkpoint
  workdir = str(tmp_path / 'run')
  config = tiny_config(tmp_path, num_train_steps=6)
  trainer.train_and_evaluate(config, workdir)  # checkpoints 3 and 6
  real = checkpoint.restore
  deleted = []

  def trainer_deletes_it(mngr, step, target, where):
    if not deleted:  # as a running trainer's retention policy would, mid-read
      deleted.append(step)
      shutil.rmtree(os.path.join(mngr.directory, str(step)))
    return real(mngr, step, target, where)

  monkeypatch.setattr(checkpoint, 'restore', trainer_deletes_it)
  result = runs.evaluate_checkpoint(workdir)
  assert deleted == [6] and result['step'] == 3
  monkeypatch.setattr(checkpoint, 'restore', real)
  trainer.train_and_evaluate(tiny_config(tmp_path, num_train_steps=9), workdir)  # 6 and 9
  deleted.clear()
  monkeypatch.setattr(checkpoint, 'restore', trainer_deletes_it)
  with pytest.raises(ValueError, match='step 6 in .* was deleted while being read'):
    runs.evaluate_checkpoint(workdir, step=6)
