"""Orbax checkpoints of a workdir: the manager, restoring, and the one restore path
that train.py, eval.py and generate.py share.

A checkpoint holds the train state ('state') and the data position ('data'), and
the step's eval metrics where it was evaluated. Writes are asynchronous and atomic
(a step directory appears complete or not at all). Kept: the latest
`config.keep_checkpoints` and the best by the task's metric (lowest bits/byte, or
highest accuracy), tracked across resumes because its metrics are saved with it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any, NamedTuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from latent_flax.training import steps
from latent_flax import tasks


class _DropNotices(logging.Filter):
  """Orbax's notices about what we do on purpose: that a read-only manager is read-only
  (eval.py, generate.py), that a step saved between evaluations has no metrics (it
  is kept as one of the latest, never as the best), and that a save waited for the
  previous one's background write (on a loaded machine: a second, not a fault)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (record.levelno <= logging.WARNING
                and ('read_only' in message or 'read only' in message
                     or 'did not provide metrics' in message
                     or 'Waiting for previous save' in message))


@contextlib.contextmanager
def _quiet():
  handler_filter = _DropNotices()
  absl_logger = logging.getLogger('absl')
  absl_logger.addFilter(handler_filter)
  try:
    yield
  finally:
    absl_logger.removeFilter(handler_filter)


def _ranked(metric: str, lower_is_better: bool):
  """The metric a checkpoint is ranked by; NaN or inf (which the trainer never saves
  now) ranks worst, never best."""
  worst = math.inf if lower_is_better else -math.inf

  def value(metrics: dict) -> float:
    x = float(metrics[metric])
    return x if math.isfinite(x) else worst
  return value


def manager(workdir: str, config: ml_collections.ConfigDict, *,
            read_only: bool = False) -> ocp.CheckpointManager:
  task = tasks.get(config.data.name)
  ranked = _ranked(task.metric, task.lower_is_better)
  policies = ocp.checkpoint_managers
  preservation = policies.AnyPreservationPolicy([
      policies.LatestN(n=config.keep_checkpoints),
      # BestN keeps the last n after sorting (ascending unless reverse): reverse for
      # a metric where lower is better keeps the lowest.
      policies.BestN(get_metric_fn=ranked, reverse=task.lower_is_better, n=1,
                     keep_checkpoints_without_metrics=False)])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation, create=not read_only, read_only=read_only,
      # best_fn makes the manager write each step's metrics beside it (and read them
      # back on resume), so the best checkpoint survives restarts; best_step() uses it.
      best_fn=ranked, best_mode='min' if task.lower_is_better else 'max',
      cleanup_tmp_directories=not read_only, enable_async_checkpointing=not read_only,
      save_interval_steps=0 if read_only else 1)
  with _quiet():
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                                 options=options,
                                 item_handlers={'state': ocp.StandardCheckpointHandler(),
                                                'data': ocp.JsonCheckpointHandler(),
                                                'carry': ocp.StandardCheckpointHandler()})


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict,
         metrics: dict | None, carry=None) -> None:
  """Starts writing step's checkpoint (state, data position, eval metrics if evaluated,
  and the state each row carries to its next window when the run carries one)."""
  items = dict(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state))
  if carry is not None:
    items['carry'] = ocp.args.StandardSave(carry)
  with _quiet():
    mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics)


def restore_carry(mngr: ocp.CheckpointManager, step: int, target, where: str):
  """The carried state saved with `step`, laid out as `target` (shapes with shardings);
  one line if the checkpoint holds none or holds another shape."""
  try:
    meta = mngr.item_metadata(step)['carry']
    meta = meta.tree if hasattr(meta, 'tree') else meta
  except Exception:
    meta = None
  if meta is None:
    raise ValueError(f"checkpoint step {step} in {where} holds no carried state; it was "
                     "trained with config.carry_state=False: keep that setting to resume it.")
  saved, wanted = _flat_shapes(meta), _flat_shapes(target)
  for path in sorted(set(saved) | set(wanted)):
    if saved.get(path) != wanted.get(path):
      raise ValueError(
          f"checkpoint step {step} in {where} carries state{path} of shape "
          f"{saved.get(path, 'absent')}, this run {wanted.get(path, 'absent')}; resume with "
          "the run's global batch and model fields.")
  with _quiet():
    return mngr.restore(step, args=ocp.args.Composite(
        carry=ocp.args.StandardRestore(target)))['carry']


def latest_data_state(workdir: str, config: ml_collections.ConfigDict
                      ) -> tuple[int, dict] | None:
  """(step, data position) of the latest checkpoint, read alone (cheap), or None if there
  is none or it does not read (the restore then says why)."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    return None
  mngr = manager(workdir, config, read_only=True)
  try:
    step = mngr.latest_step()
    if step is None:
      return None
    with _quiet():
      return step, mngr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))['data']
  except Exception:  # unreadable: restore() gives the one line
    return None
  finally:
    mngr.close()


def abstract_state(model, config, sharding) -> steps.TrainState:
  """The train state's shapes, dtypes and shardings (what a restore lays the checkpoint
  out as, whatever mesh wrote it). `sharding`: one Sharding for every leaf, or a function
  from the tree of shapes to a tree of shardings (Parallel.shard_state_like)."""
  shapes = jax.eval_shape(steps.make_init_fn(model, config), jax.random.key(0))
  shardings = sharding(shapes) if callable(sharding) else jax.tree.map(lambda _: sharding,
                                                                       shapes)
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


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


def restore(mngr: ocp.CheckpointManager, step: int, target: steps.TrainState, where: str):
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


class Restored(NamedTuple):
  state: steps.TrainState | None  # the whole train state, replicated; None with params_only
  params: Any                     # the model parameters, replicated
  data_state: dict                # the training data position saved with it
  step: int


def resolve_step(mngr: ocp.CheckpointManager, step: int | str | None, workdir: str) -> int:
  """`step` as a saved step: None = the latest, 'best' = the best by the task's metric."""
  steps_saved = mngr.all_steps()
  if not steps_saved:
    raise ValueError(f"{workdir}/checkpoints holds no complete checkpoint.")
  if step is None or step == 'latest':
    return steps_saved[-1]
  if step == 'best':
    best = mngr.best_step()
    if best is None:
      raise ValueError(f"{workdir} has no evaluated checkpoint to call best; use --step=latest "
                       f"or one of {list(steps_saved)}.")
    return best
  if isinstance(step, str) and not step.isdigit():
    raise ValueError(f"--step={step!r} must be a step number, 'latest' or 'best'.")
  if int(step) not in steps_saved:
    raise ValueError(f"--step={step} is not saved in {workdir}; saved steps: "
                     f"{list(steps_saved)}.")
  return int(step)


def restore_workdir(workdir: str, config: ml_collections.ConfigDict, model,
                    step: int | str | None = None, *, sharding=None,
                    params_only: bool = False) -> Restored:
  """Restores `step` of a training workdir for `config`; one clear line on failure.

  The one restore path of eval.py and generate.py (train.py resumes through the
  same `restore`). params_only reads the parameters alone, not the optimizer state.
  """
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ValueError(f"{workdir} holds no checkpoints; train first or point at another workdir.")
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = abstract_state(model, config, sharding)
  # A trainer running on the workdir may delete a checkpoint while it is being read
  # (it keeps only the latest and the best): then read what is latest (or best) now.
  for attempt in range(_READ_ATTEMPTS):
    mngr = manager(workdir, config, read_only=True)
    resolved = None
    try:
      resolved = resolve_step(mngr, step, workdir)
      if params_only:
        check_checkpoint_matches(mngr, resolved, target, workdir)
        return _restore_params(workdir, resolved, target)
      state, data_state = restore(mngr, resolved, target, workdir)
      return Restored(state, state.params, data_state, resolved)
    except ValueError:
      if (resolved is None or attempt == _READ_ATTEMPTS - 1
          or _still_saved(workdir, config, resolved)):
        raise
      if step not in (None, 'latest', 'best'):
        raise ValueError(f"checkpoint step {resolved} in {workdir} was deleted while being read "
                         "(a trainer is running there and keeps only the latest and the best); "
                         "use --step=latest or --step=best.") from None
    finally:
      mngr.close()
  raise AssertionError('unreachable')


_READ_ATTEMPTS = 3


def _still_saved(workdir: str, config, step: int) -> bool:
  mngr = manager(workdir, config, read_only=True)
  try:
    return step in mngr.all_steps()
  finally:
    mngr.close()


def _restore_params(workdir: str, step: int, target: steps.TrainState) -> Restored:
  """The parameters of `step` alone (a partial restore: no optimizer state is read)."""
  with _quiet():
    params_mngr = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, 'checkpoints')),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0),
        item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                       'data': ocp.JsonCheckpointHandler()})
  item = {'params': target.params}
  try:
    restored = params_mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(item)),
        data=ocp.args.JsonRestore()))
  except Exception as e:
    raise ValueError(f"checkpoint step {step} in {workdir} cannot be read "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:160]}).") from None
  finally:
    params_mngr.close()
  return Restored(None, restored['state']['params'], restored['data'], step)
