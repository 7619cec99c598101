"""What training past the window costs: the train step carrying each row's state against
the same step starting every window blank, paired, and the state's bytes per row.

    python benchmarks/carry_cost.py [--seq_len 4096] [--batch 2] [--rounds 5] [--repeats 3]
        [--kinds causal_latent full mla] [--memory 4096] [--windows 1 2 4]
        [--out benchmarks/results/carry_cost]

configs/base.py (D=128, 4 layers, 4 heads; causal_latent M=64) at --seq_len bytes and
--batch rows on one device: for each kind, the trainer's step (harness.LMStep) without and
with config.carry_state (full and mla with a Transformer-XL memory of --memory tokens), in
paired alternating rounds (harness.paired_rounds); the ratio is carry / blank within each
round. --windows K > 1 adds, per kind, the carried step over K windows with the gradient
through the state between them (config.carry_windows): its time per window over the
K = 1 carried step's, and each step's compiled working memory (XLA's temp bytes).
Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse

import jax

from benchmarks import harness
from configs import base
from latent_flax import model as model_lib
from latent_flax.attention import registry
from latent_flax.system import io_utils


def config_for(kind: str, carry: bool, args, windows: int = 1) -> object:
  config = base.get_config()
  config.model.update(attention=kind, num_latents=64)
  if carry and 'memory' in registry.get(kind).fields:  # a Transformer-XL memory
    config.model.memory = args.memory
  config.data.update(name='stdlib_long', seq_len=args.seq_len)
  config.update(per_device_batch_size=args.batch, carry_state=carry, carry_windows=windows)
  return config


def _variant(v: str) -> tuple[str, bool, int]:
  """'kind:blank' | 'kind:carry' | 'kind:carryK' -> (kind, carries, windows per step)."""
  kind, what = v.split(':')
  return kind, what != 'blank', int(what.removeprefix('carry') or 1) if what != 'blank' else 1


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
  ap.add_argument('--windows', type=int, nargs='+', default=[1],
                  help='windows per carried step (config.carry_windows) to time besides 1')
  ap.add_argument('--out', default='benchmarks/results/carry_cost')
  args = ap.parse_args()
  more = sorted(set(args.windows) - {1})
  variants = [f'{k}:{c}' for k in args.kinds
              for c in ['blank', 'carry'] + [f'carry{w}' for w in more]]
  configs = {v: config_for(*_variant(v)[:2], args, _variant(v)[2]) for v in variants}
  steps, temp_mib = {}, {}
  for v, config in configs.items():
    steps[v] = harness.LMStep(config)
    compiled, _ = steps[v].compile()
    temp_mib[v] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    steps[v].run(1)  # compile
    print(f'{v}: compiled, {temp_mib[v]:,.0f} MiB working memory', flush=True)
  # Seconds per window of seq_len bytes (a step of K windows reads K).
  rounds = harness.paired_rounds(
      variants, lambda v: {'seconds': steps[v].run(args.repeats) / _variant(v)[2]}, args.rounds,
      on_record=lambda v, r: print(f"round {r['round'] + 1} {v}: {r['seconds']:.3f} s per window",
                                   flush=True))
  rows = []
  for kind in args.kinds:
    blank, carry = (harness.merge_rounds(rounds[f'{kind}:{c}']) for c in ('blank', 'carry'))
    ratio = harness.ratio_stats(rounds[f'{kind}:carry'], rounds[f'{kind}:blank'])
    config = configs[f'{kind}:carry']
    bptt = {}
    for w in more:
      v = f'{kind}:carry{w}'
      bptt[w] = {'seconds_per_window': harness.merge_rounds(rounds[v])['seconds'],
                 'per_window_over_carry': harness.ratio_stats(rounds[v], rounds[f'{kind}:carry']),
                 'temp_mib': temp_mib[v]}
    rows.append({'kind': kind, 'memory': config.model.memory or None,
                 'seconds_blank': blank['seconds'], 'seconds_carry': carry['seconds'],
                 'carry_over_blank': ratio,
                 'state_bytes_per_row': state_bytes_per_row(config),
                 'temp_mib_blank': temp_mib[f'{kind}:blank'],
                 'temp_mib_carry': temp_mib[f'{kind}:carry'], 'windows': bptt})
    print(f"{kind}: {blank['seconds']:.3f} -> {carry['seconds']:.3f} s/step, "
          f"{harness.format_ratio(ratio)}; state {rows[-1]['state_bytes_per_row'] / 2**20:.2f} "
          "MiB per row" + ''.join(
              f"; {w} windows a step: {b['seconds_per_window']:.3f} s/window, "
              f"{harness.format_ratio(b['per_window_over_carry'])} of the carried step's, "
              f"{b['temp_mib']:,.0f} MiB working memory" for w, b in bptt.items()), flush=True)
  harness.write_results(args.out + '.json', args, records=rows)
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  x = range(len(rows))
  width = 0.8 / (2 + len(more))
  bars = [('each window blank', 'seconds_blank'), ('state carried', 'seconds_carry')]
  for j, (label, key) in enumerate(bars + [(f'{w} windows a step, gradient through the state '
                                            '(per window)', w) for w in more]):
    ax.bar([i + (j - (len(bars) + len(more) - 1) / 2) * width for i in x],
           [r[key] if isinstance(key, str) else r['windows'][key]['seconds_per_window']
            for r in rows], width, label=label)
  ax.set_xticks(list(x), [r['kind'] + (f"\nmemory {r['memory']}" if r['memory'] else '')
                          for r in rows])
  ax.set_ylabel('seconds per window')
  ax.set_ylim(top=ax.get_ylim()[1] * 1.4)  # room for the legend above the bars
  ax.legend(fontsize=7, loc='upper left')
  harness.save_figure(fig, f'Train step at {args.seq_len} bytes x {args.batch} rows, paired '
                      f'over {args.rounds} rounds', args.out + '.png')


if __name__ == '__main__':
  main()
