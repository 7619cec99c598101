"""Refusals and checkpoint bookkeeping in process: bad input before anything is written,
another model's workdir, NaN losses, the best checkpoint across resumes, reads beside a
trainer that deletes checkpoints."""

import json
import os
import re
import shutil
import signal

import jax
import numpy as np
import pytest

from latent_flax.tasks import data as data_lib
from latent_flax.evaluation import runs
from latent_flax.training import steps
from latent_flax import trainer
from tests.helpers import read_metrics, restored_params, tiny_config


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
    ({'warmup_steps': 6}, 'warmup_steps=6 must be below config.num_train_steps=6'),
    ({'model.attention_impl': 'cudnn', 'model.dtype': 'bfloat16'},
     "attention_impl='cudnn' runs on NVIDIA GPUs, and this machine's devices are CPUs"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, overrides, message):
  config = tiny_config(tmp_path, **overrides)
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError) as err:
    trainer.train_and_evaluate(config, str(workdir))
  assert message in str(err.value) and '\n' not in str(err.value)
  assert not workdir.exists()


@pytest.mark.slow  # trains
def test_workdir_with_other_shapes_is_refused_and_eval_mismatch_is_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(tiny_config(tmp_path, num_train_steps=3), workdir)
  other = tiny_config(tmp_path, **{'model.num_latents': 8})
  with pytest.raises(ValueError, match='model.num_latents: saved 4 vs new 8'):
    trainer.train_and_evaluate(other, workdir)
  # Same shapes, another function: the chunk size decides what each latent summary covers.
  with pytest.raises(ValueError, match='model.chunk_size: saved 8 vs new 16'):
    trainer.train_and_evaluate(tiny_config(tmp_path, **{'model.chunk_size': 16}), workdir)
  # eval.py with another model's config: refused by the field, before any checkpoint is read
  # (and so is generate.py's sampling).
  for config, field in ((other, 'num_latents=4, the config given has 8'),
                        (tiny_config(tmp_path, **{'model.chunk_size': 16}),
                         'chunk_size=8, the config given has 16')):
    with pytest.raises(ValueError, match=f'was trained with model.{field}: its checkpoints'):
      runs.evaluate_checkpoint(workdir, config=config)
  with pytest.raises(ValueError, match='was trained with model.chunk_size=8'):
    runs.sample_from_checkpoint(workdir, 'ab', 2, config=tiny_config(
        tmp_path, **{'model.chunk_size': 16}))
  # Without the run's config.json to compare with, the checkpoint's shapes still refuse it.
  os.rename(os.path.join(workdir, 'config.json'), os.path.join(workdir, 'config.json.aside'))
  with pytest.raises(ValueError, match=r"latents'\] is \(4, 16\) in the checkpoint but \(8, 16\)"):
    runs.evaluate_checkpoint(workdir, config=other)


@pytest.mark.slow  # trains
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


@pytest.mark.slow  # trains
def test_nan_or_inf_parameters_stop_the_run_before_they_are_saved(tmp_path):
  """A weight decay at float32's limit turns the parameters inf in one update while
  the loss read at that step (of the parameters before it) is finite; no evaluation is
  due at that step."""
  workdir = str(tmp_path / 'run')
  config = tiny_config(tmp_path, num_train_steps=3, keep_checkpoints=1)
  trainer.train_and_evaluate(config, workdir)
  good, _ = restored_params(workdir, config, step=3)
  config = tiny_config(tmp_path, num_train_steps=6, keep_checkpoints=1, log_every_steps=1,
                       weight_decay=3e38)
  with pytest.raises(FloatingPointError) as err:
    trainer.train_and_evaluate(config, workdir)
  assert str(err.value).startswith('a parameter is NaN or inf after the update at step 4; '
                                   'stopped without saving that step. The last good '
                                   'checkpoint is step 3 in ')
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == ['3']
  jax.tree.map(np.testing.assert_array_equal, restored_params(workdir, config)[0], good)


def test_a_checkpoint_ranked_nan_is_never_the_best(tmp_path):
  """Checkpoints written before the trainer refused NaN evaluations: ranked worst."""
  from latent_flax.training import checkpoint
  ranked = checkpoint._ranked('eval_bits_per_byte', lower_is_better=True)
  values = {s: ranked({'eval_bits_per_byte': v})
            for s, v in {1: 2.0, 2: float('nan'), 3: 1.5, 4: float('inf')}.items()}
  assert min(values, key=values.get) == 3
  ranked = checkpoint._ranked('eval_accuracy', lower_is_better=False)
  assert ranked({'eval_accuracy': float('nan')}) < ranked({'eval_accuracy': 0.0})


@pytest.mark.slow  # trains
def test_every_evaluation_says_how_much_of_the_split_it_covers_and_is_named_by_it(
    tmp_path, capsys):
  from latent_flax import tasks
  workdir = str(tmp_path / 'run')
  config = tiny_config(tmp_path, num_train_steps=3)
  final = trainer.train_and_evaluate(config, workdir)
  split = tasks.load(config.data, 'validation')
  total, subset = split.num_windows * 32, 2 * 8 * 32  # num_eval_steps x global batch x seq_len
  assert f"bits/byte {final['eval_bits_per_byte']:.4f}  over {subset:,} of {total:,} bytes" in (
      capsys.readouterr().out)
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  logged = [m for m in read_metrics(workdir) if 'eval_loss' in m][-1]
  for record in (summary, logged):
    assert (record['eval_tokens'], record['eval_split_tokens']) == (subset, total)
  # eval.py's library: a subset and the whole split are different files, each saying
  # what it covered, with the model and data settings evaluated.
  part = runs.evaluate_checkpoint(workdir)
  whole = runs.evaluate_checkpoint(workdir, num_eval_steps=0)
  assert part['bits_per_byte'] == pytest.approx(final['eval_bits_per_byte'], rel=1e-5)
  assert os.path.basename(part['path']) == (
      f'eval_first16of{split.num_windows}windows_step_3.json')
  assert os.path.basename(whole['path']) == 'eval_step_3.json'
  assert (part['tokens'], part['split_tokens']) == (subset, total)
  assert whole['tokens'] == whole['split_tokens'] == total
  with open(whole['path']) as f:
    saved = json.load(f)
  assert saved['model'] == config.model.to_dict() and saved['data'] == config.data.to_dict()
  # Another corpus through an override of the run's config: its own name.
  other = tmp_path / 'other.txt'
  other.write_text('gamma delta ' * 400)
  moved = runs.evaluate_checkpoint(workdir, config=runs.with_overrides(
      runs.workdir_config(workdir), [('data.path', str(other)), ('per_device_batch_size', '1')]),
      num_eval_steps=0)
  assert re.fullmatch(r'eval_text_files-[0-9a-f]{6}_step_3\.json', os.path.basename(moved['path']))
  assert moved['data']['path'] == str(other) and moved['global_batch'] == 4
  other_data = runs.with_overrides(config, [('data.path', str(other))]).data
  assert moved['tokens'] == moved['split_tokens'] == (
      tasks.load(other_data, 'validation').num_windows * 32)
  with pytest.raises(ValueError, match="has no field 'model.chunk'"):
    runs.with_overrides(runs.workdir_config(workdir), [('model.chunk', '16')])


def test_a_resume_with_another_global_batch_reads_the_old_one_from_metrics(tmp_path):
  """Checkpoints saved before they recorded their global batch: metrics.jsonl logged it."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'metrics.jsonl').write_text(''.join(
      json.dumps({'step': s, 'global_batch': b}) + '\n' for s, b in ((2, 16), (4, 16), (6, 2))))
  config = tiny_config(tmp_path, per_device_batch_size=2)  # 8 on 4 devices
  state = {'position': 4, 'seed': 0}  # saved at step 4: 4 batches of 16
  assert trainer.resume_position(state, config, str(workdir), 4) == (
      8, '; the global batch is now 8 (config.per_device_batch_size=2 on 4 device(s), was 16): '
         'the same sample 64 is batch 8')
  assert trainer.resume_position({**state, 'global_batch': 8}, config, str(workdir), 4) == (4, '')
  with pytest.raises(ValueError, match='global batch of 5, at sample 20 .* does not divide it'):
    trainer.resume_position({**state, 'global_batch': 5}, config, str(workdir), 4)
  with pytest.raises(ValueError, match='cannot continue its rows of documents'):
    trainer.resume_position({**state, 'global_batch': 16, 'order': 'documents'}, config,
                            str(workdir), 4)


def test_eval_errors_are_clear(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    runs.evaluate_checkpoint(str(tmp_path / 'missing'))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='no config.json'):
    runs.evaluate_checkpoint(str(tmp_path / 'empty'))


@pytest.mark.slow  # trains
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


@pytest.mark.slow  # trains
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
