"""Train-step throughput of the ListOps classifier at length 2,000: latent vs full.

    python benchmarks/listops_throughput.py [--out benchmarks/results/listops_throughput]

One optimizer step (forward, backward, AdamW) of the model in configs/listops_m64.py
(bidirectional LatentAttention, M=64) and configs/listops_full.py (full
bidirectional attention), same width, depth and batch, on random token batches
padded to seq_len with a random real length per row (as the data set is). Each
kind runs in its own process, so out-of-memory is recorded as such and peak
memory is that process's peak RSS. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import json
import os


from benchmarks import common  # noqa: E402

KINDS = {'latent': 'configs/listops_m64.py', 'full': 'configs/listops_full.py'}


def measure_one(kind: str, args) -> dict:
  common.make_oom_killable()
  import jax
  import numpy as np
  from configs import listops_m64
  from latent_flax import config_lib
  from latent_flax.training import optim, steps
  from latent_flax.attention import registry

  config = listops_m64.get_config()
  config.model.attention = kind
  config.data.seq_len = args.seq_len
  config.model.num_latents = args.num_latents
  batch_size = args.batch or config.per_device_batch_size
  model = config_lib.build_model(config)
  schedule = optim.learning_rate_schedule(config)
  state = jax.jit(steps.make_init_fn(model, config))(jax.random.key(0))
  step = jax.jit(lambda s, b, r: steps.train_step(s, b, r, axis_name=None, schedule=schedule),
                 donate_argnums=(0,))
  rng = np.random.default_rng(0)
  lengths = rng.integers(args.seq_len // 4, args.seq_len + 1, batch_size)
  mask = np.arange(args.seq_len)[None, :] < lengths[:, None]
  batch = {'inputs': np.where(mask, rng.integers(1, 16, mask.shape), 0).astype(np.int32),
           'mask': mask, 'targets': rng.integers(0, 10, batch_size).astype(np.int32),
           'weights': np.ones(batch_size, np.float32)}
  holder = {'state': state}

  def run():
    holder['state'], metrics = step(holder['state'], batch, jax.random.key(1))
    return metrics['loss']

  first, seconds = common.time_fn(run, repeats=args.repeats)
  return {'status': 'ok', 'kind': kind, 'seq_len': args.seq_len, 'batch': int(batch_size),
          'num_latents': args.num_latents if registry.get(kind).has_latents else None,
          'seconds_per_step': seconds, 'first_call_seconds': first,
          'examples_per_sec': batch_size / seconds,
          'tokens_per_sec': batch_size * args.seq_len / seconds,
          'peak_rss_mb': common.peak_rss_mb()}


def plot(records: list[dict], path: str, title: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  ok = [r for r in records if r['status'] == 'ok']
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
  names = [r['kind'] for r in ok]
  axes[0].bar(names, [r['tokens_per_sec'] for r in ok], color=['C0', 'C1'][:len(ok)])
  axes[0].set_ylabel('training tokens / s (padded)')
  axes[1].bar(names, [r['peak_rss_mb'] / 1024 for r in ok], color=['C0', 'C1'][:len(ok)])
  axes[1].set_ylabel('peak process memory (GiB)')
  for ax in axes:
    ax.grid(True, axis='y', alpha=0.3)
  for r, x in zip(ok, range(len(ok))):
    axes[0].annotate(f"{r['tokens_per_sec']:,.0f}", (x, r['tokens_per_sec']), ha='center',
                     va='bottom', fontsize=8)
  common.save_figure(fig, title, path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/listops_throughput')
  ap.add_argument('--seq_len', type=int, default=2000)
  ap.add_argument('--num_latents', type=int, default=64)
  ap.add_argument('--batch', type=int, default=0, help='0: the config\'s per-device batch')
  ap.add_argument('--repeats', type=int, default=5)
  ap.add_argument('--timeout_s', type=float, default=1200)
  ap.add_argument('--one', metavar='KIND', help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    print(json.dumps(measure_one(args.one, args)), flush=True)
    return
  passthrough = ['--seq_len', str(args.seq_len), '--num_latents', str(args.num_latents),
                 '--batch', str(args.batch), '--repeats', str(args.repeats)]
  records = []
  for kind in KINDS:
    rec = common.run_isolated([os.path.abspath(__file__), '--one', kind] + passthrough,
                              timeout_s=args.timeout_s)
    rec.setdefault('kind', kind)
    records.append(rec)
    print(json.dumps(rec), flush=True)
  speed = {r['kind']: r.get('tokens_per_sec') for r in records if r['status'] == 'ok'}
  ratio = speed['latent'] / speed['full'] if len(speed) == 2 else None
  common.write_json(args.out + '.json', {'records': records, 'latent_over_full': ratio})
  plot(records, args.out + '.png',
       f"ListOps classifier train step, N={args.seq_len}"
       + (f": latent {ratio:.1f}x full" if ratio else ''))
  print(f"latent / full tokens/s at N={args.seq_len}: {ratio}")


if __name__ == '__main__':
  main()
