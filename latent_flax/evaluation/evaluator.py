"""Evaluation of parameters on a task's evaluation sets, one pass per set.

An LM set gives loss, accuracy, bits/byte, the loss by position bucket and bits/byte
by octave of context length (1, 2-3, 4-7, ... bytes); a
classifier set gives loss and accuracy. Each further weight `weights_<name>` in
a set's batches adds `<name>_accuracy` and `<name>_tokens` to that set's result.
The task (tasks/) chooses the sets and how their results combine.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from latent_flax.evaluation import decode
from latent_flax.tasks import data as data_lib
from latent_flax.training import steps

LN2 = math.log(2.0)
POSITION_BUCKETS = (0, 128, 512, 2048, 8192, 32768, 131072)


def evaluate(parallel, params, task, sets: dict, main: str, global_batch: int,
             num_batches: int | None, *, stream_segment: int | None = None) -> dict:
  """The task's evaluation result over `sets` ({name: source}, from task.eval_sets).

  stream_segment: feed each window `stream_segment` tokens at a time, each segment from
  the decoding state the previous one left (decode.stream; same result as one pass, in
  the memory of a segment plus the state); None: one parallel pass per window.
  """
  results = {name: evaluate_set(parallel, params, source, global_batch, num_batches,
                                stream_segment=stream_segment)
             for name, source in sets.items()}
  return task.summarize(results, main)


def stream_sums(model, params, batch: dict, segment: int, progress=None) -> dict:
  """eval_step's sums for one batch of windows, computed segment by segment;
  `progress(end, n)` after each segment if given."""
  targets, weights = batch['targets'], batch['weights']
  n = targets.shape[1]
  loss_by_pos, correct_sum = np.zeros(n), 0.0
  for start, logits in decode.stream(model, params, np.asarray(batch['inputs']), segment):
    end = start + logits.shape[1]
    ce, correct = segment_ce(logits, targets[:, start:end], weights[:, start:end])
    loss_by_pos[start:end] = np.asarray(ce, np.float64)
    correct_sum += float(correct)
    if progress is not None:
      progress(end, n)
  return {'loss_sum': loss_by_pos.sum(), 'correct_sum': correct_sum,
          'weight_sum': float(weights.sum()), 'loss_by_pos': loss_by_pos,
          'weight_by_pos': weights.sum(0)}


@jax.jit
def segment_ce(logits_BSV, targets_BS, weights_BS):
  ce, correct = steps.weighted_ce(logits_BSV, {'targets': targets_BS, 'weights': weights_BS})
  return ce.sum(0), correct.sum()


def evaluate_set(parallel, params, source, global_batch: int, num_batches: int | None, *,
                 stream_segment: int | None = None) -> dict:
  totals = None
  for batch in data_lib.eval_batches(source, global_batch, num_batches,
                                     process_index=parallel.data_share[0],
                                     process_count=parallel.data_share[1]):
    if stream_segment:
      sums = stream_sums(parallel.model, params, batch, stream_segment)
    else:
      sums = parallel.first(parallel.eval_step(params, batch))
    totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
  weight = max(float(totals['weight_sum']), 1.0)
  loss = float(totals['loss_sum'] / weight)
  result = {'loss': loss, 'accuracy': float(totals['correct_sum'] / weight),
            'tokens': int(totals['weight_sum'])}
  for key in totals:
    if key.startswith('weight_') and key != 'weight_sum' and key.endswith('_sum'):
      name = key[len('weight_'):-len('_sum')]
      result[f'{name}_accuracy'] = float(totals[f'correct_{name}_sum']
                                         / max(float(totals[key]), 1.0))
      result[f'{name}_tokens'] = int(totals[key])
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
  return {**result, 'bits_per_byte': loss / LN2, 'loss_by_position': by_pos,
          'bits_by_context': bits_by_context(totals['loss_by_pos'], totals['weight_by_pos'])}


def bits_by_context(loss_by_pos, weight_by_pos) -> dict[str, float]:
  """Bits/byte by octave of the context a prediction had: {'1-1', '2-3', '4-7', ...}.

  The target at window position p is predicted from p + 1 bytes, so octave [2^i, 2^(i+1))
  of context holds positions 2^i - 1 .. 2^(i+1) - 2 (the last octave runs to the window's
  end: '512-1024' for 1,024-byte windows).
  """
  loss, weight = np.asarray(loss_by_pos, np.float64), np.asarray(weight_by_pos, np.float64)
  out, lo = {}, 1
  while lo <= len(loss):
    hi = 2 * lo if 2 * lo < len(loss) else len(loss) + 1  # context lo .. hi - 1; the last
                                                          # octave takes the rest
    w = weight[lo - 1:hi - 1].sum()
    if w > 0:
      out[f'{lo}-{hi - 1}'] = float(loss[lo - 1:hi - 1].sum() / w / LN2)
    lo = hi
  return out
