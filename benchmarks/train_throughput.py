"""Whole-train-step throughput of the LM against sequence length: tokens/s, memory, MFU.

    python benchmarks/train_throughput.py [--out benchmarks/results/train_throughput]

One optimizer step (forward, backward, AdamW) of the language model, batch 1, for
causal_latent (M=64, C=128) and full attention at the same width and depth
(default D=256, H=4, MLP 1024, 4 layers, float32), at N = 1,024 ... 65,536. Each
point runs in its own process, so out-of-memory is recorded as such and peak
memory is that process's peak RSS.

Model FLOPs utilisation = model FLOPs per step / step time / matmul peak, where the
matmul peak is measured in the same process (a large float32 jnp.dot) and model
FLOPs are counted analytically: 3x the forward matmul FLOPs (forward + backward),
causal masks counted at half, no recomputation. XLA's own count of the compiled
step (which includes masked work) is recorded beside it. Writes <out>.json, .png.
"""

from __future__ import annotations

import argparse
import json
import os


from benchmarks import common  # noqa: E402

LENGTHS = [1024, 4096, 16384, 65536]
KINDS = ['causal_latent', 'full']


def forward_flops(cfg, n: int, vocab: int = 256) -> float:
  """Matmul FLOPs of one forward pass over n tokens (2 per multiply-add) of a
  model.ModelConfig: its attention kind's registry estimate, the MLP and the head."""
  from latent_flax.attention import registry
  per_layer = 2 * n * 2 * cfg.emb_dim * cfg.mlp_dim + registry.get(cfg.attention).flops(cfg, n)
  return cfg.num_layers * per_layer + 2 * n * cfg.emb_dim * vocab


def matmul_peak_flops(size: int = 2048, repeats: int = 5, dtype: str = 'float32') -> float:
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
  dot = jax.jit(lambda a, b: a @ b)
  _, seconds = common.time_fn(lambda: dot(a, a), repeats)
  return 2 * size ** 3 / seconds


def measure_one(kind: str, n: int, args) -> dict:
  common.make_oom_killable()
  import jax
  from configs import base
  from latent_flax import model as model_lib

  peak = matmul_peak_flops(2048 if jax.devices()[0].platform == 'cpu' else 8192, dtype=args.dtype)
  config = base.get_config()
  config.model.update(dtype=args.dtype, attention=kind, num_latents=args.num_latents, chunk_size=args.chunk,
                      emb_dim=args.width, num_heads=args.heads, mlp_dim=args.mlp,
                      num_layers=args.layers, remat=args.remat)
  step, state, batch = common.lm_train_step(config, n)
  rng = jax.random.key(1)
  compiled = step.lower(state, batch, rng).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {'state': state}

  def run():
    holder['state'], metrics = step(holder['state'], batch, rng)
    return metrics['loss']

  first, seconds = common.time_fn(run, repeats=3)
  model_flops = 3 * forward_flops(model_lib.validate_model_config(config.model), n)
  return {'status': 'ok', 'kind': kind, 'n': n, 'seconds_per_step': seconds,
          'first_call_seconds': first, 'tokens_per_sec': n / seconds,
          'peak_rss_mb': common.peak_rss_mb(), 'device_peak_mb': common.device_peak_mb(),
          'platform': jax.devices()[0].platform, 'model_flops_per_step': model_flops,
          'xla_flops_per_step': float(cost.get('flops', float('nan'))),
          'matmul_peak_flops': peak, 'mfu': model_flops / seconds / peak}


def plot(records: list[dict], path: str, title: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
  for kind in KINDS:
    pts = [r for r in records if r['kind'] == kind and r['status'] == 'ok']
    for ax, value in zip(axes, (lambda r: r['tokens_per_sec'], lambda r: common.peak_mb(r) / 1024,
                                lambda r: 100 * r['mfu'])):
      if pts:
        ax.plot([r['n'] for r in pts], [value(r) for r in pts], 'o-', label=kind)
  for ax, ylabel in zip(axes, ('training tokens / s', common.memory_label(records),
                               'model FLOPs utilisation (%)')):
    common.style_log_axes(ax, 'sequence length N (batch 1)', ylabel,
                          log_y=ylabel != 'model FLOPs utilisation (%)')
  common.save_figure(fig, title + ' (missing points: out of memory)', path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/train_throughput')
  ap.add_argument('--lengths', default=','.join(map(str, LENGTHS)))
  ap.add_argument('--kinds', default=','.join(KINDS))
  common.add_model_args(ap, width=256, mlp=1024)
  ap.add_argument('--num_latents', type=int, default=64)
  ap.add_argument('--dtype', default='float32', help="compute dtype: 'float32' or 'bfloat16'")
  ap.add_argument('--remat', action='store_true', help='recompute blocks in the backward pass')
  ap.add_argument('--timeout_s', type=float, default=1200)
  ap.add_argument('--one', nargs=2, metavar=('KIND', 'N'), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    print(json.dumps(measure_one(args.one[0], int(args.one[1]), args)), flush=True)
    return
  passthrough = ['--width', str(args.width), '--heads', str(args.heads), '--mlp', str(args.mlp),
                 '--layers', str(args.layers), '--num_latents', str(args.num_latents),
                 '--chunk', str(args.chunk), '--dtype', args.dtype] + (['--remat'] if args.remat else [])
  records = []
  for kind in args.kinds.split(','):
    failed = False
    for n in map(int, args.lengths.split(',')):
      if failed:
        records.append({'status': 'oom (skipped: shorter N already failed)', 'kind': kind, 'n': n})
        continue
      rec = common.run_isolated([os.path.abspath(__file__), '--one', kind, str(n)] + passthrough,
                                timeout_s=args.timeout_s)
      rec.update(kind=kind, n=n)
      failed = rec['status'] != 'ok'
      records.append(rec)
      shown = (f"{rec['tokens_per_sec']:9,.0f} tokens/s  {rec['seconds_per_step']:7.2f} s/step  "
               f"peak {common.peak_mb(rec) / 1024:5.2f} GiB  MFU {100 * rec['mfu']:4.1f}% "
               f"(matmul peak {rec['matmul_peak_flops'] / 1e9:.0f} GFLOP/s)"
               if rec['status'] == 'ok' else rec['status'])
      print(f"{kind:14s} N={n:<6d} {shown}", flush=True)
      common.write_records(args, records)
  title = (f"LM train step, D={args.width}, H={args.heads}, {args.layers} layers, "
           f"M={args.num_latents}, C={args.chunk}, batch 1, {args.dtype}, "
           f"{common.jax.devices()[0].device_kind}")
  plot(records, args.out + '.png', title)
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
