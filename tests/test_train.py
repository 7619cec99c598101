"""End to end on 4 fake CPU devices: train, checkpoint, resume, evaluate, fail clearly."""

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event

from latent_flax.tasks import data as data_lib
from latent_flax.evaluation import decode, runs
from latent_flax import trainer
from latent_flax import model as model_lib
from tests.helpers import read_metrics, restored_params, tiny_config


def test_four_devices_are_used():
  assert jax.device_count() == 4


@pytest.mark.slow  # trains
@pytest.mark.parametrize('attention', ['causal_latent', 'full'])
def test_train_checkpoint_resume_evaluate(tmp_path, attention, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = tiny_config(tmp_path, attention, num_train_steps=9)
  # Preempt with a real SIGTERM while step 5 is being fed: the run finishes that
  # step, checkpoints it and returns.
  next_batch = data_lib.TrainIterator.__next__

  def preempting_next(self):
    if self.position == 4:
      signal.raise_signal(signal.SIGTERM)
    return next_batch(self)

  monkeypatch.setattr(data_lib.TrainIterator, '__next__', preempting_next)
  short = trainer.train_and_evaluate(config, workdir)
  monkeypatch.setattr(data_lib.TrainIterator, '__next__', next_batch)
  assert short['step'] == 5
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '5']
  assert os.path.exists(os.path.join(workdir, 'config.json'))
  # TensorBoard: the logged scalars by step (once each) and the config's hparams.
  events = [e for f in sorted(os.listdir(workdir)) if f.startswith('events.out.tfevents')
            for e in map(Event.FromString, RawEventFileLoader(os.path.join(workdir, f)).Load())]
  scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value
             if v.HasField('simple_value')]
  losses = {step: x for step, tag, x in scalars if tag == 'train_loss'}
  assert losses == pytest.approx({m['step']: m['train_loss'] for m in read_metrics(workdir)
                                  if 'train_loss' in m}, rel=1e-6)
  assert sum(tag == 'steps_per_sec' for _, tag, _ in scalars) == len(losses)
  assert any(v.tag == '_hparams_/session_start_info' for e in events for v in e.summary.value)

  resumed = trainer.train_and_evaluate(config, workdir)  # resumes from step 5
  assert resumed['step'] == 9
  steps = [m['step'] for m in read_metrics(workdir)]
  assert steps == [2, 3, 4, 5, 6, 8, 9]
  # Resumed run equals an uninterrupted one (same data order, same params).
  straight_dir = str(tmp_path / 'straight')
  trainer.train_and_evaluate(config, straight_dir)
  a, data_a = restored_params(workdir, config)
  b, data_b = restored_params(straight_dir, config)
  assert data_a['position'] == data_b['position'] == 9
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, b)
  logged = lambda d: {m['step']: m['train_loss'] for m in read_metrics(d) if 'train_loss' in m}
  # Logged losses are means over the steps since the previous log that this process
  # ran: the first log after the resume (step 6) covers step 6 only, the straight
  # run's covers steps 5 and 6. Every other window is the same.
  resumed_log, straight_log = logged(workdir), logged(straight_dir)
  assert resumed_log.keys() == straight_log.keys() and 6 in resumed_log
  assert ({s: v for s, v in resumed_log.items() if s != 6}
          == pytest.approx({s: v for s, v in straight_log.items() if s != 6}, rel=1e-5))

  result = runs.evaluate_checkpoint(workdir, step=6)
  assert result["step"] == 6 and result['bits_per_byte'] == pytest.approx(result['loss'] / np.log(2))
  assert os.path.exists(os.path.join(  # num_eval_steps=2 batches of 8: a subset, so named
      workdir, f"eval_first16of{result['split_windows']}windows_step_6.json"))
  assert set(result['loss_by_position']) == {'0-31'}
  assert list(result['bits_by_context']) == ['1-1', '2-3', '4-7', '8-15', '16-32']
  # At 4x the training length on document-aligned windows, streamed in segments of 20
  # tokens (inside and across chunks of 8), the result equals one pass.
  one = runs.evaluate_checkpoint(workdir, 6, seq_len=128, windows='documents', write=False)
  streamed = runs.evaluate_checkpoint(workdir, 6, seq_len=128, windows='documents',
                                          stream_segment=20, write=False)
  assert one['tokens'] == streamed['tokens'] == 128 and one['seq_len'] == 128
  assert streamed['loss'] == pytest.approx(one['loss'], rel=1e-5)
  assert streamed['bits_by_context'] == pytest.approx(one['bits_by_context'], rel=1e-5)
  assert streamed['path'].endswith('eval_L128_documents_stream20_step_6.json')

  # The checkpoint generates text: greedy continuations equal decode.generate on its params.
  sample = runs.sample_from_checkpoint(workdir, 'alpha beta', 7, decode.Sampling(0.0),
                                         num_samples=2)
  model = model_lib.build_model(config.model)
  params, _ = restored_params(workdir, config)
  prompt = jnp.asarray([data_lib.encode('alpha beta')] * 2, jnp.int32)
  expected = decode.generate(model, params, prompt, 7, jax.random.key(0), decode.Sampling(0.0))
  np.testing.assert_array_equal(sample['tokens'], expected)
  assert sample['step'] == 9 and len(sample['samples']) == 2 and sample['state_bytes'] > 0


@pytest.mark.slow  # trains
def test_loss_falls_on_a_learnable_corpus(tmp_path):
  config = tiny_config(tmp_path, num_train_steps=40, log_every_steps=5, eval_every_steps=40,
                       checkpoint_every_steps=40, warmup_steps=5)
  trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  losses = [m['train_loss'] for m in read_metrics(str(tmp_path / 'run')) if 'train_loss' in m]
  assert losses[0] > 4.0 and losses[-1] < 0.6 * losses[0], losses


@pytest.mark.slow  # trains
def test_pmap_and_jit_give_the_same_params(tmp_path):
  runs, losses = {}, {}
  for kind, every in (('pmap', 1), ('jit', 1), ('pmap', 2)):
    config = tiny_config(tmp_path, parallelism=kind, num_train_steps=4, checkpoint_every_steps=4,
                         log_every_steps=every, eval_every_steps=4)
    workdir = str(tmp_path / f'{kind}{every}')
    trainer.train_and_evaluate(config, workdir)
    runs[kind, every] = restored_params(workdir, config)[0]
    losses[kind, every] = [m['train_loss'] for m in read_metrics(workdir)]
    assert {m['global_batch'] for m in read_metrics(workdir)} == {4 * config.per_device_batch_size}
  assert losses['pmap', 1] == pytest.approx(losses['jit', 1], rel=1e-5)
  # Logging every 2 steps records the mean of the two steps' losses.
  every_step = losses['pmap', 1]
  assert losses['pmap', 2] == pytest.approx(
      [(every_step[0] + every_step[1]) / 2, (every_step[2] + every_step[3]) / 2], rel=1e-5)
  # Adam divides by sqrt(v): entries whose gradient is ~0 move by lr * (noise sign),
  # so params agree to a fraction of one step (lr = 1e-2), not to float precision.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-3),
               runs['pmap', 1], runs['jit', 1])
