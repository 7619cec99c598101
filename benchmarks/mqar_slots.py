"""Which latents hold which facts: the compress step of a trained MQAR causal_latent model.

    python benchmarks/mqar_slots.py --workdir=runs/sweep_mqar_vocab/<run> [--pairs=8]

The latent queries are fixed parameters, so in step 1 each latent and head (a "slot",
M x H per layer) scores a token by its content alone. This reads the first chunk's
compression S_0 on the run's fixed test set, with the pairs filling that chunk
(2 * pairs <= chunk_size), and asks:
- which pair each slot holds: the pair (key and value token) that gets at least half
  of the slot's attention, if any;
- whether that choice is a fixed preference over token identities: the slot is
  predicted to hold the present pair it prefers most (by its key, or by key and
  value), the preferences fitted on the first half of the examples and scored on the
  second half (`slot_predictability_key`, `slot_predictability_pair`);
- whether recall follows: accuracy at the queries whose pair is held by some slot
  against those whose pair no slot holds.
Writes <out>.json and <out>.png (recall of held and unheld pairs; each slot's mean
attention to each key and value token).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from latent_flax import config_lib, tasks
from latent_flax.evaluation import runs  # noqa: E402
from latent_flax.attention import registry  # noqa: E402
from latent_flax.tasks import mqar  # noqa: E402

HOLD = 0.5  # a slot holds a pair when the pair gets at least this share of its attention


def compress_attention(model, params, inputs_BN: np.ndarray, batch: int = 100):
  """Per layer, the step-1 attention of every slot over chunk 0 ([B, H, M, C]), and logits."""
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
  layers = [np.concatenate([np.asarray(p[1][l]) for p in parts]) for l in range(len(parts[0][1]))]
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


def check(workdir: str, pairs: int | None):
  """The run's config and the number of pairs; ValueError with one line if unusable."""
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


def analyse(workdir: str, config, pairs: int, num_examples: int) -> dict:
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
    pref = stats.pop('pref_SV')[:, 1:]  # keys 1 .. V/2-1, then values
    result['layers'].append({'layer': l, **stats, **split(held), '_pref': pref})
  result['any_layer'] = split(held_any)
  return result


def plot(result: dict, path: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  layers = result['layers']
  fig, axes = plt.subplots(1, 1 + len(layers), figsize=(4.2 * (1 + len(layers)), 3.8))
  ax = axes[0]
  xs = np.arange(len(layers))
  held = [l['recall_held'] or 0 for l in layers]
  not_held = [l['recall_not_held'] or 0 for l in layers]
  ax.bar(xs - 0.2, held, 0.4, label='pair held by a slot')
  ax.bar(xs + 0.2, not_held, 0.4, label='pair held by none')
  ax.set_xticks(xs, [f"layer {l['layer']}\n{l['pairs_held']:.0%} held" for l in layers])
  ax.set_ylabel('recall at those queries')
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=8)
  ax.set_title(f"M={result['num_latents']}, {result['num_keys']} keys, "
               f"{result['pairs']} pairs", fontsize=9)
  for ax, l in zip(axes[1:], layers):
    im = ax.imshow(l['_pref'], aspect='auto', cmap='viridis', extent=(
        0.5, l['_pref'].shape[1] + 0.5, l['_pref'].shape[0] - 0.5, -0.5))
    ax.axvline(result['num_keys'] + 0.5, color='white', lw=1)
    ax.set_xlabel(f"token: keys 1-{result['num_keys']} | values")
    ax.set_ylabel('slot (head x latent)')
    ax.set_title(f"layer {l['layer']}: mean attention to each token\n"
                 f"preferences predict the held pair {l['slot_predictability_pair']:.0%} "
                 f"(chance {l['chance_predictability']:.0%})", fontsize=8)
    fig.colorbar(im, ax=ax)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--pairs', type=int, default=None, help='pairs per test example')
  parser.add_argument('--examples', type=int, default=1000)
  parser.add_argument('--out', default=None, help='default: <workdir>/slots')
  args = parser.parse_args()
  try:
    config, pairs = check(args.workdir, args.pairs)
  except ValueError as e:
    sys.exit(f"mqar_slots.py: {e}")
  result = analyse(args.workdir, config, pairs, args.examples)
  out = args.out or os.path.join(args.workdir, 'slots')
  plot(result, out + '.png')
  for l in result['layers']:
    l.pop('_pref')
  with open(out + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result, indent=2))
  print(f"wrote {out}.json, {out}.png")


if __name__ == '__main__':
  main()
