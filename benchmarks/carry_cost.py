"""What training past the window costs: the train step carrying each row's state against
the same step starting every window blank, paired, and the state's bytes per row.

    python benchmarks/carry_cost.py [--seq_len 4096] [--batch 2] [--rounds 5] [--repeats 3]
        [--kinds causal_latent full mla] [--memory 4096] [--out benchmarks/results/carry_cost]

configs/base.py (D=128, 4 layers, 4 heads; causal_latent M=64) at --seq_len bytes and
--batch rows on one device: for each kind, the trainer's step (harness.LMStep) without and
with config.carry_state (full and mla with a Transformer-XL memory of --memory tokens), in
paired alternating rounds (harness.paired_rounds); the ratio is carry / blank within each
round. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse

import jax

from benchmarks import harness
from configs import base
from latent_flax import model as model_lib
from latent_flax.attention import registry
from latent_flax.system import io_utils


def config_for(kind: str, carry: bool, args) -> object:
  config = base.get_config()
  config.model.update(attention=kind, num_latents=64)
  if carry and 'memory' in registry.get(kind).fields:  # a Transformer-XL memory
    config.model.memory = args.memory
  config.data.update(name='stdlib_long', seq_len=args.seq_len)
  config.update(per_device_batch_size=args.batch, carry_state=carry)
  return config


def state_bytes_per_row(config) -> int:
  fresh = model_lib.fresh_carry(model_lib.validate_model_config(config.model), 1)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(fresh))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--seq_len', type=int, default=4096)
  ap.add_argument('--batch', type=int, default=2)
  ap.add_argument('--kinds', nargs='+', default=['causal_latent', 'full', 'mla'])
  ap.add_argument('--memory', type=int, default=4096, help='full/mla memory tokens')
  ap.add_argument('--rounds', type=int, default=5)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--out', default='benchmarks/results/carry_cost')
  args = ap.parse_args()
  variants = [f'{k}:{c}' for k in args.kinds for c in ('blank', 'carry')]
  configs = {v: config_for(v.split(':')[0], v.endswith('carry'), args) for v in variants}
  steps = {}
  for v, config in configs.items():
    steps[v] = harness.LMStep(config)
    steps[v].run(1)  # compile
    print(f'{v}: compiled', flush=True)
  rounds = harness.paired_rounds(
      variants, lambda v: {'seconds': steps[v].run(args.repeats)}, args.rounds,
      on_record=lambda v, r: print(f"round {r['round'] + 1} {v}: {r['seconds']:.3f} s/step",
                                   flush=True))
  rows = []
  for kind in args.kinds:
    blank, carry = (harness.merge_rounds(rounds[f'{kind}:{c}']) for c in ('blank', 'carry'))
    ratio = harness.ratio_stats(rounds[f'{kind}:carry'], rounds[f'{kind}:blank'])
    config = configs[f'{kind}:carry']
    rows.append({'kind': kind, 'memory': config.model.memory or None,
                 'seconds_blank': blank['seconds'], 'seconds_carry': carry['seconds'],
                 'carry_over_blank': ratio,
                 'state_bytes_per_row': state_bytes_per_row(config)})
    print(f"{kind}: {blank['seconds']:.3f} -> {carry['seconds']:.3f} s/step, "
          f"{harness.format_ratio(ratio)}; state {rows[-1]['state_bytes_per_row'] / 2**20:.2f} "
          "MiB per row", flush=True)
  harness.write_results(args.out + '.json', args, records=rows)
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  x = range(len(rows))
  ax.bar([i - 0.2 for i in x], [r['seconds_blank'] for r in rows], 0.4, label='each window blank')
  ax.bar([i + 0.2 for i in x], [r['seconds_carry'] for r in rows], 0.4, label='state carried')
  ax.set_xticks(list(x), [r['kind'] + (f"\nmemory {r['memory']}" if r['memory'] else '')
                          for r in rows])
  ax.set_ylabel('seconds per train step')
  ax.legend()
  harness.save_figure(fig, f'Train step at {args.seq_len} bytes x {args.batch} rows, paired '
                      f'over {args.rounds} rounds', args.out + '.png')


if __name__ == '__main__':
  main()
