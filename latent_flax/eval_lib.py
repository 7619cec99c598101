"""Evaluate a saved checkpoint on the task's evaluation sets; the result is written as JSON."""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import ml_collections

from latent_flax import checkpoint, config_lib, evaluation, io_utils, steps, tasks
from latent_flax.parallel import Parallel


class Restored(NamedTuple):
  state: steps.TrainState  # replicated over all devices (jit layout)
  data_state: dict         # the training data position saved with it
  step: int
  parallel: Parallel


def restore_checkpoint(workdir: str, config: ml_collections.ConfigDict,
                       step: int | str | None = None) -> Restored:
  """Restores `step` (default: latest; 'best') of workdir for `config`, in the jit layout."""
  model = config_lib.build_model(config)
  parallel = Parallel('jit', model, config)
  r = checkpoint.restore_workdir(workdir, config, model, step, sharding=parallel.replicated)
  return Restored(r.state, r.data_state, r.step, parallel)


def workdir_config(workdir: str, config: ml_collections.ConfigDict | None = None
                   ) -> ml_collections.ConfigDict:
  """`config`, or the one saved in workdir, validated; one clear line if there is none."""
  if not workdir or not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} does not exist; give the directory train.py wrote.")
  if config is None:
    config = config_lib.load_saved_config(workdir)
    if config is None:
      raise ValueError(f"{workdir} has no config.json: it is not a latent-flax training workdir.")
  config_lib.validate_config(config)
  return config


def evaluate_checkpoint(workdir: str, step: int | str | None = None,
                        config: ml_collections.ConfigDict | None = None,
                        num_eval_steps: int | None = None, split: str = 'validation', *,
                        write: bool = True) -> dict:
  """Restores `step` (default: latest) from workdir, evaluates `split`, writes its JSON.

  The JSON is workdir/eval_step_<S>.json for the validation split and
  eval_<split>_step_<S>.json for another (result['path']; with write=False the caller
  writes it). The task adds its own results (MQAR: `recall_accuracy`, `recall_by_pairs`,
  `recall_across_chunks_by_pairs`).
  """
  config = workdir_config(workdir, config)
  task = tasks.get(config.data.name)
  tasks.load(config.data, split)  # a bad split fails before restoring
  sets, main = task.eval_sets(config.data, config.model, split)
  restored = restore_checkpoint(workdir, config, step)
  global_batch = config.per_device_batch_size * jax.device_count()
  n = config.num_eval_steps if num_eval_steps is None else num_eval_steps
  result = evaluation.evaluate(restored.parallel, restored.state.params, task, sets, main,
                               global_batch, n)
  result = {'step': restored.step, 'dataset': config.data.name, 'split': split, **result}
  name = 'eval' if split == 'validation' else f'eval_{split}'
  path = os.path.join(workdir, f'{name}_step_{restored.step}.json')
  if write and jax.process_index() == 0:
    io_utils.write_json(path, result)
  return {**result, 'path': path}
