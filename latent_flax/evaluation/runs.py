"""A training run read back from its workdir: its config, its checkpoint evaluated on the
task's evaluation sets (the result written as JSON), and text sampled from it.

A config given instead of the workdir's config.json (or overrides on top of it) may change
how an evaluation runs (batch size, num_eval_steps, data.seq_len, model.attention_impl,
the data evaluated) but not the model's fields: those are refused in one line naming the
field, since the checkpoint would compute another function. An evaluation's JSON records
the model and data settings and how much of the split it covered; its name records what
was evaluated (split, data other than the run's, length, windows, streaming, a subset).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from latent_flax.training import checkpoint, steps
from latent_flax import config_lib, tasks
from latent_flax.evaluation import decode, evaluator
from latent_flax.tasks import data as data_lib
from latent_flax import model as model_lib
from latent_flax.system import io_utils
from latent_flax.attention import registry as attention_registry
from latent_flax.training.parallel import Parallel


class Restored(NamedTuple):
  state: steps.TrainState  # replicated over all devices (jit layout)
  data_state: dict         # the training data position saved with it
  step: int
  parallel: Parallel


def restore_checkpoint(workdir: str, config: ml_collections.ConfigDict,
                       step: int | str | None = None) -> Restored:
  """Restores `step` (default: latest; 'best') of workdir for `config`, in the jit layout."""
  model = config_lib.build_model(config)
  parallel = Parallel('jit', model, config, mesh={'data': -1})  # any device count
  r = checkpoint.restore_workdir(workdir, config, model, step, sharding=parallel.replicated)
  return Restored(r.state, r.data_state, r.step, parallel)


def workdir_config(workdir: str, config: ml_collections.ConfigDict | None = None
                   ) -> ml_collections.ConfigDict:
  """`config`, or the one saved in workdir, validated; one clear line if there is none, or
  if `config` gives the model other fields than the saved one (check_same_model)."""
  if not workdir or not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir!r} does not exist; give the directory train.py wrote.")
  saved = config_lib.load_saved_config(workdir)
  if config is None:
    config = saved
    if config is None:
      raise ValueError(f"{workdir} has no config.json: it is not a latent-flax training workdir.")
  config_lib.validate_config(config)
  if saved is not None and config is not saved:
    check_same_model(saved, config, workdir)
  return config


def model_fields(*configs: ml_collections.ConfigDict) -> dict[str, object]:
  """{field: default} of the model fields that decide the parameters' shapes or what they
  compute, for the attention kinds of `configs` (a saved config that predates a field
  had its default)."""
  defaults = model_lib.ModelConfig()
  names = model_lib.SHAPE_FIELDS + model_lib.FUNCTION_FIELDS
  for c in configs:
    kind = attention_registry.get(c.model.attention)
    names += kind.function_fields + kind.shape_fields
  return {k: getattr(defaults, k) for k in dict.fromkeys(names)}


def check_same_model(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     workdir: str) -> None:
  """One line naming the first model field `config` sets otherwise than the run did."""
  for k, default in model_fields(saved, config).items():
    was, now = saved.model.get(k, default), config.model.get(k, default)
    if was != now:
      raise ValueError(
          f"{workdir} was trained with model.{k}={was!r}, the config given has {now!r}: its "
          "checkpoints would compute another function; keep the run's model fields (batch "
          "size, num_eval_steps, data.seq_len, data and model.attention_impl may differ).")


def with_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` with ('model.chunk_size', '16') pairs applied, each value typed as
  the field's current one; one line for a field the config does not have."""
  config = ml_collections.ConfigDict(config.to_dict())
  for dotted, text in overrides:
    found = config_lib.find_field(config, dotted)
    if found is None:
      raise ValueError(f"--config.{dotted}: the run's config.json has no field {dotted!r}; "
                       "the fields and their defaults are in configs/base.py and "
                       "latent_flax/model.py (ModelConfig).")
    node, leaf = found
    node[leaf] = config_lib.parse_value(text, node[leaf], f"--config.{dotted}")
  return config


def coverage(source, tokens: int, global_batch: int, num_batches: int | None) -> dict:
  """How much of its split an evaluation of `source` (data.Windows or data.Examples) in
  `num_batches` batches (None or <= 0: all) scored: windows (examples) and weighted
  targets, each of the whole split's. `tokens`: the targets the evaluation scored."""
  total = source.num_windows
  evaluated = total if not num_batches or num_batches <= 0 else min(total,
                                                                    num_batches * global_batch)
  if evaluated == total:
    split_tokens = tokens
  elif isinstance(source, data_lib.Examples):
    split_tokens = int(np.sum(source.arrays['weights']))
  else:  # data.Windows: every target of every window is weighed
    split_tokens = total * source.seq_len
  return {'evaluated_windows': int(evaluated), 'split_windows': int(total),
          'split_tokens': int(split_tokens)}


def portion(tokens: int, split_tokens: int, unit: str = '') -> str:
  """'512 of 3,584 bytes', or 'all 3,584 bytes' for the whole split (unit optional)."""
  said = f"all {split_tokens:,}" if tokens == split_tokens else f"{tokens:,} of {split_tokens:,}"
  return f"{said} {unit}" if unit else said


def over(tokens: int, split_tokens: int, unit: str) -> str:
  """'over 512 of 3,584 bytes', or 'over all 3,584 bytes' for the whole split."""
  return f"over {portion(tokens, split_tokens, unit)}"


def evaluation_config(config: ml_collections.ConfigDict, *, seq_len: int | None = None,
                      windows: str | None = None, stream_segment: int | None = None
                      ) -> ml_collections.ConfigDict:
  """The config with eval.py's overrides, checked in one line each before anything runs."""
  config = ml_collections.ConfigDict(config.to_dict())
  task = tasks.get(config.data.name)
  if seq_len is not None:
    if task.kind != 'lm':
      raise ValueError(f"--seq_len: data set {config.data.name!r} is classification; its "
                       "examples have the length they were generated with.")
    config.data.seq_len = seq_len
  if windows is not None:
    config.data.eval_windows = windows
  if stream_segment is not None:
    kind = attention_registry.get(config.model.attention)
    if task.kind != 'lm' or not kind.decode:
      raise ValueError(f"--stream_segment: attention {kind.name!r} on {config.data.name!r} "
                       "cannot continue from a decoding state; leave it out (one pass).")
    if not isinstance(stream_segment, int) or stream_segment < 1:
      raise ValueError(f"--stream_segment={stream_segment} must be >= 1 token.")
    if jax.process_count() > 1:
      raise ValueError("--stream_segment runs in one process; leave it out of multi-process "
                       "evaluation.")
  config_lib.validate_config(config)
  config_lib.validate_platform(config)
  return config


def evaluation_windows(config: ml_collections.ConfigDict, length: int,
                       windows: str = 'documents', split: str = 'validation') -> np.ndarray:
  """[windows, length + 1] tokens (inputs and the last target): the windows eval.py
  --seq_len=length --windows=... reads from `split` ('documents': each document from its
  start)."""
  data_config = evaluation_config(config, seq_len=length, windows=windows).data
  source = tasks.get(data_config.name).load(data_config, split)
  batch = source.get(np.arange(source.num_windows))
  return np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)


def evaluate_checkpoint(workdir: str, step: int | str | None = None,
                        config: ml_collections.ConfigDict | None = None,
                        num_eval_steps: int | None = None, split: str = 'validation', *,
                        write: bool = True, seq_len: int | None = None,
                        windows: str | None = None, stream_segment: int | None = None) -> dict:
  """Restores `step` (default: latest) from workdir, evaluates `split`, writes its JSON.

  num_eval_steps: batches evaluated (0: the whole split; None: the config's).
  The JSON is workdir/eval_step_<S>.json for the whole validation split and
  eval_<split>_step_<S>.json for another (result['path']; with write=False the caller
  writes it). Data other than the run's adds `_<name>-<hash of its fields>` to the name; an
  evaluation at another length, on document-aligned windows or streamed `_L<len>`,
  `_documents`, `_stream<S>`; one of the first W of the split's T windows (examples)
  `_first<W>of<T>windows`. The JSON records the model and data fields and the coverage
  (`tokens` of `split_tokens`). The task adds its own results (MQAR: `recall_accuracy`,
  `recall_by_pairs`, `recall_across_chunks_by_pairs`).
  """
  config = workdir_config(workdir, config)
  saved = config_lib.load_saved_config(workdir)
  saved = config if saved is None else saved
  trained_len = saved.data.seq_len
  config = evaluation_config(config, seq_len=seq_len, windows=windows,
                             stream_segment=stream_segment)
  task = tasks.get(config.data.name)
  tasks.load(config.data, split)  # a bad split, or no window of this length, fails here
  sets, main = task.eval_sets(config.data, config.model, split)
  restored = restore_checkpoint(workdir, config, step)
  global_batch = config.per_device_batch_size * jax.device_count()
  n = config.num_eval_steps if num_eval_steps is None else num_eval_steps
  result = evaluator.evaluate(restored.parallel, restored.state.params, task, sets, main,
                               global_batch, n, stream_segment=stream_segment)
  covered = coverage(sets[main], result['tokens'], global_batch, n)
  result = {'step': restored.step, 'dataset': config.data.name, 'split': split,
            'seq_len': config.data.seq_len, 'trained_seq_len': trained_len,
            'windows': config.data.get('eval_windows', 'stream'),
            'stream_segment': stream_segment, 'num_eval_steps': n,
            'global_batch': global_batch, **covered, **result,
            'model': config.model.to_dict(), 'data': config.data.to_dict()}
  name = 'eval' if split == 'validation' else f'eval_{split}'
  name += _other_data(saved.data, config.data)
  name += '' if config.data.seq_len == trained_len else f'_L{config.data.seq_len}'
  name += '_documents' if result['windows'] == 'documents' else ''
  name += '' if stream_segment is None else f'_stream{stream_segment}'
  if covered['evaluated_windows'] < covered['split_windows']:
    name += f"_first{covered['evaluated_windows']}of{covered['split_windows']}windows"
  path = os.path.join(workdir, f'{name}_step_{restored.step}.json')
  if write and jax.process_index() == 0:
    io_utils.write_json(path, result)
    plot_by_context(result, path[:-len('.json')] + '.png')
  return {**result, 'path': path}


# Data fields that say where data is kept or how it is cut for evaluation (named apart),
# not which data it is.
_DATA_PLACE = ('seq_len', 'eval_windows', 'cache_dir', 'data_dir')


def _other_data(trained: ml_collections.ConfigDict, data: ml_collections.ConfigDict) -> str:
  """'' for the run's own data, else '_<name>-<6 hex digits of its fields>'."""
  chosen = {k: v for k, v in data.to_dict().items() if k not in _DATA_PLACE}
  if chosen == {k: v for k, v in trained.to_dict().items() if k not in _DATA_PLACE}:
    return ''
  digest = hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()
  return f"_{re.sub(r'[^A-Za-z0-9_.-]', '_', data.name)}-{digest[:6]}"


def plot_by_context(result: dict, path: str) -> str | None:
  """PNG of bits/byte against the context a prediction had (log x), if the result has it."""
  octaves = result.get('bits_by_context')
  if not octaves:
    return None
  how = f"{result.get('windows', 'stream')} windows of {result.get('seq_len', '?')} bytes"
  if result.get('stream_segment'):
    how += f", streamed in segments of {result['stream_segment']}"
  if result.get('tokens') and result.get('split_tokens'):
    how += f"; {over(result['tokens'], result['split_tokens'], 'bytes')}"
  fig, (ax,) = io_utils.figure(
      f"{result['dataset']} {result['split']}, step {result['step']}: {how}", size=(6.4, 4.0))
  bounds = [tuple(map(int, k.split('-'))) for k in octaves]
  ax.plot([(lo * hi) ** 0.5 for lo, hi in bounds], list(octaves.values()), 'o-')
  ax.set_xscale('log', base=2)
  ax.set_xlabel('bytes of context (octave mean)')
  ax.set_ylabel('bits per byte')
  ax.grid(True, which='both', alpha=0.3)
  fig.savefig(path, dpi=120)
  io_utils.pyplot().close(fig)
  return path


def sample_from_checkpoint(workdir: str, prompt: str, max_new_tokens: int,
                           sampling: decode.Sampling = decode.Sampling(), *, seed: int = 0,
                           num_samples: int = 1,
                           step: int | None = None,
                           config: ml_collections.ConfigDict | None = None) -> dict:
  """Continues `prompt` num_samples times from a training workdir's checkpoint.

  Returns the step, the continuations (text), the decoding state's size in bytes
  and the speed of the whole call (prefill, compilation and sampling included).
  """
  config = workdir_config(workdir, config)
  config_lib.validate_platform(config)
  task = tasks.get(config.data.name)
  if task.kind != 'lm':
    raise ValueError(f"{workdir} holds a {task.kind} model of data set {config.data.name!r}, "
                     "not a language model; generate.py continues text with LM workdirs.")
  kind = attention_registry.get(config.model.attention)
  if kind.decode is None:
    raise ValueError(f"attention {kind.name!r} cannot decode token by token; use one of "
                     f"{[n for n in attention_registry.names() if attention_registry.get(n).decode]}.")
  prompt_P = data_lib.encode(prompt)
  if prompt_P.size == 0:
    raise ValueError("--prompt is empty; give at least one character to continue.")
  if max_new_tokens < 1:
    raise ValueError(f"--max_new_tokens={max_new_tokens} must be >= 1.")
  if num_samples < 1:
    raise ValueError(f"--num_samples={num_samples} must be >= 1.")
  model = model_lib.build_model(config.model)
  restored = checkpoint.restore_workdir(workdir, config, model, step, params_only=True)
  params = restored.params
  prompt_BP = jnp.asarray(np.broadcast_to(prompt_P, (num_samples, prompt_P.size)), jnp.int32)
  start = time.perf_counter()
  new_BT = np.asarray(decode.generate(model, params, prompt_BP, max_new_tokens, jax.random.key(seed),
                               sampling))
  seconds = time.perf_counter() - start
  state = jax.eval_shape(lambda: decode.prefill(model, params, prompt_BP, prompt_P.size + max_new_tokens))
  return dict(step=restored.step, prompt=prompt, samples=[data_lib.decode(t) for t in new_BT],
              tokens=new_BT, state_bytes=decode.state_bytes(state[1]), seconds=seconds,
              tokens_per_s=num_samples * max_new_tokens / seconds)
