"""Looking inside a trained workdir's model: a classifier's predictions (to set beside a
rule's), and the MQAR slot probe.

The slot probe reads step 1 (compress) of a causal_latent model trained on MQAR. The
latent queries are fixed parameters, so each latent and head (a "slot", M x H per layer)
scores a token by its content alone. On the run's test set, with the pairs filling chunk
0 (2 * pairs <= chunk_size), it asks which pair each slot holds (the pair whose key and
value get at least HOLD of the slot's attention), whether that choice is a fixed
preference over token identities (fitted on the first half of the examples, scored on
the second), and whether recall follows (accuracy at queries whose pair some slot holds
against those whose pair none holds). Cost: one forward pass over the test set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from latent_flax import config_lib, tasks
from latent_flax.attention import registry
from latent_flax.evaluation import runs
from latent_flax.tasks import mqar

HOLD = 0.5  # a slot holds a pair when the pair gets at least this share of its attention


def classifier_predictions(workdir: str, inputs: np.ndarray, mask: np.ndarray,
                           batch: int = 16) -> tuple[np.ndarray, int]:
  """The latest checkpoint's argmax classes for `inputs` and `mask` (as a classification
  task's load gives them), and its step."""
  config = runs.workdir_config(workdir)
  restored = runs.restore_checkpoint(workdir, config)
  model = config_lib.build_model(config)
  apply = jax.jit(lambda p, x, m: model.apply({'params': p}, x, m).argmax(-1))
  out = [np.asarray(apply(restored.state.params, inputs[i:i + batch], mask[i:i + batch]))
         for i in range(0, len(inputs), batch)]
  return np.concatenate(out), restored.step


def compress_attention(model, params, inputs_BN: np.ndarray, batch: int = 100):
  """(logits, per layer the step-1 attention of every slot over chunk 0, [B, H, M, C])."""
  def run(x):
    logits, state = model.apply({'params': params}, x, mutable=['intermediates'],
                                capture_intermediates=True)
    layers = []
    for name in sorted((n for n in state['intermediates'] if n.startswith('block_')),
                       key=lambda n: int(n.split('_')[1])):
      compress = state['intermediates'][name]['attention']['compress']
      q_MHd = compress['query']['__call__'][0]
      k_BCHd = compress['key']['__call__'][0][:, 0]  # chunk 0
      s_BHMC = jnp.einsum('mhd,bchd->bhmc', q_MHd, k_BCHd) * q_MHd.shape[-1] ** -0.5
      layers.append(jax.nn.softmax(s_BHMC, axis=-1))
    return logits, layers
  run = jax.jit(run)
  parts = [run(inputs_BN[i:i + batch]) for i in range(0, len(inputs_BN), batch)]
  logits = np.concatenate([np.asarray(p[0]) for p in parts])
  layers = [np.concatenate([np.asarray(p[1][l]) for p in parts])
            for l in range(len(parts[0][1]))]
  return logits, layers


def slot_statistics(attn_BHMC: np.ndarray, keys_BP: np.ndarray, values_BP: np.ndarray,
                    vocab_size: int) -> dict:
  """Held pairs, and how well fixed token preferences per slot predict what a slot holds.

  A slot's preference for a token is its mean attention to that token where present,
  from the first half of the examples; on the second half the slot is predicted to
  hold the pair that maximises the key's preference (`slot_predictability_key`) or
  the key's plus the value's (`slot_predictability_pair`).
  """
  B, H, M, _ = attn_BHMC.shape
  P = keys_BP.shape[1]
  token_BSP2 = attn_BHMC[..., :2 * P].reshape(B, H * M, P, 2)
  mass_BSP = token_BSP2.sum(-1)
  top_BS = mass_BSP.argmax(-1)
  holds_BS = mass_BSP.max(-1) >= HOLD
  held_BP = np.zeros((B, P), bool)
  for s in range(H * M):
    held_BP[np.arange(B)[holds_BS[:, s]], top_BS[holds_BS[:, s], s]] = True
  half = B // 2
  pref_SV = np.zeros((H * M, vocab_size))
  count_V = np.zeros(vocab_size)
  for b in range(half):
    for part, tokens in enumerate((keys_BP[b], values_BP[b])):
      pref_SV[:, tokens] += token_BSP2[b, :, :, part]
      count_V[tokens] += 1
  pref_SV /= np.maximum(count_V, 1)
  key_pref_BSP = pref_SV[:, keys_BP[half:]].transpose(1, 0, 2)
  pair_pref_BSP = key_pref_BSP + pref_SV[:, values_BP[half:]].transpose(1, 0, 2)
  scored = holds_BS[half:]

  def predictability(pref_BSP):
    right = (pref_BSP.argmax(-1) == top_BS[half:])[scored]
    return float(right.mean()) if right.size else float('nan')

  return {'held_BP': held_BP, 'pref_SV': pref_SV,
          'slots_holding_a_pair': float(holds_BS.mean()),
          # How many different tokens the slots prefer most: a slot latched onto one
          # token holds that token's pair whenever it is present.
          'distinct_favourite_tokens': int(len(set(pref_SV.argmax(1)))),
          'slot_predictability_key': predictability(key_pref_BSP),
          'slot_predictability_pair': predictability(pair_pref_BSP),
          'chance_predictability': 1.0 / P}


def check_mqar_slots(workdir: str, pairs: int | None):
  """The run's config and the number of pairs (default: the run's); one-line ValueError if
  the probe cannot read this run."""
  config = runs.workdir_config(workdir)
  m, d = config.model, config.data
  pairs = pairs or d.num_kv_pairs
  kind = registry.get(m.attention)
  if not isinstance(tasks.get(d.name), mqar.Mqar) or not (kind.causal and kind.has_latents):
    raise ValueError(f"{workdir} is a {m.attention} model on {d.name!r}; this reads the "
                     "compress step of a causal_latent model trained on mqar.")
  if 2 * pairs > m.chunk_size:
    raise ValueError(f"--pairs={pairs} needs {2 * pairs} tokens of pairs, more than chunk "
                     f"{m.chunk_size}; use --pairs <= {m.chunk_size // 2}.")
  mqar.check_params(d.vocab_size, d.seq_len, pairs)
  return config, pairs


def mqar_slots(workdir: str, config, pairs: int, num_examples: int) -> dict:
  """The slot probe of workdir's latest checkpoint on `num_examples` test examples of
  `pairs` pairs: recall, and per layer slot_statistics' figures with the recall at held
  and unheld pairs; each layer's 'preferences' ([slots, tokens 1..V-1]) is for plots."""
  m, d = config.model, config.data
  restored = runs.restore_checkpoint(workdir, config)
  model = config_lib.build_model(config)
  data = mqar.generate(num_examples, d.seq_len, pairs, d.vocab_size, d.seed, 'test')
  logits, layers = compress_attention(model, restored.state.params, data['inputs'])
  inputs, targets, weights = data['inputs'], data['targets'], data['weights']
  keys_BP = inputs[:, 0:2 * pairs:2]
  # Each query's pair index, and whether the model answered it.
  b_idx, t_idx = np.nonzero(weights)
  pair_of_query = mqar.pair_index(inputs, pairs)[b_idx, t_idx]
  correct = np.argmax(logits[b_idx, t_idx], -1) == targets[b_idx, t_idx]
  result = {'workdir': workdir, 'step': restored.step, 'pairs': pairs,
            'num_keys': d.vocab_size // 2 - 1, 'num_latents': m.num_latents,
            'num_heads': m.num_heads, 'slots_per_layer': m.num_latents * m.num_heads,
            'recall': float(correct.mean()), 'layers': []}

  def split(held):
    return {'pairs_held': float(held.mean()),
            'recall_held': float(correct[held].mean()) if held.any() else None,
            'recall_not_held': float(correct[~held].mean()) if (~held).any() else None}

  held_any = np.zeros(len(correct), bool)
  for l, attn in enumerate(layers):
    stats = slot_statistics(attn, keys_BP, inputs[:, 1:2 * pairs:2], d.vocab_size)
    held = stats.pop('held_BP')[b_idx, pair_of_query]
    held_any |= held
    preferences = stats.pop('pref_SV')[:, 1:]  # keys 1 .. V/2-1, then values
    result['layers'].append({'layer': l, **stats, **split(held), 'preferences': preferences})
  result['any_layer'] = split(held_any)
  return result
