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

The train and test sets are fixed: example i of a split is the same for every run
with the same (vocab_size, seq_len, num_kv_pairs, seed); train and test use
different random streams of that seed.
"""

from __future__ import annotations

import functools

import numpy as np

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
