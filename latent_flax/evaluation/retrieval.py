"""Retrieval probes of a language model (tasks/haystack.py: passkey, babi): exact greedy
retrieval and the answer's log-probability on a grid of context lengths x depths, as JSON
and a heatmap.

A document of L bytes (the answer its last bytes) is read once, teacher-forced: its first
L - 1 bytes go in `segment` bytes at a time through the decoding state (decode.stream:
prefill, then extend; a fixed-size state where the attention kind's registry entry decodes
by 'state', a KV cache of L bytes per layer where by 'cache'), and only the logits at the
answer's positions are kept. Retrieval is exact when the argmax at every answer position
is the answer's byte: what greedy decoding after the question writes, since each greedy
byte fed back equals the teacher-forced one as long as they agree; so one pass gives both
measures. Cost per cell: samples x L bytes read; memory: one segment's activations plus
the decoding state (causal_latent: O((M + C) D) per layer at any L).

    result = probe_checkpoint('runs/m64', 'passkey', [4096, 65536], [0, 0.5, 1], samples=8)
    result['accuracy'][i][j]   # length i, depth j: fraction of samples retrieved exactly
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import time
from typing import Callable, Iterable

import jax.numpy as jnp
import numpy as np

from latent_flax import config_lib, tasks
from latent_flax.attention import registry as attention_registry
from latent_flax.evaluation import decode, runs
from latent_flax.system import io_utils
from latent_flax.tasks import haystack
from latent_flax.training import checkpoint

MAX_LENGTH = 1 << 20  # bytes: the longest document a grid reads
HAYSTACKS = ('filler', 'validation', 'test')  # the classic filler, or a split of the run's corpus
# A read: inputs [B, N] -> (start, logits [B, S, V]) per segment, in order (decode.stream's).
Read = Callable[[np.ndarray], Iterable[tuple[int, np.ndarray]]]


def model_reader(model, params, segment: int) -> Read:
  """Reads inputs through the decoding state, `segment` bytes at a time."""
  return lambda tokens_BN: decode.stream(model, params, jnp.asarray(tokens_BN, jnp.int32),
                                         segment)


def tail_logits(read: Read, tokens_BN: np.ndarray, tail: int) -> np.ndarray:
  """float32 [B, tail, V]: the logits at the last `tail` positions of tokens_BN (only these
  leave the device)."""
  n = tokens_BN.shape[1]
  kept = []
  for start, logits_BSV in read(tokens_BN):
    lo = max(n - tail - start, 0)
    if lo < logits_BSV.shape[1]:
      kept.append(np.asarray(logits_BSV[:, lo:], np.float32))
  return np.concatenate(kept, axis=1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
  top = x.max(-1, keepdims=True)
  return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def score(read: Read, docs: list[haystack.Document], batch: int) -> dict[str, np.ndarray]:
  """Per document (all of one length): 'exact' (greedy retrieval of the whole answer),
  'logprob' (the answer's log-probability, nats) and 'byte_accuracy' (its bytes right)."""
  exact, logprob, byte_acc = [], [], []
  for i in range(0, len(docs), batch):
    part = docs[i:i + batch]
    tokens_BL = np.stack([d.tokens for d in part]).astype(np.int32)
    tail = max(len(d.answer) for d in part)
    # Input position p predicts byte p + 1: the last `tail` inputs predict the last `tail` bytes.
    logp_BTV = _log_softmax(tail_logits(read, tokens_BL[:, :-1], tail))
    targets_BT = tokens_BL[:, -tail:]
    for row, d in enumerate(part):
      lp_AV, want_A = logp_BTV[row, tail - len(d.answer):], targets_BT[row, tail - len(d.answer):]
      right_A = lp_AV.argmax(-1) == want_A
      exact.append(bool(right_A.all()))
      byte_acc.append(float(right_A.mean()))
      logprob.append(float(np.take_along_axis(lp_AV, want_A[:, None], 1).sum()))
  return {'exact': np.array(exact), 'logprob': np.array(logprob),
          'byte_accuracy': np.array(byte_acc)}


def documents(probe: haystack.Probe, length: int, depth: float, samples: int, seed: int,
              text: np.ndarray | None = None, data_config=None) -> list[haystack.Document]:
  """The grid cell's documents. Sample s of a length reads the same haystack at every depth
  (the filler, or `text` from a start drawn from (seed, length, s))."""
  docs = []
  for s in range(samples):
    hay = haystack.filler
    if text is not None:
      start = int(haystack.rng_for(seed, 0, length, s).integers(len(text)))
      hay = haystack.text_haystack(text, start)
    rng = haystack.rng_for(seed, 1, length, round(depth * 1e6), s)
    docs.append(probe.document(rng, length, hay, depth, data_config=data_config))
  return docs


def check_grid(probe: haystack.Probe, lengths, depths, samples, batch, segment,
               data_config=None) -> None:
  """One-line ValueError for a bad grid argument, before anything is read or compiled."""
  if not lengths or not depths:
    raise ValueError("--lengths and --depths need at least one value each.")
  for length in lengths:
    if isinstance(length, bool) or not isinstance(length, int) or length > MAX_LENGTH:
      raise ValueError(f"--lengths: {length!r} must be an integer number of bytes up to "
                       f"{MAX_LENGTH:,}.")
    probe.check_length(length, data_config, '--lengths: a length')
  for depth in depths:
    if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 <= depth <= 1:
      raise ValueError(f"--depths: {depth!r} must be a fraction in [0, 1] (0 = the start of "
                       "the haystack, 1 = just before the question).")
  for flag, value in (('--samples', samples), ('--batch', batch), ('--segment', segment)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{flag}={value!r} must be an integer >= 1.")


def parse_list(text: str, flag: str, kind: type) -> list:
  """'4096,16384' -> [4096, 16384]; one line naming the flag if an item is not a `kind`."""
  items = [t.strip() for t in (text or '').split(',') if t.strip()]
  try:
    return [kind(t) for t in items]
  except ValueError:
    raise ValueError(f"{flag}={text!r} must be comma-separated "
                     f"{'integers' if kind is int else 'numbers'}.") from None


def run_grid(read: Read, probe: haystack.Probe, lengths: list[int], depths: list[float],
             samples: int, *, seed: int = 0, text: np.ndarray | None = None, data_config=None,
             batch: int = 8, progress: Callable[[dict], None] | None = None) -> dict:
  """Scores every (length, depth) cell; grids are [length][depth]. `progress(row)` after
  each length."""
  grid = {'accuracy': [], 'answer_logprob': [], 'byte_accuracy': [], 'seconds': []}
  for length in lengths:
    begin = time.perf_counter()
    docs = [d for depth in depths for d in documents(probe, length, depth, samples, seed, text,
                                                     data_config)]
    s = score(read, docs, batch)
    cells = lambda v: [float(v[j * samples:(j + 1) * samples].mean()) for j in range(len(depths))]
    row = {'length': length, 'accuracy': cells(s['exact']),
           'answer_logprob': cells(s['logprob']), 'byte_accuracy': cells(s['byte_accuracy']),
           'seconds': time.perf_counter() - begin}
    for key in grid:
      grid[key].append(row[key])
    if progress is not None:
      progress(row)
  return grid


def _haystack_text(config, task, name: str) -> np.ndarray | None:
  """None for the filler, else the bytes of split `name` of the run's corpus."""
  if name == 'filler':
    return None
  if name not in HAYSTACKS:
    raise ValueError(f"--haystack={name!r} is unknown; use one of {list(HAYSTACKS)}.")
  if not hasattr(task, 'documents'):
    raise ValueError(f"--haystack={name}: data set {config.data.name!r} is not a corpus; use "
                     "--haystack=filler.")
  return np.asarray(task.documents(config.data, name).data)


def result_path(out: str, probe: str, haystack_name: str, step: int) -> str:
  return os.path.join(out, f'probe_{probe}_{haystack_name}_step_{step}.json')


def probe_checkpoint(workdir: str, probe_name: str, lengths: list[int], depths: list[float],
                     samples: int, *, seed: int = 0, haystack_name: str | None = None,
                     segment: int | None = None, batch: int = 8, step: int | str | None = None,
                     out: str | None = None, command: str = '',
                     progress: Callable[[dict], None] | None = None) -> dict:
  """The probe's grid for workdir's checkpoint `step` (default latest), written as
  `out`/probe_<probe>_<haystack>_step_<S>.json and .png (out: the workdir).

  haystack_name: 'filler', or 'validation' / 'test' (the run's corpus's split; default
  'validation' for a corpus, else 'filler'). segment: bytes per read through the decoding
  state (default: the run's training length). The probe's options (key digits, facts)
  are the run's config.data fields.
  """
  config = runs.workdir_config(workdir)
  task = tasks.get(config.data.name)
  if task.kind != 'lm':
    raise ValueError(f"{workdir} holds a {task.kind} model of {config.data.name!r}; probes "
                     "read language models.")
  kind = attention_registry.get(config.model.attention)
  if not kind.decode:
    raise ValueError(f"attention {kind.name!r} cannot read through a decoding state; probes "
                     f"need one of {[n for n in attention_registry.names() if attention_registry.get(n).decode]}.")
  probe = haystack.get_probe(probe_name)
  options = probe.options(config.data)
  segment = config.data.seq_len if segment is None else segment
  check_grid(probe, lengths, depths, samples, batch, segment, config.data)
  haystack_name = haystack_name or ('validation' if hasattr(task, 'documents') else 'filler')
  text = _haystack_text(config, task, haystack_name)
  model = config_lib.build_model(config)
  restored = checkpoint.restore_workdir(workdir, config, model, step, params_only=True)
  per_token, fixed = decode.state_footprint(model)
  grid = run_grid(model_reader(model, restored.params, segment), probe, lengths, depths,
                  samples, seed=seed, text=text, data_config=config.data, batch=batch,
                  progress=progress)
  result = {
      'probe': probe.name, 'title': probe.title, 'options': options,
      'chance': probe.chance(options), 'workdir': os.path.abspath(workdir),
      'step': restored.step, 'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'command': command, 'attention': kind.label(config.model) + (
          ' carried' if config.get('carry_state') else ''), 'decode': kind.decode,
      'trained_seq_len': config.data.seq_len, 'segment': segment, 'haystack': haystack_name,
      'dataset': config.data.name, 'lengths': list(lengths), 'depths': list(depths),
      'samples': samples, 'seed': seed,
      'grid_layout': 'grid[i][j]: length i, depth j',
      'accuracy': grid['accuracy'], 'answer_logprob': grid['answer_logprob'],
      'byte_accuracy': grid['byte_accuracy'], 'seconds_by_length': grid['seconds'],
      'mean_accuracy': float(np.mean(grid['accuracy'])),
      'state_bytes_by_length': [int(fixed + per_token * n) for n in lengths]}
  path = result_path(out or workdir, probe.name, haystack_name, restored.step)
  io_utils.write_json(path, result)
  plot_grid(result, path[:-len('.json')] + '.png')
  return {**result, 'path': path}


def _bytes_label(n: int) -> str:
  for unit, size in (('M', 1 << 20), ('K', 1 << 10)):
    if n >= size and n % size == 0:
      return f'{n // size}{unit}'
  return f'{n:,}'


def plot_grid(result: dict, path: str) -> str:
  """Heatmaps of exact retrieval and of the answer's mean log-probability, depth x length."""
  acc = np.array(result['accuracy']).T        # [depth, length]
  logp = np.array(result['answer_logprob']).T
  fig, axes = io_utils.figure(
      f"{result['title']}: {result['attention']} (trained on {result['trained_seq_len']:,}"
      f" bytes), step {result['step']}\nhaystack {result['haystack']}, "
      f"{result['samples']} per cell, chance {result['chance']:.2g}", panels=2,
      size=(max(8.0, 4.5 + 1.1 * len(result['lengths'])), 1.6 + 0.45 * len(result['depths'])))
  for ax, values, label, kw in (
      (axes[0], acc, 'exact greedy retrieval', dict(cmap='RdYlGn', vmin=0, vmax=1)),
      (axes[1], logp, "answer's log-probability (nats)", dict(cmap='viridis'))):
    image = ax.imshow(values, aspect='auto', origin='upper', **kw)
    for (j, i), v in np.ndenumerate(values):
      ax.text(i, j, f'{v:.2f}' if values is acc else f'{v:.1f}', ha='center', va='center',
              fontsize=7)
    ax.set_xticks(range(len(result['lengths'])), [_bytes_label(n) for n in result['lengths']])
    ax.set_yticks(range(len(result['depths'])), [f'{d:g}' for d in result['depths']])
    ax.set_xlabel('document length (bytes)')
    ax.set_ylabel('depth of the needle')
    ax.set_title(label, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
  fig.savefig(path, dpi=120)
  io_utils.pyplot().close(fig)
  return path


def latest_results(workdir: str) -> dict[str, dict]:
  """{'<probe>_<haystack>': the JSON of its highest step} of the probes written in workdir."""
  found: dict[str, tuple[int, str]] = {}
  for path in glob.glob(os.path.join(workdir, 'probe_*_step_*.json')):
    m = re.fullmatch(r'probe_(.+)_step_(\d+)\.json', os.path.basename(path))
    if m and (m[1] not in found or int(m[2]) > found[m[1]][0]):
      found[m[1]] = (int(m[2]), path)
  results = {}
  for key, (_, path) in sorted(found.items()):
    with open(path) as f:
      results[key] = json.load(f)
  return results
