"""Evaluate a saved checkpoint: loss and accuracy, and for corpora bits per byte by position."""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import jax
import ml_collections

from latent_flax import config_lib
from latent_flax import data as data_lib
from latent_flax import train_lib


class Restored(NamedTuple):
  state: train_lib.TrainState  # replicated over all devices (jit layout)
  data_state: dict             # the training data position saved with it
  step: int
  parallel: train_lib.Parallel


def restore_checkpoint(workdir: str, config: ml_collections.ConfigDict,
                       step: int | None = None) -> Restored:
  """Restores `step` (default: latest) of workdir for `config`; one clear line on failure."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ValueError(f"{workdir} holds no checkpoints; train first or point at another workdir.")
  model = config_lib.build_model(config)
  parallel = train_lib.Parallel('jit', model, config)
  mngr = train_lib.checkpoint_manager(workdir, config, read_only=True)
  try:
    steps = mngr.all_steps()
    if not steps:
      raise ValueError(f"{workdir}/checkpoints holds no complete checkpoint.")
    step = steps[-1] if step is None else step
    if step not in steps:
      raise ValueError(f"--step={step} is not saved in {workdir}; saved steps: {list(steps)}.")
    target = train_lib.abstract_state(model, config, parallel.replicated)
    state, data_state = train_lib.restore(mngr, step, target, workdir)
  finally:
    mngr.close()
  return Restored(state, data_state, int(step), parallel)


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


def evaluate_checkpoint(workdir: str, step: int | None = None,
                        config: ml_collections.ConfigDict | None = None,
                        num_eval_steps: int | None = None, split: str = 'validation') -> dict:
  """Restores `step` (default: latest) from workdir, evaluates `split`, writes its JSON.

  The JSON is workdir/eval_step_<S>.json for the validation split and
  eval_<split>_step_<S>.json for another. MQAR results also carry `recall_accuracy`,
  `recall_by_pairs` and `recall_across_chunks_by_pairs` (answers whose pair lies in an
  earlier chunk of config.model.chunk_size, with their count).
  """
  config = workdir_config(workdir, config)
  windows = data_lib.load_windows(config.data, split)  # a bad split fails before restoring
  restored = restore_checkpoint(workdir, config, step)
  global_batch = config.per_device_batch_size * jax.device_count()
  n = config.num_eval_steps if num_eval_steps is None else num_eval_steps
  probes = data_lib.recall_probe_sets(config.data) if split != 'train' else {}
  probes = data_lib.with_across_chunk_weights(probes, config.model.chunk_size)
  result = train_lib.evaluate(restored.parallel, restored.state.params, windows, global_batch, n,
                              probes)
  result = {'step': restored.step, 'dataset': config.data.name, 'split': split, **result}
  if config.data.name == 'mqar':
    result['recall_accuracy'] = result['accuracy']
  if jax.process_index() == 0:
    name = 'eval' if split == 'validation' else f'eval_{split}'
    path = os.path.join(workdir, f'{name}_step_{restored.step}.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(result, f, indent=2)
    os.replace(path + '.tmp', path)
    result['path'] = path
  return result
