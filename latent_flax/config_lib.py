"""Validation of whole experiment configs, before anything is compiled or written."""

from __future__ import annotations

import json
import os

import ml_collections

from latent_flax import data as data_lib
from latent_flax import model as model_lib

PARALLELISM = ('pmap', 'jit')
# Model fields that change parameter shapes: a workdir trained with other values
# cannot be resumed.
SHAPE_FIELDS = ('attention', 'num_latents', 'num_heads', 'emb_dim', 'mlp_dim', 'num_layers')
# Fields that change what the saved parameters compute, with the value of configs
# saved before the field existed.
FUNCTION_FIELDS = {'input_positions': 'none', 'pooling': 'mean'}


def _need(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError with one line naming the bad field and what is allowed."""
  data_lib.validate_data_config(config.data)
  model_lib.validate_model_config(config.model, task=data_lib.task_of(config.data))
  for name in ('num_train_steps', 'per_device_batch_size', 'log_every_steps',
               'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    value = config[name]
    _need(_is_int(value) and value >= 1, f"config.{name}={value!r} must be an integer >= 1.")
  _need(_is_int(config.num_eval_steps) and config.num_eval_steps >= 0,
        f"config.num_eval_steps={config.num_eval_steps!r} must be an integer >= 0 (0 = all).")
  _need(_is_int(config.warmup_steps) and config.warmup_steps >= 0,
        f"config.warmup_steps={config.warmup_steps!r} must be an integer >= 0.")
  lr = config.learning_rate
  _need(isinstance(lr, (int, float)) and 0 < lr <= 1.0,
        f"config.learning_rate={lr!r} must be in (0, 1].")
  _need(config.weight_decay >= 0, f"config.weight_decay={config.weight_decay!r} must be >= 0.")
  _need(config.grad_clip_norm >= 0,
        f"config.grad_clip_norm={config.grad_clip_norm!r} must be >= 0 (0 = no clipping).")
  _need(config.parallelism in PARALLELISM,
        f"config.parallelism={config.parallelism!r} is unknown; use one of {list(PARALLELISM)}.")


def build_model(config: ml_collections.ConfigDict):
  """The Module the data set's task needs: LanguageModel, or Classifier for listops."""
  task = data_lib.task_of(config.data)
  num_classes = None
  if task == 'classify':
    from latent_flax import listops
    num_classes = listops.NUM_CLASSES
  return model_lib.build_model(config.model, task=task, num_classes=num_classes)


def load_saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def check_compatible(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir: str) -> None:
  """Refuses a config whose params, or what they compute, differ from the workdir's saved one."""
  fields = {**{k: None for k in SHAPE_FIELDS}, **FUNCTION_FIELDS}
  if config.model.attention == 'causal_latent':  # the chunk size sets what each summary covers
    fields['chunk_size'] = None
  differ = [f"model.{k}: saved {saved.model.get(k, old)!r} vs new {config.model.get(k, old)!r}"
            for k, old in fields.items() if saved.model.get(k, old) != config.model.get(k, old)]
  if differ:
    raise ValueError(f"{workdir} holds a run of another model ({'; '.join(differ)}); "
                     "use a new --workdir or the saved config.")


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)
