"""The causal latent block's expand step with its scores kept for the backward pass, or
recomputed there (jax.checkpoint, the default): temp memory and time of an LM train step.

    python benchmarks/expand_recompute.py [--lengths 16384,65536] [--rounds 4]

One LM train step (forward, backward, AdamW) on one row of N bytes, D=128, 4 heads,
2 layers, M=64, C=128 (benchmarks/seq_parallel.py's model) on one CPU device. Both
variants are compiled in one process and timed alternately (ABBA order), so the ratio
is paired. Temp memory is XLA's memory analysis of the compiled step. Writes <out>.json
and <out>.png.
"""

from __future__ import annotations



import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.seq_parallel import LMStep  # noqa: E402
from latent_flax.system import io_utils  # noqa: E402
from latent_flax.attention import causal_latent  # noqa: E402

VARIANTS = {'kept': causal_latent._expand, 'recomputed': causal_latent._expand_recomputed}


def build(variant: str, n: int) -> dict:
  """A compiled train step of `variant` after its warm-up step, and its temp memory."""
  causal_latent._expand_recomputed = VARIANTS[variant]  # read when the step is traced
  try:
    step = LMStep('causal_latent', n, 1)
    state, batch, key = step.start()
    state, metrics = step.parallel.train_step(state, batch, key)  # compiles; the warm-up
    return {'parallel': step.parallel, 'state': state, 'batch': batch, 'key': key,
            'times': [], 'loss': float(metrics['loss']),
            'temp_mb': step.compiled.memory_analysis().temp_size_in_bytes / 2**20}
  finally:
    causal_latent._expand_recomputed = VARIANTS['recomputed']


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--lengths', default='16384,65536')
  ap.add_argument('--rounds', type=int, default=4)
  ap.add_argument('--out', default='benchmarks/results/expand_recompute')
  args = ap.parse_args()
  records = []
  for n in map(int, args.lengths.split(',')):
    runs = {v: build(v, n) for v in VARIANTS}
    for r in range(args.rounds):
      for v in (list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]):
        run = runs[v]
        t0 = time.perf_counter()
        run['state'], metrics = run['parallel'].train_step(run['state'], run['batch'], run['key'])
        jax.block_until_ready(metrics)
        run['times'].append(time.perf_counter() - t0)
    for v, run in runs.items():
      records.append({'variant': v, 'n': n, 'temp_mb': run['temp_mb'],
                      'step_s': float(np.median(run['times'])), 'times': run['times'],
                      'first_loss': run['loss']})
    kept, recomputed = records[-2], records[-1]
    print(f"N={n:,}: temp {kept['temp_mb']:,.0f} -> {recomputed['temp_mb']:,.0f} MiB, step "
          f"{kept['step_s']:.3f} -> {recomputed['step_s']:.3f} s (recomputed / kept "
          f"{recomputed['step_s'] / kept['step_s']:.2f}); first loss {kept['first_loss']:.6f} "
          f"/ {recomputed['first_loss']:.6f}", flush=True)
    common.write_records(args, records)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and .png")


def plot(records: list[dict], path: str) -> None:
  plt = io_utils.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for v in VARIANTS:
    rows = [r for r in records if r['variant'] == v]
    axes[0].plot([r['n'] for r in rows], [r['temp_mb'] for r in rows], marker='o', label=v)
    axes[1].plot([r['n'] for r in rows], [r['step_s'] for r in rows], marker='o', label=v)
  common.style_log_axes(axes[0], 'sequence length N (one row)', 'temp memory (MiB)')
  common.style_log_axes(axes[1], 'sequence length N (one row)', 'train step (s, median)')
  common.save_figure(fig, 'causal_latent expand scores: kept for the backward or recomputed',
                     path)


if __name__ == '__main__':
  main()
