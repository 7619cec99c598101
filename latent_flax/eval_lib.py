"""Evaluate a saved checkpoint on the validation split; report bits per byte by position."""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from latent_flax import config_lib
from latent_flax import data as data_lib
from latent_flax import model as model_lib
from latent_flax import train_lib


def evaluate_checkpoint(workdir: str, step: int | None = None,
                        config: ml_collections.ConfigDict | None = None,
                        num_eval_steps: int | None = None) -> dict:
  """Restores `step` (default: latest) from workdir, evaluates, writes eval_step_<S>.json."""
  if not workdir or not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} does not exist; give the directory train.py wrote.")
  saved = config_lib.load_saved_config(workdir)
  if config is None:
    if saved is None:
      raise ValueError(f"{workdir} has no config.json: it is not a latent-flax training workdir.")
    config = saved
  config_lib.validate_config(config)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise ValueError(f"{workdir} holds no checkpoints; train first or point at another workdir.")
  windows = data_lib.Windows(data_lib.load_split(config.data, 'validation'), config.data.seq_len,
                             f"validation split of {config.data.name!r}")
  model = model_lib.build_model(config.model)
  parallel = train_lib.Parallel('jit', model, config)
  mngr = train_lib.checkpoint_manager(workdir, config, read_only=True)
  steps = mngr.all_steps()
  if not steps:
    raise ValueError(f"{workdir}/checkpoints holds no complete checkpoint.")
  step = steps[-1] if step is None else step
  if step not in steps:
    raise ValueError(f"--step={step} is not saved in {workdir}; saved steps: {list(steps)}.")
  target = train_lib.abstract_state(model, config, parallel.replicated)
  try:
    state, _ = train_lib.restore(mngr, step, target, workdir)
  except ValueError:
    raise
  except Exception as e:
    raise ValueError(f"checkpoint step {step} in {workdir} cannot be read "
                     f"({type(e).__name__}: {str(e).splitlines()[0][:200]}).") from None
  global_batch = config.per_device_batch_size * jax.device_count()
  n = config.num_eval_steps if num_eval_steps is None else num_eval_steps
  result = train_lib.evaluate(parallel, state.params, windows, global_batch, n)
  result = {'step': int(step), 'dataset': config.data.name, **result}
  if jax.process_index() == 0:
    path = os.path.join(workdir, f'eval_step_{step}.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(result, f, indent=2)
    os.replace(path + '.tmp', path)
    result['path'] = path
  mngr.close()
  return result
