"""Train-step time of every point of a sweep, paired, and the steps that give each point
the wall-clock of a reference point (equal-time budgets for a sweep).

    python benchmarks/step_time.py --sweep=configs/sweeps/context_gain.py:stdlib_long \
        [--reference 0] [--steps 150] [--out docs/results/context_gain/step_time]

Every point's full train step (forward, backward, AdamW) at its config's seq_len and
per-device batch, on one device, all in this process: compiled first, then --rounds
rounds, each timing --repeats steps of every point back to back, the order reversed
every other round. Per point: the median seconds per step, its ratio to the reference
point's within each round (the median of the paired ratios), and
`equal_time_steps` = round(steps x reference time / point time). Writes <out>.json and
<out>.png (seconds per step by point); a sweep preset can read the JSON for its budgets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


from benchmarks import common  # noqa: E402
from latent_flax.system import io_utils
from latent_flax.experiments import sweep as sweep_lib  # noqa: E402
from latent_flax.attention import registry  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--sweep', required=True, help='a sweep module (FILE or FILE:PRESET)')
  ap.add_argument('--reference', type=int, default=0, help='index of the reference point')
  ap.add_argument('--steps', type=int, default=None,
                  help="the reference's steps (default: its num_train_steps)")
  ap.add_argument('--rounds', type=int, default=4)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--out', default='benchmarks/results/step_time')
  args = ap.parse_args()
  import jax
  sweep = sweep_lib.load_sweep(args.sweep)
  configs = [sweep_lib.point_config(sweep, p) for p in sweep.points]
  names = [sweep_lib.point_name(p) for p in sweep.points]
  steps = args.steps or configs[args.reference].num_train_steps
  runners = []
  for name, config in zip(names, configs):
    step, state, batch = common.lm_train_step(config, config.data.seq_len,
                                              config.per_device_batch_size)
    rng = jax.random.key(0)
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch, rng))
    print(f'{name}: compiled and ran one step in {time.perf_counter() - t0:.1f} s', flush=True)
    runners.append([step, state, batch, rng])
  times = [[] for _ in names]
  for r in range(args.rounds):
    order = range(len(names)) if r % 2 == 0 else reversed(range(len(names)))
    for i in order:
      step, state, batch, rng = runners[i]
      t0 = time.perf_counter()
      for _ in range(args.repeats):
        state, _ = step(state, batch, rng)
      jax.block_until_ready(state)
      runners[i][1] = state
      times[i].append((time.perf_counter() - t0) / args.repeats)
    print(f'round {r + 1}/{args.rounds}: ' + ', '.join(f'{t[-1]:.3f}' for t in times), flush=True)
  records = []
  for name, config, t in zip(names, configs, times):
    ratio = statistics.median(a / b for a, b in zip(t, times[args.reference]))
    records.append({
        'point': name, 'label': registry.get(config.model.attention).label(config.model),
        'seq_len': config.data.seq_len, 'batch': config.per_device_batch_size,
        'seconds_per_step': statistics.median(t), 'rounds': t, 'time_vs_reference': ratio,
        'equal_time_steps': round(steps / ratio), 'peak_rss_mb': io_utils.peak_rss_mb()})
    print(f"{name:48s} {statistics.median(t):.3f} s/step  x{ratio:.3f} of the reference  "
          f"-> {round(steps / ratio)} steps in the reference's {steps}")
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  common.write_records(args, records, reference=names[args.reference], reference_steps=steps)
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(7, 0.5 * len(records) + 1.5))
  ax.barh([r['label'] for r in records][::-1], [r['seconds_per_step'] for r in records][::-1])
  for y, r in enumerate(records[::-1]):
    ax.text(r['seconds_per_step'], y, f" x{r['time_vs_reference']:.2f}", va='center', fontsize=8)
  ax.set_xlabel(f"seconds per train step ({records[0]['batch']} x {records[0]['seq_len']:,} "
                "tokens)")
  common.save_figure(fig, f'Train-step time, paired ({args.rounds} rounds)', args.out + '.png')
  print(f'wrote {args.out}.json and .png')


if __name__ == '__main__':
  main()
