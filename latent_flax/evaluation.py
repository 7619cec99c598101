"""Evaluation of parameters on a task's evaluation sets, one pass per set.

An LM set gives loss, accuracy, bits/byte and the loss by position bucket; a
classifier set gives loss and accuracy. Each further weight `weights_<name>` in
a set's batches adds `<name>_accuracy` and `<name>_tokens` to that set's result.
The task (tasks/) chooses the sets and how their results combine.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from latent_flax import data as data_lib

LN2 = math.log(2.0)
POSITION_BUCKETS = (0, 128, 512, 2048, 8192, 32768, 131072)


def evaluate(parallel, params, task, sets: dict, main: str, global_batch: int,
             num_batches: int | None) -> dict:
  """The task's evaluation result over `sets` ({name: source}, from task.eval_sets)."""
  results = {name: evaluate_set(parallel, params, source, global_batch, num_batches)
             for name, source in sets.items()}
  return task.summarize(results, main)


def evaluate_set(parallel, params, source, global_batch: int, num_batches: int | None) -> dict:
  totals = None
  for batch in data_lib.eval_batches(source, global_batch, num_batches,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
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
  return {**result, 'bits_per_byte': loss / LN2, 'loss_by_position': by_pos}
