"""Time and peak memory of one attention layer, forward + backward, against N.

    python benchmarks/attention_scaling.py [--out benchmarks/results/attention_scaling]

causal_latent (M in {16, 64, 256}) and full causal attention at D=256, H=4, C=128,
batch 1. Each point runs in its own process, so an out-of-memory is recorded as
such and peak memory is not shared between points: the process's peak RSS on CPU,
the allocator's peak on a GPU or TPU (`device_peak_mb`).
Writes <out>.json and <out>.png (time vs N and memory vs N, log-log).

With `--rounds R` every point is measured R times, N by N with the variants back to
back in alternating order, and reports the median; the JSON also holds the paired
speedups over full attention and the growth from each N to the next, round by round.
On a shared host whose speed drifts, those paired ratios are steadier than ratios of
medians taken minutes apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics


from benchmarks import common  # noqa: E402

LENGTHS = [1024, 2048, 4096, 8192, 16384, 32768, 65536]
VARIANTS = [('causal_latent', 16), ('causal_latent', 64), ('causal_latent', 256), ('full', 0)]
REFERENCE = 'full'  # the kind every speed-up is measured against


def measure_one(kind: str, num_latents: int, n: int, width: int, heads: int, chunk: int,
                dtype: str, repeats: int) -> dict:
  common.make_oom_killable()
  import jax
  fwd_bwd, params, x = common.layer_fwd_bwd(kind, n, width=width, heads=heads, chunk=chunk,
                                            num_latents=num_latents, dtype=dtype)

  base_mb = common.peak_rss_mb()
  first, median = common.time_fn(lambda: fwd_bwd(params, x), repeats)
  return {'status': 'ok', 'kind': kind, 'num_latents': num_latents, 'n': n,
          'seconds': median, 'first_call_seconds': first, 'peak_rss_mb': common.peak_rss_mb(),
          'device_peak_mb': common.device_peak_mb(), 'rss_before_mb': base_mb,
          'tokens_per_sec': n / median, 'platform': jax.devices()[0].platform}


def merge_round(prev: dict | None, rec: dict) -> dict:
  """One record per point over rounds: median seconds, highest peak, every round kept."""
  if prev is None:
    return dict(rec, seconds_rounds=[rec['seconds']])
  rounds = prev['seconds_rounds'] + [rec['seconds']]
  merged = dict(rec, seconds_rounds=rounds, seconds=statistics.median(rounds),
                peak_rss_mb=max(prev['peak_rss_mb'], rec['peak_rss_mb']))
  if rec.get('device_peak_mb') is not None:  # an accelerator: its allocator's peak too
    merged['device_peak_mb'] = max(prev['device_peak_mb'], rec['device_peak_mb'])
  merged['tokens_per_sec'] = rec['n'] / merged['seconds']
  return merged


def speedups(records: list[dict]) -> list[dict]:
  """Full over causal_latent time at each N both ran, round by round (the same round's
  two runs were back to back), and the median of those paired ratios."""
  ok = {(r['kind'], r['num_latents'], r['n']): r for r in records if r['status'] == 'ok'}
  out = []
  for (kind, m, n), rec in sorted(ok.items(), key=lambda kv: (kv[0][2], kv[0][1])):
    full = ok.get((REFERENCE, 0, n))
    if kind != REFERENCE and full:
      rounds = [f / t for f, t in zip(full['seconds_rounds'], rec['seconds_rounds'])]
      out.append({'n': n, 'num_latents': m, 'rounds': rounds,
                  'median': statistics.median(rounds)})
  return out


def growth(records: list[dict]) -> list[dict]:
  """Per variant, time at each N over time at the previous N measured, round by round
  (linear scaling gives the ratio of the lengths), and their median."""
  out = []
  for (kind, m) in {(r['kind'], r['num_latents']) for r in records}:
    pts = sorted((r for r in records if (r['kind'], r['num_latents']) == (kind, m)
                  and r['status'] == 'ok'), key=lambda r: r['n'])
    for a, b in zip(pts, pts[1:]):
      rounds = [tb / ta for ta, tb in zip(a['seconds_rounds'], b['seconds_rounds'])]
      out.append({'kind': kind, 'num_latents': m, 'n_from': a['n'], 'n_to': b['n'],
                  'rounds': rounds, 'median': statistics.median(rounds)})
  return sorted(out, key=lambda g: (g['kind'], g['num_latents'], g['n_from']))


def plot(records: list[dict], path: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  for kind, m in VARIANTS:
    label = common.variant_label(kind, m)
    pts = [r for r in records if r['kind'] == kind and r['num_latents'] == m and r['status'] == 'ok']
    if pts:
      # Bars span the rounds' fastest and slowest medians (--rounds), if there were rounds.
      spread = [[r['seconds'] - min(r.get('seconds_rounds', [r['seconds']])) for r in pts],
                [max(r.get('seconds_rounds', [r['seconds']])) - r['seconds'] for r in pts]]
      ax_t.errorbar([r['n'] for r in pts], [r['seconds'] for r in pts],
                    yerr=spread if any(map(any, spread)) else None,
                    fmt='o-', capsize=3, label=label)
      ax_m.plot([r['n'] for r in pts], [common.peak_mb(r) / 1024 for r in pts], 'o-', label=label)
    for r in records:
      # The first failure only ('oom', 'timeout'); longer N are skipped, not run.
      if (r['kind'] == kind and r['num_latents'] == m and r['status'] != 'ok'
          and 'skipped' not in r['status']):
        ax_t.annotate(f"{label}: {r['status'].split()[0].upper()}",
                      (r['n'], ax_t.get_ylim()[1] if pts else 1), fontsize=7, ha='right')
  for ax, ylabel in ((ax_t, 'forward+backward seconds'), (ax_m, common.memory_label(records))):
    common.style_log_axes(ax, 'sequence length N', ylabel)
  common.save_figure(
      fig, 'One attention layer, D=256, H=4, C=128, batch 1 (missing points: out of memory)', path)


def replot(json_path: str) -> None:
  """Redraw the PNG beside a saved run's JSON (same name, .png)."""
  with open(json_path) as f:
    plot(json.load(f)['records'], os.path.splitext(json_path)[0] + '.png')


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/attention_scaling')
  ap.add_argument('--lengths', default=','.join(map(str, LENGTHS)))
  common.add_layer_args(ap, one_point=False)
  ap.add_argument('--dtype', default='float32')
  ap.add_argument('--variants', default=','.join(f'{k}:{m}' for k, m in VARIANTS),
                  help='comma-separated kind:M, e.g. causal_latent:64,full:0')
  ap.add_argument('--repeats', type=int, default=5, help='timed runs per point (median)')
  ap.add_argument('--rounds', type=int, default=1,
                  help='sweeps over every point; a point reports the median of its rounds')
  ap.add_argument('--timeout_s', type=float, default=900)
  ap.add_argument('--replot', metavar='JSON', help='only redraw the PNG of a saved run')
  ap.add_argument('--one', nargs=3, metavar=('KIND', 'M', 'N'), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.replot:
    replot(args.replot)
    return
  if args.one:
    kind, m, n = args.one
    print(json.dumps(measure_one(kind, int(m), int(n), args.width, args.heads, args.chunk,
                                 args.dtype, args.repeats)), flush=True)
    return

  lengths = [int(n) for n in args.lengths.split(',')]
  variants = [(v.split(':')[0], int(v.split(':')[1])) for v in args.variants.split(',')]
  # N-major: at each N the variants run back to back, in alternating order from round to
  # round, so a slow spell on a shared host hits both sides of a speedup alike.
  points = {(kind, m, n): None for kind, m in variants for n in lengths}
  failed_at = {}  # variant -> shortest N that failed
  for round_ in range(args.rounds):
    for n in lengths:
      for kind, m in (variants if round_ % 2 == 0 else variants[::-1]):
        if n >= failed_at.get((kind, m), float('inf')):  # failed here or shorter: not re-run.
          points[kind, m, n] = points[kind, m, n] or {
              'status': 'oom (skipped: shorter N already failed)', 'kind': kind,
              'num_latents': m, 'n': n}
          continue
        rec = common.run_isolated([os.path.abspath(__file__), '--one', kind, str(m), str(n),
                                   '--width', str(args.width), '--heads', str(args.heads),
                                   '--chunk', str(args.chunk), '--dtype', args.dtype,
                                   '--repeats', str(args.repeats)],
                                  timeout_s=args.timeout_s)
        rec.update(kind=kind, num_latents=m, n=n)
        if rec['status'] != 'ok':
          failed_at[kind, m] = n
          points[kind, m, n] = rec
        else:
          points[kind, m, n] = merge_round(points[kind, m, n], rec)
        shown = (f"{rec['seconds']*1e3:9.1f} ms  peak {common.peak_mb(rec)/1024:6.2f} GiB"
                 if rec['status'] == 'ok' else rec['status'])
        print(f"round {round_ + 1}/{args.rounds}  {kind:14s} M={m:<4d} N={n:<6d} {shown}",
              flush=True)
        records = [r for r in points.values() if r is not None]
        common.write_records(args, records, speedups=speedups(records), growth=growth(records))
  records = [r for r in points.values() if r is not None]
  for s in speedups(records):
    print(f"N={s['n']:<6d} M={s['num_latents']:<4d} full / causal_latent = "
          f"{s['median']:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in s['rounds'])})")
  for g in growth(records):
    print(f"{g['kind']:14s} M={g['num_latents']:<4d} t({g['n_to']}) / t({g['n_from']}) = "
          f"{g['median']:.2f} (rounds: {', '.join(f'{x:.2f}' for x in g['rounds'])})")
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
