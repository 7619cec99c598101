"""Real signals sent to real training processes, several processes, corrupt checkpoints.

Every run here is a child `python train.py ...` (or eval.py) on the tiny config;
each is bounded in time and killed on the way out.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from latent_flax.evaluation import runs
from tests import helpers
from tests.helpers import Child, train_argv, write_config_module

pytestmark = pytest.mark.slow  # every test here trains in child processes

STEPS = 10
TIMING = ('steps_per_sec', 'tokens_per_sec', 'elapsed_s', 'peak_memory_mb')  # differ run to run
OVERRIDES = dict(num_train_steps=STEPS, log_every_steps=1, checkpoint_every_steps=3,
                 eval_every_steps=5)


def _run_to_end(children, argv, **kw) -> Child:
  child = children(argv, **kw)
  rc = child.finish()
  assert rc == 0, '\n'.join(child.lines[-20:])
  return child


def _metrics(workdir, drop=TIMING):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(l).items() if k not in drop} for l in f]


def _params(workdir, step=STEPS):
  config = runs.workdir_config(workdir)
  return jax.tree.map(np.asarray, runs.restore_checkpoint(workdir, config, step).state.params)


def _checkpoint_dirs(workdir):
  return sorted(os.listdir(os.path.join(workdir, 'checkpoints')))


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """An uninterrupted run: config path and workdir (what it printed: _console)."""
  tmp = tmp_path_factory.mktemp('faults')
  config_path = write_config_module(tmp, **OVERRIDES)
  workdir = str(tmp / 'straight')
  child = Child(train_argv(config_path, workdir))
  try:
    assert child.finish() == 0, '\n'.join(child.lines[-20:])
  finally:
    child.kill()
  (tmp / 'straight.out').write_text('\n'.join(child.lines))
  return config_path, workdir


def _console(workdir) -> list[str]:
  """The lines the `straight` run printed."""
  return (pathlib.Path(workdir).parent / 'straight.out').read_text().splitlines()


def _assert_same_run(workdir, reference):
  jax.tree.map(np.testing.assert_array_equal, _params(workdir), _params(reference))
  assert _metrics(workdir) == _metrics(reference)


def test_the_console_states_config_units_eta_and_what_was_written(straight):
  _, reference = straight
  lines = _console(reference)
  config, = [l for l in lines if l.startswith('Config, where it differs from the defaults: ')]
  for field in ('num_train_steps=10', 'warmup_steps=2', "data.name='text_files'",
                'model.num_latents=4'):
    assert field in config.split(': ', 1)[1].split(', '), (field, config)
  assert 'seed=' not in config  # the default
  steps = [l for l in lines if re.match(rf'^step +\d+/{STEPS} ', l)]
  assert len(steps) == STEPS and all(re.search(r' loss [\d.]+ nats/byte ', l) for l in steps)
  # The first interval compiled: the ETA comes from the steps after it.
  assert steps[0].endswith('ETA from the next log on (this interval compiled)')
  assert all(re.search(r'ETA \d+:\d\d:\d\d$', l) for l in steps[1:-1]) and steps[-1].endswith(
      'done')
  evals = [l for l in lines if ' eval loss ' in l]
  assert len(evals) == 2 and all(re.search(r'eval loss [\d.]+ nats/byte ', l) for l in evals)
  # The last line: what was written where, each path there.
  last = lines[-1]
  assert last.startswith(f'Finished step {STEPS}: wrote {reference}/summary.json; the last '
                         f'checkpoint {os.path.abspath(reference)}/checkpoints/{STEPS}'), last
  assert last.endswith(f'(tensorboard --logdir={reference}).')
  paths = re.findall(r'(?:wrote|checkpoint|eval_bits_per_byte) (/[^ ;,]+)', last)
  assert len(paths) >= 2 and all(os.path.exists(p) for p in paths), last


def test_a_finished_run_says_so_and_a_changed_resume_is_said_and_kept(straight, children,
                                                                     tmp_path):
  config_path, reference = straight
  workdir = tmp_path / 'finished'
  shutil.copytree(reference, workdir)
  before = {f: (workdir / f).read_text() for f in ('config.json', 'summary.json',
                                                   'metrics.jsonl')}
  again = _run_to_end(children, train_argv(config_path, str(workdir)))
  assert again.lines[-1].startswith(f'{workdir} already finished at step {STEPS} '
                                    f'(config.num_train_steps={STEPS}); nothing to train')
  assert not any(l.startswith(('Resuming', 'step', 'Training')) for l in again.lines)
  assert {f: (workdir / f).read_text() for f in before} == before
  # Going on with another schedule: said in one line; config.json keeps both segments'.
  more = _run_to_end(children, train_argv(config_path, str(workdir),
                                          f'--config.num_train_steps={STEPS + 2}',
                                          '--config.learning_rate=0.005'))
  changed = [l for l in more.lines if l.startswith('Changed ')]
  assert changed == [f'Changed from step {STEPS} on: learning_rate 0.01 -> 0.005, '
                     f'num_train_steps {STEPS} -> {STEPS + 2} (config.json keeps each '
                     "segment's settings under 'history')."], more.lines[:8]
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['num_train_steps'] == STEPS + 2 and saved['learning_rate'] == 0.005
  assert saved['history'] == [{'from_step': STEPS, 'changed': {
      'learning_rate': [0.01, 0.005], 'num_train_steps': [STEPS, STEPS + 2]}}]
  assert runs.workdir_config(str(workdir)).num_train_steps == STEPS + 2  # history left out


def test_sigkill_at_an_arbitrary_step_then_resume_is_bit_identical(straight, children, tmp_path):
  config_path, reference = straight
  workdir = str(tmp_path / 'killed')
  child = children(train_argv(config_path, workdir))
  child.wait_for(r'^step +7/')
  child.proc.send_signal(signal.SIGKILL)
  assert child.proc.wait(timeout=30) == -signal.SIGKILL
  resumed = _run_to_end(children, train_argv(config_path, workdir))
  assert any(re.match(r'Resuming from checkpoint step [36] ', l) for l in resumed.lines)
  _assert_same_run(workdir, reference)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_saves_says_where_and_exits_0(straight, children, tmp_path, sig):
  config_path, reference = straight
  workdir = str(tmp_path / 'stopped')
  child = children(train_argv(config_path, workdir))
  child.wait_for(r'^step +4/')
  child.proc.send_signal(sig)
  line = child.wait_for(r'^Received SIG')
  assert child.finish() == 0
  saved = int(re.search(r'saved checkpoint step (\d+) in (\S+);', line).group(1))
  assert sig.name in line and 4 <= saved < STEPS
  assert str(saved) in _checkpoint_dirs(workdir)
  if sig == signal.SIGTERM:  # the next start resumes there and ends as if never stopped
    resumed = _run_to_end(children, train_argv(config_path, workdir))
    assert f'Resuming from checkpoint step {saved} ' in '\n'.join(resumed.lines)
    _assert_same_run(workdir, reference)


def test_sigkill_during_an_async_checkpoint_write_falls_back_to_the_previous(
    straight, children, tmp_path):
  config_path, reference = straight
  workdir = str(tmp_path / 'torn')
  marker = tmp_path / 'hanging'
  child = children(['-m', 'tests.hang_checkpoint'] + train_argv(config_path, workdir)[1:],
                   extra_env={'LF_HANG_STEP': '6', 'LF_HANG_MARKER': str(marker)})
  deadline = time.time() + 240
  while not marker.exists() and child.proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert marker.exists(), '\n'.join(child.lines[-20:])
  child.proc.send_signal(signal.SIGKILL)
  child.proc.wait(timeout=30)
  on_disk = _checkpoint_dirs(workdir)
  assert '3' in on_disk and '6' not in on_disk
  assert any(d.startswith('6.orbax-checkpoint-tmp') for d in on_disk), on_disk  # half-written

  resumed = _run_to_end(children, train_argv(config_path, workdir))
  assert 'Resuming from checkpoint step 3 ' in '\n'.join(resumed.lines)
  assert not [d for d in _checkpoint_dirs(workdir) if 'tmp' in d]  # cleaned up, no manual step
  _assert_same_run(workdir, reference)


def test_two_processes_of_two_devices_equal_one_of_four_and_restore_on_one(
    straight, children, tmp_path):
  config_path, reference = straight
  workdir = str(tmp_path / 'two')
  address = f'localhost:{helpers.free_port()}'
  procs = [children(train_argv(config_path, workdir, f'--coordinator_address={address}',
                                '--num_processes=2', f'--process_id={i}'), devices=2)
           for i in range(2)]
  for p in procs:
    assert p.finish(timeout=600) == 0, '\n'.join(p.lines[-20:])
  assert any('4 device(s), 2 process(es)' in l for l in procs[0].lines)
  assert not any(l.startswith('step') for l in procs[1].lines)  # only process 0 reports
  ours, theirs = _metrics(workdir), _metrics(reference)
  assert [m['step'] for m in ours] == [m['step'] for m in theirs]  # logged once, not twice
  for a, b in zip(ours, theirs):
    assert a == pytest.approx(b, rel=1e-5)
  # Cross-process sums add in another order; Adam turns that into tiny parameter
  # differences, far below one step (lr 1e-2).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-3),
               _params(workdir), _params(reference))

  more = _run_to_end(children, train_argv(config_path, workdir, f'--config.num_train_steps={STEPS + 2}'))
  assert f'Resuming from checkpoint step {STEPS} ' in '\n'.join(more.lines)
  assert str(STEPS + 2) in _checkpoint_dirs(workdir)

  # SIGTERM to one process only: both save the same step and exit 0, and rerunning both
  # ends exactly as the uninterrupted two-process run did (before the extra steps).
  reference_two = str(tmp_path / 'two_reference')
  shutil.copytree(workdir, reference_two)
  stopped = str(tmp_path / 'two_stopped')
  address = f'localhost:{helpers.free_port()}'
  argv = lambda i, a: train_argv(config_path, stopped, f'--coordinator_address={a}',
                                  '--num_processes=2', f'--process_id={i}')
  procs = [children(argv(i, address), devices=2) for i in range(2)]
  procs[0].wait_for(r'^step +4/')
  procs[1].proc.send_signal(signal.SIGTERM)
  line = procs[0].wait_for(r'^Received ')
  for p in procs:
    assert p.finish(timeout=600) == 0, '\n'.join(p.lines[-20:])
  saved = int(re.search(r'saved checkpoint step (\d+) in', line).group(1))
  assert 'another process' in line and 4 <= saved < STEPS
  assert _checkpoint_dirs(stopped)[-1] == str(saved)
  address = f'localhost:{helpers.free_port()}'
  for p in [children(argv(i, address), devices=2) for i in range(2)]:
    assert p.finish(timeout=600) == 0, '\n'.join(p.lines[-20:])
  jax.tree.map(np.testing.assert_array_equal, _params(stopped), _params(reference_two))
  assert _metrics(stopped) == _metrics(reference_two)[:len(_metrics(stopped))]


def test_eval_on_missing_empty_or_corrupt_workdir_prints_one_line_and_fails(
    straight, children, tmp_path):
  _, reference = straight
  empty = tmp_path / 'empty'
  empty.mkdir()
  corrupt = tmp_path / 'corrupt'
  shutil.copytree(reference, corrupt)
  state_dir = corrupt / 'checkpoints' / str(STEPS) / 'state'
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), 'r+b') as f:
        f.truncate(max(os.path.getsize(os.path.join(root, name)) // 2, 1))
  cases = {str(tmp_path / 'missing'): 'does not exist', str(empty): 'no config.json',
           str(corrupt): f'checkpoint step {STEPS} in .* cannot be read'}
  for workdir, message in cases.items():
    child = children(['eval.py', f'--workdir={workdir}'])
    assert child.finish() == 2
    errors = [l for l in child.lines if l.startswith('eval.py:')]
    assert len(errors) == 1 and re.search(message, errors[0]), child.lines[-5:]
    assert not any(l.startswith('Traceback') for l in child.lines)


_HOLD_LOCK = ("import sys, time\nfrom latent_flax.training import workdir_lock\n"
              "with workdir_lock.hold(sys.argv[1]):\n  print('held', flush=True)\n"
              "  time.sleep(600)\n")


def test_a_workdir_has_one_trainer_and_a_killed_one_leaves_no_stale_lock(
    straight, children, tmp_path):
  config_path, reference = straight
  workdir = str(tmp_path / 'owned')
  shutil.copytree(reference, workdir)
  config_before = open(os.path.join(workdir, 'config.json')).read()
  holder = children(['-c', _HOLD_LOCK, workdir])  # stands in for a running trainer
  holder.wait_for('^held$')
  second = children(train_argv(config_path, workdir, '--config.learning_rate=0.5',
                                f'--config.num_train_steps={STEPS + 2}'))
  assert second.finish() == 2
  errors = [l for l in second.lines if l.startswith('train.py:')]
  assert len(errors) == 1 and f'in use by another train.py (pid {holder.proc.pid})' in errors[0]
  assert not any(l.startswith('Traceback') for l in second.lines)
  assert open(os.path.join(workdir, 'config.json')).read() == config_before  # not rewritten
  holder.proc.send_signal(signal.SIGKILL)
  holder.proc.wait(timeout=30)
  resumed = _run_to_end(children, train_argv(config_path, workdir,
                                              f'--config.num_train_steps={STEPS + 2}'))
  assert f'Resuming from checkpoint step {STEPS} ' in '\n'.join(resumed.lines)


def test_eval_prints_its_result_even_when_it_cannot_save_it(straight, children, tmp_path):
  _, reference = straight
  workdir = tmp_path / 'unsaveable'
  shutil.copytree(reference, workdir)
  (workdir / f'eval_step_{STEPS}.json').mkdir()  # the JSON's path cannot be written
  child = children(['eval.py', f'--workdir={workdir}', '--num_eval_steps=0'])
  assert child.finish() == 1
  assert any(re.match(rf'step {STEPS}  loss [\d.]+ nats/byte  bits/byte', l) for l in child.lines)
  errors = [l for l in child.lines if l.startswith('eval.py:')]
  assert len(errors) == 1 and 'the result above was not saved' in errors[0], child.lines[-5:]
  assert not list(workdir.glob('*.tmp'))


def _one_error(child, prog='train.py') -> str:
  errors = [l for l in child.lines if l.startswith(f'{prog}:')]
  assert len(errors) == 1, child.lines[-10:]
  assert not any(l.startswith('Traceback') for l in child.lines)
  return errors[0]


def test_nan_in_the_evaluation_stops_before_that_checkpoint_and_keeps_the_good_one(
    straight, children, tmp_path):
  """weight_decay=1e30: the training loss (of the parameters before the update) stays
  finite, the updated parameters evaluate to NaN. With one checkpoint kept, saving that
  step would have deleted the good ones and made it the best."""
  config_path, reference = straight
  workdir = tmp_path / 'nan'
  shutil.copytree(reference, workdir)
  before = _checkpoint_dirs(workdir)
  child = children(train_argv(config_path, str(workdir), f'--config.num_train_steps={STEPS + 1}',
                              '--config.weight_decay=1e30', '--config.keep_checkpoints=1'))
  assert child.finish() == 2
  error = _one_error(child)
  assert re.search(rf'the evaluation loss is nan at step {STEPS + 1}; stopped without saving '
                   rf'that step\. The last good checkpoint is step {STEPS} in ', error), error
  assert _checkpoint_dirs(workdir) == before
  config = runs.workdir_config(str(workdir))
  assert runs.restore_checkpoint(str(workdir), config, 'best').step == STEPS
  _assert_same_run(str(workdir), reference)


def _saved_data_state(workdir, step):
  with open(os.path.join(workdir, 'checkpoints', str(step), 'data', 'metadata')) as f:
    return json.load(f)


def test_resume_with_another_global_batch_goes_on_at_the_same_sample_or_is_refused(
    straight, children, tmp_path):
  from latent_flax import tasks
  from latent_flax.tasks import data as data_lib
  config_path, reference = straight
  workdir = tmp_path / 'regrouped'
  shutil.copytree(reference, workdir)
  config_before = (workdir / 'config.json').read_text()
  assert _saved_data_state(reference, STEPS)['global_batch'] == 8  # 4 devices x 2
  # 4 devices x 3 = 12 does not divide the 80 samples read: refused before anything is written.
  refused = children(train_argv(config_path, str(workdir), '--config.per_device_batch_size=3',
                                f'--config.num_train_steps={STEPS + 2}'))
  assert refused.finish() == 2
  error = _one_error(refused)
  assert ('global batch of 8, at sample 80 of the training stream' in error
          and 'per_device_batch_size=3 on 4 device(s)' in error and 'does not divide it' in error)
  assert (workdir / 'config.json').read_text() == config_before
  # 2 devices x 2 = 4 divides it: batch 20 of 4 is where batch 10 of 8 was.
  resumed = _run_to_end(children, train_argv(config_path, str(workdir),
                                             f'--config.num_train_steps={STEPS + 2}'),
                        devices=2)
  line = next(l for l in resumed.lines if l.startswith('Resuming'))
  assert ('(data position 20; the global batch is now 4 (config.per_device_batch_size=2 on 2 '
          'device(s), was 8): the same sample 80 is batch 20)') in line, line
  assert {k: _saved_data_state(workdir, STEPS + 2)[k] for k in ('position', 'global_batch')} == {
      'position': 22, 'global_batch': 4}
  source = tasks.load(runs.workdir_config(str(workdir)).data, 'train')
  by_8, by_4 = (data_lib.TrainIterator(source, b, 0) for b in (8, 4))
  np.testing.assert_array_equal(np.concatenate([by_4.sample_ids(20), by_4.sample_ids(21)]),
                                by_8.sample_ids(10))


def test_eval_takes_overrides_of_the_runs_config_but_no_model_field(straight, children,
                                                                    tmp_path):
  _, reference = straight
  workdir = tmp_path / 'evaluated'
  shutil.copytree(reference, workdir)
  refused = children(['eval.py', f'--workdir={workdir}', '--config.model.chunk_size=16'])
  assert refused.finish() == 2
  assert 'was trained with model.chunk_size=8, the config given has 16' in _one_error(
      refused, 'eval.py')
  misspelled = children(['eval.py', f'--workdir={workdir}', '--config.model.chunk_sise=16'])
  assert misspelled.finish() == 2
  assert "has no field 'model.chunk_sise'" in _one_error(misspelled, 'eval.py')
  assert not list(workdir.glob('eval*'))
  # How it runs may differ: one window per device per batch, the whole split.
  (workdir / f'eval_step_{STEPS}.json').write_text('{}')  # an earlier whole-split result
  child = _run_to_end(children, ['eval.py', f'--workdir={workdir}', '--num_eval_steps=0',
                                 '--config.per_device_batch_size=1'])
  with open(workdir / f'eval_step_{STEPS}.json') as f:
    result = json.load(f)
  assert result['global_batch'] == 4 and result['model']['chunk_size'] == 8
  assert result['tokens'] == result['split_tokens'] == 32 * result['split_windows']
  assert f"  over all {result['split_tokens']:,} bytes of the validation split" in '\n'.join(
      child.lines)
  assert child.lines[-1].endswith('(replacing the earlier result of the same evaluation)')


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stop_during_corpus_preparation_leaves_no_partial_file(children, tmp_path, sig,
                                                                  capsys):
  from latent_flax import tasks
  config_path = write_config_module(tmp_path, **OVERRIDES)
  cache, marker = tmp_path / 'cache', tmp_path / 'preparing'
  argv = train_argv(config_path, str(tmp_path / 'run'), f'--config.data.cache_dir={cache}')
  child = children(['-m', 'tests.hang_prepare'] + argv[1:],
                   extra_env={'LF_HANG_MARKER': str(marker)})
  deadline = time.time() + 240
  while not marker.exists() and child.proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  assert marker.exists(), '\n'.join(child.lines[-20:])
  time.sleep(0.2)  # the marker is written whole
  partial = marker.read_text()
  assert os.path.getsize(partial) > 0 and '.tmp' in partial
  child.proc.send_signal(sig)
  rc = child.finish()
  if sig != signal.SIGKILL:  # said in one line, nothing left
    assert rc == 128 + sig
    assert [l for l in child.lines if l.startswith(f'Stopped by {sig.name} while preparing '
                                                   "the train split of 'text_files'")]
    assert not any(l.startswith('Traceback') for l in child.lines)
    assert not os.path.exists(partial)
    return
  assert rc == -signal.SIGKILL and os.path.exists(partial)
  # The next preparation removes what the killed one left, and prepares the split whole.
  config = helpers.tiny_config(tmp_path, **OVERRIDES, **{'data.cache_dir': str(cache)})
  capsys.readouterr()
  windows = tasks.load(config.data, 'train')
  assert not os.path.exists(partial)
  assert f'Removed {partial} (' in capsys.readouterr().err
  assert not [f for f in os.listdir(cache / 'corpora') if '.tmp' in f]
  assert len(windows.data) == os.path.getsize(config.data.path) * 90 // 100  # train: 90%
