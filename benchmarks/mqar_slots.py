"""Which latents hold which facts: the MQAR slot probe of a trained causal_latent model.

    python benchmarks/mqar_slots.py --workdir=runs/sweep_mqar_vocab/<run> [--pairs=8]

The probe is latent_flax/evaluation/probes.py (mqar_slots): the first chunk's compression
on the run's fixed test set, with the pairs filling that chunk; which pair each slot
(latent x head) holds, whether fixed token preferences predict it, and recall at held
and unheld pairs. Writes <out>.json and <out>.png (recall of held and unheld pairs; each
slot's mean attention to each key and value token).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchmarks import harness
from latent_flax.evaluation import probes


def plot(result: dict, path: str) -> None:
  plt = harness.io_utils.pyplot()
  layers = result['layers']
  fig, axes = plt.subplots(1, 1 + len(layers), figsize=(4.2 * (1 + len(layers)), 4.2))
  ax = axes[0]
  xs = np.arange(len(layers))
  ax.bar(xs - 0.2, [l['recall_held'] or 0 for l in layers], 0.4, label='pair held by a slot')
  ax.bar(xs + 0.2, [l['recall_not_held'] or 0 for l in layers], 0.4, label='pair held by none')
  ax.set_xticks(xs, [f"layer {l['layer']}\n{l['pairs_held']:.0%} held" for l in layers])
  ax.set_ylabel('recall at those queries')
  ax.set_ylim(0, 1.05)
  ax.legend(fontsize=8)
  ax.set_title(f"M={result['num_latents']}, {result['num_keys']} keys, "
               f"{result['pairs']} pairs", fontsize=9)
  for ax, l in zip(axes[1:], layers):
    pref = l['preferences']
    im = ax.imshow(pref, aspect='auto', cmap='viridis',
                   extent=(0.5, pref.shape[1] + 0.5, pref.shape[0] - 0.5, -0.5))
    ax.axvline(result['num_keys'] + 0.5, color='white', lw=1)
    ax.set_xlabel(f"token: keys 1-{result['num_keys']} | values")
    ax.set_ylabel('slot (head x latent)')
    ax.set_title(f"layer {l['layer']}: mean attention to each token\n"
                 f"preferences predict the held pair {l['slot_predictability_pair']:.0%} "
                 f"(chance {l['chance_predictability']:.0%})", fontsize=8)
    fig.colorbar(im, ax=ax)
  harness.save_figure(fig, f"MQAR slots of step {result['step']}", path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--pairs', type=int, default=None, help='pairs per test example')
  ap.add_argument('--examples', type=int, default=1000)
  ap.add_argument('--out', default=None, help='default: <workdir>/slots')
  args = ap.parse_args()
  try:
    config, pairs = probes.check_mqar_slots(args.workdir, args.pairs)
  except ValueError as e:
    raise SystemExit(f"mqar_slots.py: {e}")
  result = probes.mqar_slots(args.workdir, config, pairs, args.examples)
  out = args.out or os.path.join(args.workdir, 'slots')
  plot(result, out + '.png')
  for l in result['layers']:
    l.pop('preferences')
  harness.write_results(out + '.json', args, result=result)
  print(json.dumps(result, indent=2))
  print(f"wrote {out}.json, {out}.png")


if __name__ == '__main__':
  main()
