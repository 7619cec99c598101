"""Train-step time of every point of a sweep, paired, and the steps that give each point
the wall-clock of a reference point (equal-time budgets for a sweep).

    python benchmarks/step_time.py --sweep=configs/sweeps/context_gain.py:stdlib_long \
        [--reference 0] [--steps 150] [--out docs/results/context_gain/step_time]

Every point's train step as the trainer runs it (harness.LMStep: forward, backward, AdamW)
at its config's seq_len and per-device batch, on one device, all in this process:
compiled first, then --rounds paired alternating rounds (harness.paired_rounds), each
timing --repeats steps of every point back to back. Per point: the median seconds per
step, the median and range of its ratio to the reference point's within each round, and
`equal_time_steps` = round(steps x reference time / point time) from the median ratio.
Writes <out>.json and <out>.png (seconds per step by point); a sweep preset can read the
JSON for its budgets.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks import harness
from latent_flax.attention import registry
from latent_flax.experiments import sweep as sweep_lib


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
  sweep = sweep_lib.load_sweep(args.sweep)
  if not 0 <= args.reference < len(sweep.points):
    raise SystemExit(f"step_time.py: --reference={args.reference} is not a point index of "
                     f"{args.sweep}; use 0 to {len(sweep.points) - 1}.")
  configs = {sweep_lib.point_name(p): sweep_lib.point_config(sweep, p) for p in sweep.points}
  names = list(configs)
  reference = names[args.reference]
  steps = args.steps or configs[reference].num_train_steps
  runners = {}
  for name, config in configs.items():
    runners[name] = harness.LMStep(config)
    t0 = time.perf_counter()
    runners[name].run(1)
    print(f'{name}: compiled and ran one step in {time.perf_counter() - t0:.1f} s', flush=True)

  def shown(name, rec):
    print(f"round {rec['round'] + 1}/{args.rounds} {name}: {rec['seconds']:.3f} s/step",
          flush=True)

  rounds = harness.paired_rounds(names, lambda name: {'seconds': runners[name].run(args.repeats)},
                                 args.rounds, on_record=shown)
  records = []
  for name, config in configs.items():
    ratio = harness.ratio_stats(rounds[name], rounds[reference])
    seconds = [r['seconds'] for r in rounds[name]]
    records.append({
        'point': name, 'label': registry.get(config.model.attention).label(config.model),
        'seq_len': config.data.seq_len, 'batch': runners[name].rows,
        'seconds_per_step': statistics.median(seconds), 'rounds': seconds,
        'time_vs_reference': ratio, 'equal_time_steps': round(steps / ratio['median']),
        'peak_rss_mb': harness.peak_rss_mb()})
    print(f"{name:48s} {statistics.median(seconds):.3f} s/step  x {harness.format_ratio(ratio)} "
          f"of the reference -> {round(steps / ratio['median'])} steps in the reference's {steps}")
  harness.write_results(args.out + '.json', args, records=records, reference=reference,
                        reference_steps=steps)
  plt = harness.io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(7, 0.5 * len(records) + 1.5))
  ax.barh([r['label'] for r in records][::-1], [r['seconds_per_step'] for r in records][::-1])
  for y, r in enumerate(records[::-1]):
    ax.text(r['seconds_per_step'], y, f" x{r['time_vs_reference']['median']:.2f}", va='center',
            fontsize=8)
  ax.set_xlabel(f"seconds per train step ({records[0]['batch']} x {records[0]['seq_len']:,} "
                "tokens)")
  harness.save_figure(fig, f'Train-step time, paired ({args.rounds} rounds)', args.out + '.png')
  print(f'wrote {args.out}.json and .png')


if __name__ == '__main__':
  main()
