"""train_and_evaluate(config, workdir): the training loop, orchestration only.

The pieces, in training/: optim.py (optimizer), steps.py (state and step functions),
parallel.py (pmap or jit placement), checkpoint.py (Orbax, resumed automatically from the
workdir); evaluation/evaluator.py with the task (tasks/) deciding what is evaluated.
Metrics go to TensorBoard (metric_writer.py, no TensorFlow), `metrics.jsonl` and the console.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from latent_flax.training import checkpoint, metric_writer, steps, workdir_lock
from latent_flax import config_lib, tasks
from latent_flax.evaluation import evaluator, runs
from latent_flax.system import io_utils
from latent_flax.tasks import data as data_lib
from latent_flax import model as model_lib
from latent_flax.attention import registry as attention_registry
from latent_flax.training.parallel import Parallel

# Train metrics logged as their mean over the steps since the previous log.
WINDOW_MEANS = ('loss', 'accuracy', 'grad_norm')


class MetricsLog:
  """workdir/metrics.jsonl, one object per logged step; truncated to the resumed step."""

  def __init__(self, workdir: str, resume_step: int, enabled: bool):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self.enabled = enabled
    if enabled and os.path.exists(self.path):
      with open(self.path) as f:
        kept = [l for l in f if l.strip() and json.loads(l)['step'] <= resume_step]
      with open(self.path + '.tmp', 'w') as f:
        f.writelines(kept)
      os.replace(self.path + '.tmp', self.path)

  def write(self, record: dict) -> None:
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')


def _eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class _StopRequest:
  """SIGTERM / SIGINT: finish the current step, checkpoint, exit cleanly."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


# --------------------------------------------------------------------------- #
# The loop.
# --------------------------------------------------------------------------- #

def _any_process(flag: bool) -> bool:
  """True on every process if `flag` is True on any (a collective when multi-process)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.int32(flag)).max())


@contextlib.contextmanager
def _claim(workdir: str):
  """The workdir's lock, held by process 0; every process refuses if it is taken."""
  with contextlib.ExitStack() as stack:
    error = ''
    if jax.process_index() == 0:
      try:
        stack.enter_context(workdir_lock.hold(workdir))
      except ValueError as e:
        error = str(e)
    if _any_process(bool(error)):
      raise ValueError(error or f"{workdir} is in use: process 0 could not lock it.")
    yield


def _global_batch(config: ml_collections.ConfigDict) -> int:
  """Windows per step over all devices (devices along a seq axis share their rows: the
  batch is per device of data x fsdp)."""
  return (config.per_device_batch_size * jax.device_count()
          // config_lib.validate_layout(config, jax.device_count())[2])


def _logged_global_batch(workdir: str, step: int) -> int | None:
  """The global batch metrics.jsonl logged last at or before `step` (checkpoints saved
  before they recorded their own), or None."""
  found = None
  with contextlib.suppress(OSError, ValueError):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      for line in f:
        record = json.loads(line) if line.strip() else {}
        if record.get('step', step + 1) <= step and 'global_batch' in record:
          found = int(record['global_batch'])
  return found


def resume_position(data_state: dict, config: ml_collections.ConfigDict, workdir: str,
                    step: int) -> tuple[int, str]:
  """(the batch to resume at, '' or a note saying it moved) for checkpoint `step`.

  The training stream is a sequence of samples, read in batches of the global batch
  (data.TrainIterator); a checkpoint saved with another global batch (another device count
  or per_device_batch_size) resumes at the same sample, in batches of this run's. One line
  refuses a global batch that does not divide that sample number (samples would repeat or
  be skipped), and any change for a run that reads documents row by row (carry_state).
  """
  global_batch = _global_batch(config)
  position = int(data_state['position'])
  saved = data_state.get('global_batch') or _logged_global_batch(workdir, step) or global_batch
  if saved == global_batch:
    return position, ''
  fields = (f"config.per_device_batch_size={config.per_device_batch_size} on "
            f"{jax.device_count()} device(s)")
  samples = position * saved
  if data_state.get('order') == 'documents' or samples % global_batch:
    raise ValueError(
        f"checkpoint step {step} in {workdir} was saved with a global batch of {saved}, at "
        f"sample {samples:,} of the training stream; this run's, {global_batch} ({fields}), "
        + ("cannot continue its rows of documents"
           if data_state.get('order') == 'documents' else "does not divide it")
        + f": choose per_device_batch_size and devices that give {saved} again.")
  return samples // global_batch, (f"; the global batch is now {global_batch} ({fields}, was "
                                   f"{saved}): the same sample {samples:,} is batch "
                                   f"{samples // global_batch}")


def _stop_not_finite(what: str, step: int, mngr, workdir: str):
  """Raises FloatingPointError: `what` at `step`, which is not saved. Every checkpoint
  saved had a finite training loss, parameters and evaluation loss, so the latest is
  the last good one."""
  mngr.wait_until_finished()
  last = mngr.latest_step()
  kept = (f"The last good checkpoint is step {last} in {workdir}" if last is not None
          else f"No checkpoint was saved in {workdir} before it")
  raise FloatingPointError(
      f"{what} at step {step}; stopped without saving that step. {kept}. Lower "
      "config.learning_rate (or weight_decay), or set config.grad_clip_norm.")


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _params_finite(params) -> bool:
  """No NaN or inf in `params` (global arrays; one reduction on device)."""
  return bool(np.asarray(_all_finite(params).addressable_data(0)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       defaults: ml_collections.ConfigDict | None = None) -> dict:
  """Trains config in workdir (resuming if it holds checkpoints). Returns final metrics
  (a finished run: its summary.json, said in one line).

  Everything that can be refused is checked before the workdir is touched: the config,
  the workdir (a directory, compatible with the run it holds), the data. Then the
  workdir is locked for this run (a second trainer is refused in one line).
  `defaults`: the config printed first is how `config` differs from it (train.py:
  configs/base.py's).
  """
  workdir_lock.check_workdir(workdir)
  config_lib.validate_config(config)
  config_lib.validate_layout(config, jax.device_count())
  saved = config_lib.load_saved_config(workdir)
  if saved is not None:
    config_lib.check_compatible(saved, config, workdir)
  latest = checkpoint.latest_data_state(workdir, config)
  if latest is not None and latest[0] >= config.num_train_steps:
    return _already_finished(workdir, latest[0], config)
  if latest is not None:  # refused here, before anything is written
    resume_position(latest[1], config, workdir, latest[0])
  if defaults is not None and jax.process_index() == 0:
    differ = {k: new for k, (_, new) in config_lib.differences(config, defaults).items()}
    print("Config, where it differs from the defaults: "
          + (config_lib.describe_fields(differ) if differ else 'nowhere'), flush=True)
  task = tasks.get(config.data.name)
  train_source = (task.documents(config.data, 'train') if config.get('carry_state')
                  else tasks.load(config.data, 'train'))
  eval_sets, eval_main = task.eval_sets(config.data, config.model, 'validation')
  with _claim(workdir):
    return _train(config, workdir, task, train_source, eval_sets, eval_main)


def _already_finished(workdir: str, step: int, config: ml_collections.ConfigDict) -> dict:
  """A rerun of a finished run: one line, nothing written; its summary.json."""
  path = os.path.join(workdir, 'summary.json')
  summary = {}
  with contextlib.suppress(OSError, ValueError):
    with open(path) as f:
      summary = json.load(f)
  if jax.process_index() == 0:
    print(f"{workdir} already finished at step {step} (config.num_train_steps="
          f"{config.num_train_steps}); nothing to train"
          + (f": its summary is {path}." if summary else ".")
          + " Raise num_train_steps to train on, or use a new --workdir.", flush=True)
  return summary


def _train(config, workdir, task, train_source, eval_sets, eval_main) -> dict:
  n_proc, proc = jax.process_count(), jax.process_index()
  global_batch = _global_batch(config)
  is_chief = proc == 0
  say = functools.partial(print, flush=True) if is_chief else lambda *a, **k: None

  model = config_lib.build_model(config)
  carries = bool(config.get('carry_state'))
  windows = config.get('carry_windows', 1) if carries else 1  # per row and step
  parallel = Parallel(config.parallelism, model, config,
                      carry_batch=global_batch if carries else 0)
  target = checkpoint.abstract_state(model, config, parallel.shard_state_like)
  mngr = checkpoint.manager(workdir, config)
  rng = jax.random.key(config.seed)
  init_rng, dropout_rng = jax.random.split(rng)
  dropout_rng = parallel.put_rng(dropout_rng)
  start_step = mngr.latest_step() or 0
  if start_step:
    state, data_state = checkpoint.restore(mngr, start_step, target, workdir)
    position, moved = resume_position(data_state, config, workdir, start_step)
    shuffle = data_state.get('shuffle', 'numpy')  # saved before 2026-12-02: numpy's order
    elapsed_before = float(data_state.get('elapsed_s', 0.0))
    say(f"Resuming from checkpoint step {start_step} in {workdir} "
        f"(data position {position}{moved}).")
  else:
    init = steps.make_init_fn(model, config)
    state = jax.jit(lambda rng: parallel.lay_out(init(rng)))(init_rng)
    position, shuffle = 0, 'index_shuffle'
    elapsed_before = 0.0
  if is_chief:
    changed = config_lib.save_config(config, workdir, start_step)
    if changed:
      say(f"Changed from step {start_step} on: " + ', '.join(
          f"{k} {_value(old)} -> {_value(new)}" for k, (old, new) in changed.items())
          + " (config.json keeps each segment's settings under 'history').")
  state = parallel.put_state(state)
  num_params = model_lib.count_params(target.params)
  if carries:  # each row reads a document's windows in turn and carries its state
    train_iter = data_lib.DocumentStream(train_source, global_batch, config.seed,
                                         process_index=parallel.data_share[0],
                                         process_count=parallel.data_share[1],
                                         state=data_state if start_step else None)
    carry = parallel.fresh_carry()
    if start_step:
      carry = checkpoint.restore_carry(mngr, start_step, carry, workdir)
  else:
    train_iter = data_lib.TrainIterator(train_source, global_batch, config.seed,
                                        process_index=parallel.data_share[0],
                                        process_count=parallel.data_share[1],
                                        position=position, shuffle=shuffle)
    carry = None

  writer = metric_writer.MetricWriter(workdir, enabled=is_chief)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in flax.traverse_util.flatten_dict(
        config.to_dict(), sep='.').items() if isinstance(v, (int, float, str, bool))})
  log = MetricsLog(workdir, start_step, enabled=is_chief)
  tokens_per_step = global_batch * windows * config.data.seq_len
  label = attention_registry.get(config.model.attention).label(config.model)
  say(f"Training {label} (H={config.model.num_heads}, {num_params:,} params) "
      f"for {config.num_train_steps} steps "
      f"on {jax.device_count()} device(s), {n_proc} process(es), {config.parallelism}"
      + (f" mesh {dict(parallel.mesh.shape)}" if config.parallelism == 'jit' else '') + "; "
      f"global batch {global_batch} x "
      + (f"{windows} windows x {config.data.seq_len} tokens, the gradient through the state "
         f"carried across the {windows}" if windows > 1 else f"{config.data.seq_len} tokens")
      + f"; workdir {workdir}")

  def save(step: int, metrics: dict | None):
    checkpoint.save(mngr, step, parallel.global_state(state),
                    {**train_iter.get_state(), 'global_batch': global_batch,
                     'elapsed_s': elapsed()}, metrics, carry)

  session_start = time.time()
  elapsed = lambda: elapsed_before + time.time() - session_start  # training wall time, all sessions

  final = {}
  step = start_step
  window, window_steps = None, 0  # device-side sums of WINDOW_MEANS since the last log
  last_time, last_step = time.time(), start_step
  steady = None  # (time, step) at the end of the first logged interval, which compiled
  stop = _StopRequest()
  with stop:
    while step < config.num_train_steps:
      batch = train_iter.next_windows(windows) if windows > 1 else next(train_iter)
      if carries:
        state, carry, metrics = parallel.carry_train_step(state, carry, batch, dropout_rng)
      else:
        state, metrics = parallel.train_step(state, batch, dropout_rng)
      # Sums on device since the last log (no host sync), so the logged train loss,
      # accuracy and gradient norm are means over the window, not one noisy batch.
      averaged = {k: metrics[k] for k in WINDOW_MEANS}
      window = averaged if window is None else jax.tree.map(jnp.add, window, averaged)
      window_steps += 1
      step += 1
      is_log = step % config.log_every_steps == 0 or step == config.num_train_steps
      is_eval = step % config.eval_every_steps == 0 or step == config.num_train_steps
      # One reading, agreed by all processes (a signal to any one stops all at the same
      # step); a signal arriving later is seen at the next step.
      stopping = _any_process(stop.signal is not None)
      is_ckpt = (step % config.checkpoint_every_steps == 0 or step == config.num_train_steps
                 or stopping)
      if not (is_log or is_eval or is_ckpt):
        continue
      host = parallel.first(metrics)
      loss = float(host['loss'])  # of the parameters before this step's update
      if not math.isfinite(loss):
        _stop_not_finite(f"the training loss is {loss}", step, mngr, workdir)
      if not _params_finite(parallel.global_state(state).params):
        _stop_not_finite("a parameter is NaN or inf after the update", step, mngr, workdir)
      record = {'step': step}
      now = time.time()
      if is_log:
        steps_per_sec = (step - last_step) / max(now - last_time, 1e-9)
        means = {k: float(v) / window_steps for k, v in parallel.first(window).items()}
        window, window_steps = None, 0
        record.update(train_loss=means['loss'], train_accuracy=means['accuracy'],
                      learning_rate=float(host['learning_rate']),
                      grad_norm=means['grad_norm'], steps_per_sec=steps_per_sec,
                      tokens_per_sec=steps_per_sec * tokens_per_step,
                      global_batch=global_batch,
                      **({'windows_per_step': windows} if windows > 1 else {}))
        if steady is None:
          eta = "ETA from the next log on (this interval compiled)"
        else:  # the mean rate since compilation, evaluations and checkpoints included
          rate = (step - steady[1]) / max(now - steady[0], 1e-9)
          eta = f"ETA {_eta((config.num_train_steps - step) / rate)}"
        say(f"step {step:6d}/{config.num_train_steps}  loss {means['loss']:.4f} "
            f"{task.loss_unit}  {steps_per_sec:.2f} steps/s  "
            f"{record['tokens_per_sec']:,.0f} tokens/s  "
            + (eta if step < config.num_train_steps else 'done'))
      if is_eval:
        ev = evaluator.evaluate(parallel, state.params, task, eval_sets, eval_main,
                                 global_batch, config.num_eval_steps)
        if not math.isfinite(ev['loss']):
          _stop_not_finite(f"the evaluation loss is {ev['loss']}", step, mngr, workdir)
        # How much of the split the number covers goes wherever it goes.
        covered = runs.coverage(eval_sets[eval_main], ev['tokens'], global_batch,
                                config.num_eval_steps)
        record.update(eval_loss=ev['loss'], eval_accuracy=ev['accuracy'],
                      eval_tokens=ev['tokens'], eval_split_tokens=covered['split_tokens'])
        for key, (extra, _) in task.eval_extras.items():
          if key in ev:
            record[f'eval_{key}'] = ev[key]
            say(f"step {step:6d}  {extra} "
                + '  '.join(f"{p}: {a:.4f}" for p, a in ev[key].items()))
        if 'bits_per_byte' in ev:
          record['eval_bits_per_byte'] = ev['bits_per_byte']
        say(f"step {step:6d}  eval loss {ev['loss']:.4f} {task.loss_unit}  "
            f"{task.accuracy_label} {ev['accuracy']:.4f}"
            + (f"  bits/byte {ev['bits_per_byte']:.4f}"
               if task.metric == 'eval_bits_per_byte' else '')
            + f"  {runs.over(ev['tokens'], covered['split_tokens'], task.target_unit)}")
      record.update(elapsed_s=elapsed(), peak_memory_mb=io_utils.peak_memory_mb())
      writer.write_scalars(step, {k: v for k, v in record.items()
                                  if k != 'step' and not isinstance(v, dict)})
      log.write(record)
      final = {**final, **record}
      if is_ckpt:
        save(step, {k: record[k] for k in ('eval_loss', task.metric)} if is_eval else None)
      last_time, last_step = time.time(), step
      if is_log and steady is None:
        steady = (last_time, step)
      if stopping and step < config.num_train_steps:
        mngr.wait_until_finished()
        say(f"Received {stop.signal or 'a stop signal on another process'}: saved checkpoint "
            f"step {step} in {mngr.directory}; rerun the same command to resume.")
        break
  mngr.wait_until_finished()
  last, best = mngr.latest_step(), mngr.best_step()  # the last is the final step's
  checkpoints = str(mngr.directory)
  mngr.close()
  writer.flush()
  writer.close()
  if is_chief and final and step >= config.num_train_steps:  # finished here: sweeps skip it
    summary = os.path.join(workdir, 'summary.json')
    io_utils.write_json(summary, {**final, 'num_params': num_params,
                                  'num_train_steps': config.num_train_steps})
    best_text = ('' if best is None else f" (also the best by {task.metric})" if best == last
                 else f", the best by {task.metric} {os.path.join(checkpoints, str(best))}")
    say(f"Finished step {step}: wrote {summary}; the last checkpoint "
        f"{os.path.join(checkpoints, str(last))}{best_text}; metrics.jsonl and TensorBoard "
        f"events in {workdir} (tensorboard --logdir={workdir}).")
  return final


def _value(v) -> str:
  return repr(v) if isinstance(v, str) else str(v)
