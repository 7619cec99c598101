"""Whole experiment configs: validation before anything is compiled or written, the one
parser of `configs/X.py:key=value,...` arguments, short names, fields by dotted path
(`get_field(config, 'model.num_heads')`), the saved config.json.

Short names (SHORT_NAMES) are the one spelling used by config arguments, sweep point
names and hence workdir names: `configs/m64.py:m=32,heads=8` and a sweep point
{'model.num_latents': 32, 'model.num_heads': 8} named 'm=32,heads=8'. A full dotted
name (`model.mlp_dim=256`) works too.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

from latent_flax.system import io_utils
from latent_flax import tasks
from latent_flax import model as model_lib
from latent_flax.system import sharding
from latent_flax.system.checks import need, need_int
from latent_flax.attention import registry as attention_registry

PARALLELISM = ('pmap', 'jit')
SHORT_NAMES = {
    'attn': 'model.attention', 'm': 'model.num_latents', 'heads': 'model.num_heads',
    'chunk': 'model.chunk_size', 'dim': 'model.emb_dim', 'mlp': 'model.mlp_dim',
    'layers': 'model.num_layers', 'pairs': 'data.num_kv_pairs', 'seq_len': 'data.seq_len',
    'vocab': 'data.vocab_size', 'steps': 'num_train_steps', 'seed': 'seed',
    'lr': 'learning_rate', 'batch': 'per_device_batch_size', 'kv_rank': 'model.kv_lora_rank',
    'q_rank': 'model.q_lora_rank', 'decay': 'model.latent_decay'}
_SHORT_OF = {v: k for k, v in SHORT_NAMES.items()}


def short_name(dotted: str) -> str:
  """'model.num_latents' -> 'm'; a field without a short name keeps its dotted name."""
  return _SHORT_OF.get(dotted, dotted)


def parse_value(text: str, current: Any, where: str) -> Any:
  """`text` as the type of the field's current value; one-line ValueError if it is not."""
  text = text.strip()
  if isinstance(current, bool):
    values = {'true': True, '1': True, 'false': False, '0': False}
    if text.lower() not in values:
      raise ValueError(f"{where}={text!r} must be True or False.")
    return values[text.lower()]
  if isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"{where}={text!r} must be an integer.") from None
  if isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"{where}={text!r} must be a number.") from None
  return text


_REQUIRED = object()


def find_field(config: ml_collections.ConfigDict, dotted: str
               ) -> tuple[ml_collections.ConfigDict, str] | None:
  """The ConfigDict holding field `dotted` ('model.num_heads') and the field's own name
  ('num_heads'), or None when config has no such field."""
  *parents, leaf = dotted.split('.')
  node = config
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    return None
  return node, leaf


def get_field(config: ml_collections.ConfigDict, dotted: str, default: Any = _REQUIRED) -> Any:
  """config's value of `dotted`; `default` where it has no such field (else ValueError)."""
  found = find_field(config, dotted)
  if found is None:
    if default is _REQUIRED:
      raise ValueError(f"{dotted!r} is not a config field.")
    return default
  node, leaf = found
  return node[leaf]


def set_field(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """Sets the existing field `dotted`; one-line ValueError if there is none or `value` does
  not fit its type."""
  found = find_field(config, dotted)
  if found is None:
    raise ValueError(f"{dotted!r} is not a config field.")
  node, leaf = found
  try:
    node[leaf] = value
  except TypeError:
    raise ValueError(f"{dotted}={value!r} does not fit the field's type "
                     f"({type(node[leaf]).__name__}).") from None


def flat_fields(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  """{'model.num_heads': 4, ...}: every leaf field by its dotted path, in config order."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(flat_fields(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def _resolve(config: ml_collections.ConfigDict, key: str) -> str:
  """A short name, a dotted field, or a bare field name found in exactly one section."""
  if key in SHORT_NAMES or '.' in key:
    return SHORT_NAMES.get(key, key)
  found = [prefix + key for prefix, node in (('', config), ('model.', config.get('model')),
                                             ('data.', config.get('data')))
           if isinstance(node, ml_collections.ConfigDict) and key in node
           and not isinstance(node[key], ml_collections.ConfigDict)]
  return found[0] if len(found) == 1 else key


def apply_overrides(config: ml_collections.ConfigDict, arg: str | None
                    ) -> ml_collections.ConfigDict:
  """Applies 'key=value,...' (short names or dotted field names), typed as the fields are."""
  for item in (arg or '').split(','):
    if not item.strip():
      continue
    key, sep, value = item.partition('=')
    found = find_field(config, _resolve(config, key.strip()))
    if not sep or found is None:
      raise ValueError(f"config argument {item!r}: expected key=value with key a short name "
                       f"({', '.join(SHORT_NAMES)}), a field name such as remat, or a dotted "
                       "field such as model.mlp_dim.")
    node, leaf = found
    node[leaf] = parse_value(value, node[leaf], f"config argument {key.strip()}")
  return config


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError with one line naming the bad field and what is allowed."""
  tasks.validate(config.data)
  model_lib.validate_model_config(config.model, task=tasks.get(config.data.name).kind)
  for name in ('num_train_steps', 'per_device_batch_size', 'log_every_steps',
               'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
    need_int(f'config.{name}', config[name])
  need_int('config.num_eval_steps', config.num_eval_steps, 0, ' (0 = all)')
  need_int('config.warmup_steps', config.warmup_steps, 0)
  need(config.warmup_steps < config.num_train_steps,
       f"config.warmup_steps={config.warmup_steps} must be below config.num_train_steps="
       f"{config.num_train_steps} (the run would end at or before its peak learning rate, "
       "with no decay); lower warmup_steps or raise num_train_steps.")
  lr = config.learning_rate
  need(isinstance(lr, (int, float)) and 0 < lr <= 1.0,
       f"config.learning_rate={lr!r} must be in (0, 1].")
  need(config.weight_decay >= 0, f"config.weight_decay={config.weight_decay!r} must be >= 0.")
  need(config.grad_clip_norm >= 0,
       f"config.grad_clip_norm={config.grad_clip_norm!r} must be >= 0 (0 = no clipping).")
  need(config.parallelism in PARALLELISM,
       f"config.parallelism={config.parallelism!r} is unknown; use one of {list(PARALLELISM)}.")
  mesh = config.get('mesh') or {}
  unknown = sorted(set(mesh) - set(sharding.AXES))
  need(not unknown, f"config.mesh has no axis {unknown[0]!r}; its axes are "
       f"{list(sharding.AXES)}." if unknown else '')
  windows = config.get('carry_windows', 1)
  need(isinstance(windows, int) and not isinstance(windows, bool) and windows >= 1,
       f"config.carry_windows={windows!r} must be a whole number >= 1 (windows per step).")
  need(windows == 1 or config.get('carry_state'),
       f"config.carry_windows={windows} reads consecutive windows through a carried state: "
       "set config.carry_state=True, or carry_windows=1.")
  if config.get('carry_state'):
    validate_carry(config)


def validate_carry(config: ml_collections.ConfigDict) -> None:
  """What training past the window (config.carry_state) needs, one line if missing."""
  task = tasks.get(config.data.name)
  need(task.kind == 'lm' and hasattr(task, 'documents'),
       f"config.carry_state reads documents in order: data set {config.data.name!r} has none; "
       "use a corpus (stdlib_long, text_files, tfds:<name>) or carry_state=False.")
  need(config.parallelism == 'jit', "config.carry_state needs config.parallelism='jit'.")
  need(model_lib.fresh_carry(model_lib.validate_model_config(config.model), 1) is not None,
       f"config.model.attention={config.model.attention!r} carries nothing across windows"
       + (" with config.model.memory=0: set memory to the tokens to carry (e.g. 4096)"
          if 'memory' in attention_registry.get(config.model.attention).fields else '')
       + "; or use carry_state=False.")
  unit = attention_registry.get(config.model.attention).seq_split_unit(config.model)
  need(config.data.seq_len % unit == 0,
       f"config.carry_state carries a state between whole chunks: config.data.seq_len="
       f"{config.data.seq_len} must be a multiple of config.model.chunk_size={unit}.")


def validate_platform(config: ml_collections.ConfigDict) -> None:
  """What the config needs of this machine's devices (a sweep validated on a login node
  for a GPU cluster does not ask this); one line if they lack it."""
  platform = jax.default_backend()
  need(config.model.attention_impl != 'cudnn' or platform == 'gpu',
       f"config.model.attention_impl='cudnn' runs on NVIDIA GPUs, and this machine's devices "
       f"are {platform.upper()}s; use 'auto' (cuDNN where it runs, else blockwise).")


def validate_layout(config: ml_collections.ConfigDict, device_count: int) -> tuple[int, ...]:
  """config.mesh on `device_count` devices, and what a seq axis needs; one line if not.
  Returns the (data, fsdp, seq) sizes."""
  validate_platform(config)
  data, fsdp, seq = sharding.mesh_shape(config.get('mesh'), device_count)
  need(config.parallelism == 'jit' or (fsdp, seq) == (1, 1),
       f"config.mesh fsdp={fsdp}, seq={seq} needs config.parallelism='jit'; pmap only "
       "splits the batch.")
  if seq > 1:
    n = config.data.seq_len
    chunk = attention_registry.get(config.model.attention).seq_split_unit(config.model)
    unit = chunk * seq
    need(n % unit == 0,
         f"config.data.seq_len={n} must be a multiple of {unit} to split along "
         f"config.mesh.seq={seq}" + (f" in whole chunks of {chunk}" if chunk > 1 else '')
         + "; change either.")
  return data, fsdp, seq


def build_model(config: ml_collections.ConfigDict):
  """The Module the data set's task needs: a LanguageModel, or a Classifier."""
  task = tasks.get(config.data.name)
  return model_lib.build_model(config.model, task=task.kind, num_classes=task.num_classes)


HISTORY = 'history'  # config.json's record of what earlier segments of a resumed run used


def _saved_json(workdir: str) -> dict | None:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config a workdir's run trains with now (config.json without its history)."""
  saved = _saved_json(workdir)
  if saved is None:
    return None
  saved.pop(HISTORY, None)
  return ml_collections.ConfigDict(saved)


def saved_history(workdir: str) -> list[dict]:
  """config.json's history: [{'from_step': S, 'changed': {field: [before, after]}}], one
  entry per resume that changed a field; [] for a run trained with one config."""
  return (_saved_json(workdir) or {}).get(HISTORY, [])


def _as_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _flat(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def differences(config: ml_collections.ConfigDict | dict,
                reference: ml_collections.ConfigDict | dict) -> dict[str, list]:
  """{dotted field: [reference's value, config's]} of the fields whose values differ, as
  config.json writes them (None for a field one of them lacks), in config's order."""
  new, old = (_flat(c if isinstance(c, dict) else _as_json(c)) for c in (config, reference))
  return {k: [old.get(k), new.get(k)] for k in dict.fromkeys([*new, *old])
          if old.get(k) != new.get(k)}


def describe_fields(fields: dict[str, Any]) -> str:
  """'num_train_steps=30, data.name='text_files'': fields as config arguments write them."""
  return ', '.join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                   for k, v in fields.items())


def check_compatible(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir: str) -> None:
  """Refuses a config whose params, or what they compute, differ from the workdir's saved one."""
  kind = attention_registry.get(config.model.attention)
  defaults = model_lib.ModelConfig()  # the value of a field a saved config predates
  fields = {k: getattr(defaults, k) for k in model_lib.SHAPE_FIELDS + model_lib.FUNCTION_FIELDS
                                           + kind.function_fields + kind.shape_fields}
  differ = [f"model.{k}: saved {saved.model.get(k, old)!r} vs new {config.model.get(k, old)!r}"
            for k, old in fields.items() if saved.model.get(k, old) != config.model.get(k, old)]
  if bool(saved.get('carry_state', False)) != bool(config.get('carry_state', False)):
    differ.append(f"carry_state: saved {bool(saved.get('carry_state', False))} vs new "
                  f"{bool(config.get('carry_state', False))}")
  if differ:
    raise ValueError(f"{workdir} holds a run of another model ({'; '.join(differ)}); "
                     "use a new --workdir or the saved config.")


def save_config(config: ml_collections.ConfigDict, workdir: str, step: int = 0
                ) -> dict[str, list]:
  """Writes config.json for a run going on from `step`. The fields a resume (step > 0)
  changes are added to its history, with the step they apply from, so each segment's
  settings stay on record. Returns them ({field: [before, after]})."""
  saved = _saved_json(workdir) or {}
  history = saved.pop(HISTORY, [])
  new = _as_json(config)
  changed = differences(new, saved) if saved and step > 0 else {}
  if changed:
    history.append({'from_step': step, 'changed': changed})
  io_utils.write_json(os.path.join(workdir, 'config.json'),
                      {**new, **({HISTORY: history} if history else {})})
  return changed
