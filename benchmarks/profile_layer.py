"""Where one attention layer's forward + backward time goes on this machine, by XLA op kind.

    python benchmarks/profile_layer.py [--n 4096] [--out benchmarks/results/profile_layer]

Traces three jitted steps of causal_latent (M=64) and full attention with
jax.profiler, reads the trace's XLA op events and sums their time by kind:
matrix multiplies (XLA:CPU's YNNPACK fusions and plain dots), layout copies and
transposes, concatenates and pads, and the remaining elementwise fusions. Times
are summed over XLA's worker threads, so they add up to more than the wall time
when ops overlap. Writes <out>.json and <out>.png (stacked bars per kind).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile
import time


from benchmarks import common  # noqa: E402

CATEGORIES = ('matmul', 'layout copy / transpose', 'concatenate / pad / slice',
              'other elementwise / reductions')


def category(op: str) -> str:
  """Kind of an XLA:CPU op from its name ('copy_bitcast_fusion.16' -> layout copy)."""
  base = re.sub(r'\.\d+$', '', op)
  words = set(base.split('_')) - {'fusion', 'wrapped', 'bitcast'}
  if base.startswith('ynn') or words == {'dot'}:  # YNNPACK matmuls and what XLA fused in
    return CATEGORIES[0]
  if words and words <= {'copy', 'transpose'}:
    return CATEGORIES[1]
  if words & {'concatenate', 'pad', 'slice'}:
    return CATEGORIES[2]
  return CATEGORIES[3]


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """Milliseconds per step of every XLA op in a trace, summed over threads."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  path = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)[0]
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  times = collections.Counter()
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not line.name.startswith('tf_XLAEigen'):  # XLA's worker threads run the ops
        continue
      for event in line.events:
        name = names.get(event.metadata_id, '?')
        if 'ThunkExecutor' not in name and 'ThreadPool' not in name:
          times[name] += event.duration_ps / 1e9 / steps
  return dict(times)


def profile(kind: str, num_latents: int, n: int, width: int, heads: int, chunk: int,
            steps: int = 3) -> dict:
  import jax
  fwd_bwd, params, x = common.layer_fwd_bwd(kind, n, width=width, heads=heads, chunk=chunk,
                                            num_latents=num_latents)

  for _ in range(2):
    jax.block_until_ready(fwd_bwd(params, x))
  walls = []
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(fwd_bwd(params, x))
        walls.append(time.perf_counter() - t0)
    ops = op_times(trace_dir, steps)
  by_category = collections.Counter()
  for op, ms in ops.items():
    by_category[category(op)] += ms
  flops = fwd_bwd.lower(params, x).compile().cost_analysis().get('flops', float('nan'))
  top = sorted(ops.items(), key=lambda kv: -kv[1])[:15]
  return {'kind': kind, 'num_latents': num_latents, 'n': n, 'wall_ms': 1e3 * min(walls),
          'op_ms_total': sum(ops.values()), 'gflop': flops / 1e9,
          'by_category_ms': dict(by_category.most_common()),
          'top_ops_ms': [{'op': op, 'ms': ms} for op, ms in top]}


def plot(records: list[dict], path: str) -> None:
  """Per op kind, one bar per attention kind (log y: the two differ by ~10x)."""
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(7.4, 4.2))
  width = 0.8 / len(records)
  for i, r in enumerate(records):
    label = common.variant_label(r['kind'], r['num_latents']) + (
        f" (wall {r['wall_ms']:.0f} ms, {r['gflop']:.1f} GFLOP)")
    xs = [j + (i - (len(records) - 1) / 2) * width for j in range(len(CATEGORIES))]
    ax.bar(xs, [r['by_category_ms'].get(c, 0.0) for c in CATEGORIES], width, label=label)
  ax.set_xticks(range(len(CATEGORIES)), [c.replace(' / ', ' /\n') for c in CATEGORIES],
                fontsize=8)
  ax.set_yscale('log')
  ax.set_ylabel('ms per step (summed over threads)')
  ax.legend(fontsize=7)
  ax.grid(True, axis='y', which='both', alpha=0.3)
  common.save_figure(fig, f"One layer fwd+bwd at N={records[0]['n']}: time by XLA op kind", path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/profile_layer')
  common.add_layer_args(ap, one_point=True)
  args = ap.parse_args()
  records = []
  for kind in ('causal_latent', 'full'):
    r = profile(kind, args.num_latents, args.n, args.width, args.heads, args.chunk)
    records.append(r)
    shares = ', '.join(f"{name} {100 * ms / r['op_ms_total']:.0f}%"
                       for name, ms in r['by_category_ms'].items())
    print(f"{kind:14s} wall {r['wall_ms']:7.1f} ms  {r['gflop']:.1f} GFLOP  ({shares})",
          flush=True)
  common.write_records(args, records)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
