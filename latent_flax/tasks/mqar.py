"""Multi-query associative recall (MQAR): a fixed, seeded probe of how much a model recalls.

Following the published definition (Arora et al., 2023, "Zoology"): keys come from
the first half of the vocabulary [1, V/2) and values from the second half [V/2, V);
each example starts with num_kv_pairs pairs `k_1 v_1 ... k_D v_D` (distinct keys,
distinct values), and each key is queried once later. Query i sits at position
2D + 2*g_i, where the gaps g_i are distinct and drawn with probability proportional
to (g + 1) ** (power_a - 1) over the (N - 2D) / 2 free even slots, so most queries
come soon after the pairs and some far later. Every other position holds token 0.
The target at a query position is the key's value; loss and accuracy count only
there (weight 1), every other position has weight 0.

Training can mix easier examples in, as the published probe does (several pair
counts in one train set): `train_pairs_mix='4,8,16,32'` splits the train set
equally among those counts. The test set has num_kv_pairs pairs; `eval_pairs`
('8,16,32') adds test sets with those counts, so one run gives recall against
the number of facts.

`across_chunks` keeps the loss weight only at answers whose pair lies in an earlier
chunk than the query: for causal_latent those answers can come only through the
latents, the rest also from exact attention inside the chunk.

Evaluation (the `Mqar` task): recall accuracy on the main test set, `recall_by_pairs`
on each `eval_pairs` test set, and `recall_across_chunks_by_pairs` with the count of
those answers (`answers_across_chunks_by_pairs`), all from one pass per test set.

The train and test sets are fixed: example i of a split is the same for every run
with the same (vocab_size, seq_len, num_kv_pairs, seed); train and test use
different random streams of that seed.
"""

from __future__ import annotations

import functools

import numpy as np

from latent_flax.tasks import data
from latent_flax.tasks import registry

SPLIT_STREAM = {'train': 0, 'test': 1}


def check_params(vocab_size: int, seq_len: int, num_kv_pairs: int) -> None:
  """ValueError with one line if the pairs and queries cannot fit."""
  half = vocab_size // 2
  if num_kv_pairs < 1:
    raise ValueError(f"config.data.num_kv_pairs={num_kv_pairs} must be >= 1.")
  if num_kv_pairs > half - 1:
    raise ValueError(f"config.data.num_kv_pairs={num_kv_pairs} needs that many distinct keys in "
                     f"[1, vocab_size/2) = [1, {half}); raise config.data.vocab_size to at least "
                     f"{2 * num_kv_pairs + 2}.")
  if seq_len < 4 * num_kv_pairs:
    raise ValueError(f"config.data.seq_len={seq_len} cannot hold {num_kv_pairs} pairs and their "
                     f"queries (2 tokens each); use seq_len >= {4 * num_kv_pairs}.")


def parse_mix(text: str, num_kv_pairs: int, field: str = 'train_pairs_mix') -> list[int]:
  """'4,8,16' -> [4, 8, 16] (config.data.<field>); '' -> [num_kv_pairs]."""
  if not text.strip():
    return [num_kv_pairs]
  try:
    return [int(p) for p in text.split(',')]
  except ValueError:
    raise ValueError(f"config.data.{field}={text!r} must be comma-separated integers "
                     "such as '4,8,16,32', or ''.") from None


@functools.lru_cache(maxsize=8)
def generate(num_examples: int, seq_len: int, num_kv_pairs: int, vocab_size: int,
             seed: int, split: str, power_a: float = 0.01) -> dict[str, np.ndarray]:
  """{'inputs', 'targets' int32 [E, N]; 'weights' float32 [E, N]} of one split."""
  check_params(vocab_size, seq_len, num_kv_pairs)
  rng = np.random.default_rng([seed, SPLIT_STREAM[split], num_kv_pairs, seq_len, vocab_size])
  E, D, half = num_examples, num_kv_pairs, vocab_size // 2
  # Distinct keys from [1, half) and distinct values from [half, vocab): first D of a
  # random permutation per example.
  keys = np.argsort(rng.random((E, half - 1)), axis=1)[:, :D] + 1
  values = np.argsort(rng.random((E, vocab_size - half)), axis=1)[:, :D] + half
  inputs = np.zeros((E, seq_len), np.int32)
  inputs[:, 0:2 * D:2], inputs[:, 1:2 * D:2] = keys, values
  # D distinct gaps per example, P(g) ~ (g+1)^(a-1): weighted sampling without
  # replacement as the top D of log p + Gumbel noise.
  slots = (seq_len - 2 * D) // 2
  log_p = (power_a - 1.0) * np.log(np.arange(1, slots + 1))
  gaps = np.argsort(-(log_p + rng.gumbel(size=(E, slots))), axis=1)[:, :D]
  query_pos = 2 * D + 2 * gaps
  order = rng.permuted(np.tile(np.arange(D), (E, 1)), axis=1)  # which key each query asks
  rows = np.arange(E)[:, None]
  inputs[rows, query_pos] = keys[rows, order]
  targets = np.zeros((E, seq_len), np.int32)
  targets[rows, query_pos] = values[rows, order]
  weights = np.zeros((E, seq_len), np.float32)
  weights[rows, query_pos] = 1.0
  return {'inputs': inputs, 'targets': targets, 'weights': weights}


def pair_index(inputs_EN: np.ndarray, pairs: int) -> np.ndarray:
  """For every position, the index i of the pair whose key is the token there ([E, N]).

  Meaningful at the queries (and the keys themselves); keys are distinct within an
  example, so the first match is the pair.
  """
  keys_EP = inputs_EN[:, 0:2 * pairs:2]
  return np.argmax(inputs_EN[:, :, None] == keys_EP[:, None, :], axis=2)


def across_chunks(arrays: dict[str, np.ndarray], chunk_size: int) -> dict[str, np.ndarray]:
  """The same examples plus 'weights_across': the weights only at answers across chunks.

  With chunks of `chunk_size` tokens, query t for key k (its pair at 2i, 2i+1) is kept
  when (2i) // chunk_size < t // chunk_size: a causal_latent block can answer it only
  through the latents. Every example of a generated set has the same number of pairs.
  """
  inputs, weights = arrays['inputs'], arrays['weights']
  pair_pos_EN = 2 * pair_index(inputs, int(round(weights[0].sum())))
  chunk_N = np.arange(inputs.shape[1]) // chunk_size
  crosses_EN = pair_pos_EN // chunk_size < chunk_N[None, :]
  return {**arrays,
          'weights_across': np.where(crosses_EN, weights, 0.0).astype(weights.dtype)}


def test_set(data_config, pairs: int) -> data.Examples:
  """The fixed test set with `pairs` pairs (generate() caches it)."""
  return data.Examples(generate(data_config.num_test_examples, data_config.seq_len, pairs,
                                data_config.vocab_size, data_config.seed, 'test'))


class Mqar(registry.Task):
  """Recall of key-value pairs; loss and accuracy only at the answers."""

  name = 'mqar'
  metric = 'eval_accuracy'
  accuracy_label = 'recall accuracy'
  target_unit = 'answers'
  splits = ('train', 'validation', 'test')  # validation and test: the same fixed test set
  int_fields = {'vocab_size': 1, 'num_kv_pairs': 1, 'num_train_examples': 1,
                'num_test_examples': 1, 'seed': 0}
  config_example = 'configs/mqar.py'
  eval_extras = {'recall_by_pairs': ('recall by pairs', ''),
                 'recall_across_chunks_by_pairs': ('across chunks',
                                                   'recall of the answers across chunks')}
  extras_line_name = 'pairs'  # what the keys of those results are

  def validate(self, data_config) -> None:
    super().validate(data_config)
    d = data_config
    check_params(d.vocab_size, d.seq_len, d.num_kv_pairs)
    for field in ('train_pairs_mix', 'eval_pairs'):
      for pairs in parse_mix(d.get(field) or '', d.num_kv_pairs, field):
        check_params(d.vocab_size, d.seq_len, pairs)
    if d.vocab_size > 256:
      raise ValueError(f"config.data.vocab_size={d.vocab_size} exceeds the model's "
                       "256-token vocabulary; use vocab_size <= 256.")

  def load(self, data_config, split: str) -> data.Examples:
    d = data_config
    if split != 'train':  # one fixed test set, with num_kv_pairs pairs
      return test_set(d, d.num_kv_pairs)
    mix = parse_mix(d.get('train_pairs_mix') or '', d.num_kv_pairs, 'train_pairs_mix')
    count = d.num_train_examples
    parts = [generate(count // len(mix) + (i < count % len(mix)), d.seq_len, p, d.vocab_size,
                      d.seed, 'train') for i, p in enumerate(mix)]
    return data.Examples({k: np.concatenate([part[k] for part in parts]) for k in parts[0]})

  def eval_sets(self, data_config, model_config, split: str):
    """The main test set and the eval_pairs test sets, each with across-chunk weights
    for the model's chunk size (kept only where some answer crosses a chunk)."""
    d = data_config
    if split == 'train':
      return {'main': self.load(d, split)}, 'main'
    sets = {}
    for pairs in parse_mix(d.eval_pairs, d.num_kv_pairs) if d.get('eval_pairs') else []:
      arrays = across_chunks(test_set(d, pairs).arrays, model_config.chunk_size)
      sets[str(pairs)] = data.Examples(arrays) if arrays['weights_across'].any() else test_set(
          d, pairs)
    main = str(d.num_kv_pairs)
    if main not in sets:  # the main test set is not among the probes: evaluated on its own
      main = 'main'
      sets[main] = test_set(d, d.num_kv_pairs)
    return sets, main

  def summarize(self, results: dict[str, dict], main: str) -> dict:
    result = {k: v for k, v in results[main].items() if not k.startswith('across_')}
    result['recall_accuracy'] = result['accuracy']
    probes = {p: r for p, r in results.items() if p != 'main'}
    if probes:
      result['recall_by_pairs'] = {p: r['accuracy'] for p, r in probes.items()}
      across = {p: r for p, r in probes.items() if 'across_tokens' in r}
      if across:
        result['recall_across_chunks_by_pairs'] = {p: r['across_accuracy']
                                                   for p, r in across.items()}
        result['answers_across_chunks_by_pairs'] = {p: r['across_tokens']
                                                    for p, r in across.items()}
    return result

  def describe(self, r: dict) -> list[str]:
    return super().describe(r) + [f"  test set with {p:>3s} pairs: recall accuracy {a:.4f}"
                                  for p, a in r.get('recall_by_pairs', {}).items()]


registry.register(Mqar())
