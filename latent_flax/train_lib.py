"""train_and_evaluate(config, workdir): the data-parallel training loop.

One step function, two thin wrappers: `jax.pmap` over local devices with gradient
`psum` (parallelism='pmap', the default) or `jax.jit` over a 1-D 'data' mesh with
NamedSharding (parallelism='jit'). State is shaped with `jax.eval_shape` and
initialised by a jitted init; checkpoints are Orbax (state + data position),
written asynchronously and atomically, resumed automatically from the workdir.
Metrics go to TensorBoard (clu), `metrics.jsonl` and the console.
"""

from __future__ import annotations

import functools
import json
import math
import os
import resource
import signal
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from clu import metric_writers, periodic_actions
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec as P

from latent_flax import config_lib
from latent_flax import data as data_lib
from latent_flax import model as model_lib

LN2 = math.log(2.0)
POSITION_BUCKETS = (0, 128, 512, 2048, 8192, 32768, 131072)
# Train metrics logged as their mean over the steps since the previous log.
WINDOW_MEANS = ('loss', 'accuracy', 'grad_norm')


class TrainState(train_state.TrainState):
  pass


# --------------------------------------------------------------------------- #
# Optimizer, state, steps.
# --------------------------------------------------------------------------- #

def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to learning_rate, then cosine decay to 10% of it."""
  warmup = min(config.warmup_steps, config.num_train_steps - 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=config.num_train_steps, end_value=0.1 * config.learning_rate)


def _decay_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], 'key', '')) in ('kernel', 'embedding'), params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
  parts.append(optax.adamw(learning_rate_schedule(config), b1=0.9, b2=0.95,
                           weight_decay=config.weight_decay, mask=_decay_mask))
  return optax.chain(*parts)


def make_init_fn(model, config) -> Callable[[jax.Array], TrainState]:
  tx = make_optimizer(config)
  dummy = jnp.zeros((1, min(config.data.seq_len, 2 * config.model.chunk_size)), jnp.int32)

  def init(rng):
    params = model.init(rng, dummy)['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  return init


def _forward(apply_fn, params, batch: dict, **kwargs):
  """Logits of a batch: [B, N, V] per position (LM) or [B, K] per example (classifier)."""
  extra = (batch['mask'],) if 'mask' in batch else ()
  return apply_fn({'params': params}, batch['inputs'], *extra, **kwargs)


def _weighted_ce(logits, batch):
  """Cross-entropy and correct predictions, both times the weights ([B, N] or [B])."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
  correct = (jnp.argmax(logits, axis=-1) == batch['targets']).astype(jnp.float32)
  return ce * batch['weights'], correct * batch['weights']


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, axis_name: str | None,
               schedule: optax.Schedule):
  """One optimizer step on a (per-device or global) batch. Loss is the weighted mean."""
  rng = jax.random.fold_in(rng, state.step)
  weight_sum = jnp.sum(batch['weights'])
  if axis_name:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    weight_sum = jax.lax.psum(weight_sum, axis_name)
  weight_sum = jnp.maximum(weight_sum, 1.0)

  def loss_fn(params):
    logits = _forward(state.apply_fn, params, batch, deterministic=False, rngs={'dropout': rng})
    ce, correct = _weighted_ce(logits, batch)
    return jnp.sum(ce) / weight_sum, jnp.sum(correct) / weight_sum

  (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name:
    loss, accuracy, grads = jax.lax.psum((loss, accuracy, grads), axis_name)
  metrics = {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.global_norm(grads),
             'learning_rate': schedule(state.step)}
  return state.apply_gradients(grads=grads), metrics


def eval_step(params, batch: dict, *, apply_fn, axis_name: str | None):
  """Sums of loss, correct predictions and weight, in total and (LM) per position."""
  ce, correct = _weighted_ce(_forward(apply_fn, params, batch), batch)
  sums = {'loss_sum': jnp.sum(ce), 'correct_sum': jnp.sum(correct),
          'weight_sum': jnp.sum(batch['weights'])}
  if 'weights_across' in batch:  # MQAR answers across chunks, a subset of the weighted ones
    sums.update(correct_across_sum=jnp.sum(correct * batch['weights_across']),
                weight_across_sum=jnp.sum(batch['weights_across']))
  if ce.ndim == 2:  # a target per position
    sums.update(loss_by_pos=jnp.sum(ce, axis=0), weight_by_pos=jnp.sum(batch['weights'], 0))
  if axis_name:
    sums = jax.lax.psum(sums, axis_name)
  return sums


# --------------------------------------------------------------------------- #
# The two parallel wrappers.
# --------------------------------------------------------------------------- #

class Parallel:
  """Places state and batches on devices and runs the steps, by pmap or by jit."""

  def __init__(self, kind: str, model, config):
    self.kind = kind
    self.devices = jax.local_devices()
    self.mesh = jax.make_mesh((jax.device_count(),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self.local_stack = NamedSharding(jax.sharding.Mesh(np.array(self.devices), ('local',)),
                                     P('local'))
    schedule = learning_rate_schedule(config)
    if kind == 'pmap':
      self._as_pmap_output = jax.pmap(lambda tree: tree, axis_name='batch')
      self._train = jax.pmap(functools.partial(train_step, axis_name='batch', schedule=schedule),
                             axis_name='batch', donate_argnums=(0,))
      self._eval = jax.pmap(functools.partial(eval_step, apply_fn=model.apply, axis_name='batch'),
                            axis_name='batch')
    else:
      self._train = jax.jit(functools.partial(train_step, axis_name=None, schedule=schedule),
                            in_shardings=(self.replicated, self.batch_sharding, self.replicated),
                            out_shardings=(self.replicated, self.replicated),
                            donate_argnums=(0,))
      self._eval = jax.jit(functools.partial(eval_step, apply_fn=model.apply, axis_name=None),
                           in_shardings=(self.replicated, self.batch_sharding),
                           out_shardings=self.replicated)

  def put_state(self, state_global: TrainState) -> TrainState:
    """From a replicated global state (as initialised or restored) to the step's layout."""
    if self.kind == 'pmap':
      # Through an identity pmap, so the first step sees the sharding its own outputs
      # have and the step is compiled once, not twice.
      return self._as_pmap_output(jax.tree.map(
          lambda x: self._replicate(np.asarray(x.addressable_data(0))), state_global))
    return state_global

  def global_state(self, state: TrainState) -> TrainState:
    """The state as replicated global arrays, for checkpoints and evaluation outside."""
    if self.kind == 'pmap':  # one copy per local device -> one global replicated array
      def gather(x):
        shards = [s.data.reshape(x.shape[1:]) for s in x.addressable_shards]
        return jax.make_array_from_single_device_arrays(x.shape[1:], self.replicated, shards)
      return jax.tree.map(gather, state)
    return state

  def _replicate(self, x):
    """One copy per local device along a new leading axis (pmap's layout)."""
    return jax.device_put(np.broadcast_to(x, (len(self.devices),) + np.shape(x)),
                          self.local_stack)

  def _shard(self, batch: dict):
    if self.kind == 'pmap':
      n = len(self.devices)
      return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

  def put_rng(self, rng: jax.Array) -> jax.Array:
    """The step's random key in the step's layout (one copy per device for pmap)."""
    if self.kind == 'pmap':
      return jax.random.wrap_key_data(self._replicate(jax.random.key_data(rng)))
    return rng

  def train_step(self, state, batch, rng):
    """rng as given by put_rng."""
    return self._train(state, self._shard(batch), rng)

  def eval_step(self, params, batch):
    return self._eval(params, self._shard(batch))

  def first(self, tree):
    """Host values of replicated outputs (this process's first copy)."""
    if self.kind == 'pmap':
      return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


# --------------------------------------------------------------------------- #
# Checkpoints.
# --------------------------------------------------------------------------- #

def checkpoint_manager(workdir: str, config, *, read_only: bool = False) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  preservation = policies.AnyPreservationPolicy([
      policies.LatestN(n=config.keep_checkpoints),
      policies.BestN(get_metric_fn=lambda m: m['eval_loss'], reverse=False, n=1,
                     keep_checkpoints_without_metrics=False)])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation, create=not read_only, read_only=read_only,
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=options,
                               item_handlers={'state': ocp.StandardCheckpointHandler(),
                                              'data': ocp.JsonCheckpointHandler()})


def abstract_state(model, config, sharding) -> TrainState:
  shapes = jax.eval_shape(make_init_fn(model, config), jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _flat_shapes(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {jax.tree_util.keystr(p): tuple(getattr(v, 'shape', ())) for p, v in leaves}


def check_checkpoint_matches(mngr: ocp.CheckpointManager, step: int, target, where: str) -> None:
  """One clear line if the checkpoint's parameter shapes differ from the config's."""
  try:
    meta = mngr.item_metadata(step)['state']
    meta = meta.tree if hasattr(meta, 'tree') else meta
    saved = _flat_shapes(meta['params'] if isinstance(meta, dict) else meta.params)
  except Exception:  # metadata unreadable: the restore itself will say more.
    return
  wanted = _flat_shapes(target.params)
  for path in sorted(set(saved) | set(wanted)):
    if saved.get(path) != wanted.get(path):
      raise ValueError(
          f"checkpoint step {step} in {where} does not match the config: params{path} is "
          f"{saved.get(path, 'absent')} in the checkpoint but {wanted.get(path, 'absent')} "
          "in the config; use the config it was trained with.")


def restore(mngr: ocp.CheckpointManager, step: int, target: TrainState, where: str):
  """(state, data position) of `step`; ValueError with one line if it does not fit or read."""
  check_checkpoint_matches(mngr, step, target, where)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
  except Exception as e:
    earlier = [s for s in mngr.all_steps() if s < step]
    hint = (f"move {mngr.directory}/{step} aside to use step {earlier[-1]}" if earlier
            else "no earlier checkpoint exists")
    raise ValueError(f"checkpoint step {step} in {where} cannot be read "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); {hint}.") from None
  return restored['state'], restored['data']


# --------------------------------------------------------------------------- #
# Evaluation.
# --------------------------------------------------------------------------- #

def evaluate(parallel: Parallel, params, windows: data_lib.Windows | data_lib.Examples,
             global_batch: int, num_batches: int | None,
             probes: dict[int, data_lib.Examples] | None = None) -> dict:
  """Loss and accuracy over the weighted targets; for LM also bits/byte, by position.

  `probes` (MQAR test sets by pair count) add `recall_by_pairs`: {pairs: accuracy}.
  Probe sets with 'weights_across' (data.with_across_chunk_weights) also add
  `recall_across_chunks_by_pairs` and `answers_across_chunks_by_pairs` (their count),
  from the same pass; sets with no answer across chunks are left out of both.
  """
  main_inputs = getattr(windows, 'arrays', {}).get('inputs')
  ones = {str(p): _evaluate_one(parallel, params, ex, global_batch, num_batches)
          for p, ex in (probes or {}).items()}
  # The main test set among the probes is not evaluated twice.
  same = [str(p) for p, ex in (probes or {}).items() if ex.arrays['inputs'] is main_inputs]
  result = ({k: v for k, v in ones[same[0]].items() if not k.startswith('across_')} if same
            else _evaluate_one(parallel, params, windows, global_batch, num_batches))
  if ones:
    result['recall_by_pairs'] = {p: r['accuracy'] for p, r in ones.items()}
    across = {p: r for p, r in ones.items() if 'across_tokens' in r}
    if across:
      result['recall_across_chunks_by_pairs'] = {p: r['across_accuracy']
                                                 for p, r in across.items()}
      result['answers_across_chunks_by_pairs'] = {p: r['across_tokens']
                                                  for p, r in across.items()}
  return result


def _evaluate_one(parallel, params, windows, global_batch, num_batches) -> dict:
  totals = None
  for batch in data_lib.eval_batches(windows, global_batch, num_batches,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
    sums = parallel.first(parallel.eval_step(params, batch))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  weight = max(float(totals['weight_sum']), 1.0)
  loss = float(totals['loss_sum'] / weight)
  result = {'loss': loss, 'accuracy': float(totals['correct_sum'] / weight),
            'tokens': int(totals['weight_sum'])}
  if 'weight_across_sum' in totals:
    result.update(across_accuracy=float(totals['correct_across_sum']
                                        / max(float(totals['weight_across_sum']), 1.0)),
                  across_tokens=int(totals['weight_across_sum']))
  if 'loss_by_pos' not in totals:  # classification: one label per example
    return result
  by_pos = {}
  n = len(totals['loss_by_pos'])
  for lo, hi in zip(POSITION_BUCKETS, POSITION_BUCKETS[1:]):
    if lo >= n:
      break
    w = totals['weight_by_pos'][lo:hi].sum()
    if w > 0:
      by_pos[f'{lo}-{min(hi, n) - 1}'] = float(totals['loss_by_pos'][lo:hi].sum() / w)
  return {**result, 'bits_per_byte': loss / LN2, 'loss_by_position': by_pos}


# --------------------------------------------------------------------------- #
# Logging helpers.
# --------------------------------------------------------------------------- #

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


def peak_memory_mb() -> float:
  """Peak device memory where the backend reports it (GPU/TPU), else this process's peak RSS."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2**20
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains config in workdir (resuming if it holds checkpoints). Returns final metrics."""
  if not workdir:
    raise ValueError("--workdir is required: where checkpoints and metrics go.")
  config_lib.validate_config(config)
  saved = config_lib.load_saved_config(workdir)
  if saved is not None:
    config_lib.check_compatible(saved, config, workdir)
  n_proc, proc = jax.process_count(), jax.process_index()
  global_batch = config.per_device_batch_size * jax.device_count()
  train_windows = data_lib.load_windows(config.data, 'train')
  eval_windows = data_lib.load_windows(config.data, 'validation')
  probes = data_lib.with_across_chunk_weights(data_lib.recall_probe_sets(config.data),
                                              config.model.chunk_size)
  is_chief = proc == 0
  say = functools.partial(print, flush=True) if is_chief else lambda *a, **k: None
  if is_chief:
    config_lib.save_config(config, workdir)

  model = config_lib.build_model(config)
  parallel = Parallel(config.parallelism, model, config)
  target = abstract_state(model, config, parallel.replicated)
  mngr = checkpoint_manager(workdir, config)
  rng = jax.random.key(config.seed)
  init_rng, dropout_rng = jax.random.split(rng)
  dropout_rng = parallel.put_rng(dropout_rng)
  start_step = mngr.latest_step() or 0
  if start_step:
    state, data_state = restore(mngr, start_step, target, workdir)
    position = int(data_state['position'])
    elapsed_before = float(data_state.get('elapsed_s', 0.0))
    say(f"Resuming from checkpoint step {start_step} in {workdir} "
        f"(data position {position}).")
  else:
    state = jax.jit(make_init_fn(model, config), out_shardings=parallel.replicated)(init_rng)
    position = 0
    elapsed_before = 0.0
  state = parallel.put_state(state)
  num_params = model_lib.count_params(target.params)
  train_iter = data_lib.TrainIterator(train_windows, global_batch, config.seed,
                                      process_index=proc, process_count=n_proc, position=position)

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in flax.traverse_util.flatten_dict(
        config.to_dict(), sep='.').items() if isinstance(v, (int, float, str, bool))})
  log = MetricsLog(workdir, start_step, enabled=is_chief)
  report = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer,
                                           every_secs=None, every_steps=config.log_every_steps)
  tokens_per_step = global_batch * config.data.seq_len
  is_corpus = config.data.name not in data_lib.TASK_FIELDS  # bits/byte means something
  eval_label = data_lib.accuracy_label(config.data.name)
  latents = '' if config.model.attention == 'full' else f"M={config.model.num_latents}, "
  say(f"Training {config.model.attention} ({latents}"
      f"H={config.model.num_heads}, {num_params:,} params) for {config.num_train_steps} steps "
      f"on {jax.device_count()} device(s), {n_proc} process(es), {config.parallelism}; "
      f"global batch {global_batch} x {config.data.seq_len} tokens; workdir {workdir}")

  def save(step: int, metrics: dict | None):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(parallel.global_state(state)),
        data=ocp.args.JsonSave({**train_iter.get_state(), 'elapsed_s': elapsed()})),
        metrics=metrics)

  session_start = time.time()
  elapsed = lambda: elapsed_before + time.time() - session_start  # training wall time, all sessions

  final = {}
  step = start_step
  window, window_steps = None, 0  # device-side sums of WINDOW_MEANS since the last log
  last_time, last_step = time.time(), start_step
  stop = _StopRequest()
  with stop:
    while step < config.num_train_steps:
      batch = next(train_iter)
      state, metrics = parallel.train_step(state, batch, dropout_rng)
      # Sums on device since the last log (no host sync), so the logged train loss,
      # accuracy and gradient norm are means over the window, not one noisy batch.
      averaged = {k: metrics[k] for k in WINDOW_MEANS}
      window = averaged if window is None else jax.tree.map(jnp.add, window, averaged)
      window_steps += 1
      step += 1
      is_log = step % config.log_every_steps == 0 or step == config.num_train_steps
      is_eval = step % config.eval_every_steps == 0 or step == config.num_train_steps
      stopping = stop.signal is not None  # one reading: a signal arriving later is seen next step
      is_ckpt = (step % config.checkpoint_every_steps == 0 or step == config.num_train_steps
                 or stopping)
      report(step, time.time())
      if not (is_log or is_eval or is_ckpt):
        continue
      host = parallel.first(metrics)
      loss = float(host['loss'])
      if not math.isfinite(loss):
        mngr.wait_until_finished()
        raise FloatingPointError(
            f"training loss is {loss} at step {step}; stopped without saving it. The last good "
            f"checkpoint is step {mngr.latest_step()} in {workdir}. Lower "
            "config.learning_rate or set config.grad_clip_norm.")
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
                      global_batch=global_batch)
        say(f"step {step:6d}/{config.num_train_steps}  loss {means['loss']:.4f}  "
            f"{steps_per_sec:.2f} steps/s  {record['tokens_per_sec']:,.0f} tokens/s  "
            f"ETA {_eta((config.num_train_steps - step) / max(steps_per_sec, 1e-9))}")
      if is_eval:
        ev = evaluate(parallel, state.params, eval_windows, global_batch,
                      config.num_eval_steps, probes)
        record.update(eval_loss=ev['loss'], eval_accuracy=ev['accuracy'])
        for key, label in (('recall_by_pairs', 'recall by pairs'),
                           ('recall_across_chunks_by_pairs', 'across chunks')):
          if key in ev:
            record[f'eval_{key}'] = ev[key]
            say(f"step {step:6d}  {label} "
                + '  '.join(f"{p}: {a:.4f}" for p, a in ev[key].items()))
        if 'bits_per_byte' in ev:
          record['eval_bits_per_byte'] = ev['bits_per_byte']
        say(f"step {step:6d}  eval loss {ev['loss']:.4f}  {eval_label} {ev['accuracy']:.4f}"
            + (f"  bits/byte {ev['bits_per_byte']:.4f}" if is_corpus else ''))
      record.update(elapsed_s=elapsed(), peak_memory_mb=peak_memory_mb())
      writer.write_scalars(step, {k: v for k, v in record.items()
                                  if k != 'step' and not isinstance(v, dict)})
      log.write(record)
      final = {**final, **record}
      if is_ckpt:
        save(step, {'eval_loss': record['eval_loss']} if 'eval_loss' in record else None)
      last_time, last_step = time.time(), step
      if stopping and step < config.num_train_steps:
        mngr.wait_until_finished()
        say(f"Received {stop.signal}: saved checkpoint step {step} in "
            f"{mngr.directory}; rerun the same command to resume.")
        break
  mngr.wait_until_finished()
  mngr.close()
  writer.flush()
  writer.close()
  if is_chief and final and step >= config.num_train_steps:  # finished here: sweeps skip it
    summary = {**final, 'num_params': num_params, 'num_train_steps': config.num_train_steps}
    path = os.path.join(workdir, 'summary.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(summary, f, indent=2)
    os.replace(path + '.tmp', path)
  return final
