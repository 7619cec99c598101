"""Ours against what a researcher would otherwise run: a plain PyTorch GPT with SDPA.

    make peers-venv    # once: torch==2.13.0 (CPU build) into .venv-torch, never a dependency
    python benchmarks/peers.py --modes train,layer --lengths 1024,4096,16384 --rounds 2

Variants (`--variants`): `torch` (benchmarks/torch_gpt.py: pre-LN GPT, SDPA, AdamW),
`full:blockwise` (our flash-style full attention), `full:naive` (XLA's N x N path),
`causal_latent:M`. Modes: `layer` is one attention sub-layer's forward + backward
(LN, QKV, attention, out projection, residual; batch 1), `train` the whole LM train
step (embedding, `--layers` blocks with MLP, head, cross-entropy, AdamW; batch 1).
Every point runs in a fresh process; the rounds go N by N with the variants back to
back in alternating order, and the JSON holds every round's time, the median, and the
paired ratio of each variant's tokens/s to torch's within a round.
Writes <out>.json and <out>.png (tokens/s and peak memory against N, log-log).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics


from benchmarks import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PYTHON = os.path.join(REPO, '.venv-torch', 'bin', 'python')
VARIANTS = ['torch', 'full:blockwise', 'full:naive', 'causal_latent:16', 'causal_latent:64']
REFERENCE = 'torch'


def _model_config(variant: str, args):
  from latent_flax import model as model_lib
  from latent_flax.attention import registry
  kind, _, detail = variant.partition(':')
  fields = dict(attention=kind, num_heads=args.heads, emb_dim=args.width, mlp_dim=args.mlp,
                num_layers=args.layers, chunk_size=args.chunk)
  reads = registry.get(kind).fields  # the detail is full's core, or a latent kind's M
  if detail and 'attention_impl' in reads:
    fields['attention_impl'] = detail
  elif detail and 'num_latents' in reads:
    fields['num_latents'] = int(detail)
  return model_lib.validate_model_config(model_lib.ModelConfig(**fields))


def measure_jax(variant: str, mode: str, n: int, args) -> dict:
  """One point of one of our variants, in this process."""
  common.make_oom_killable()
  import jax
  import jax.numpy as jnp
  from configs import base
  from latent_flax import model as model_lib
  cfg = _model_config(variant, args)
  if mode == 'layer':
    layer = model_lib.make_attention(cfg, causal=True)
    x = jax.random.normal(jax.random.key(0), (1, n, args.width), jnp.float32)
    params = layer.init(jax.random.key(1), x[:, :min(n, 256)])
    loss = lambda p, x: jnp.mean(layer.apply(p, x).astype(jnp.float32) ** 2)
    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    run = lambda: fn(params, x)
  else:
    config = base.get_config()
    config.model.update(**{f: getattr(cfg, f) for f in config.model.keys()})
    step, state, batch = common.lm_train_step(config, n)
    holder = {'state': state}

    def run():
      holder['state'], metrics = step(holder['state'], batch, jax.random.key(1))
      return metrics['loss']
  _, seconds = common.time_fn(run, repeats=args.repeats)
  return {'status': 'ok', 'seconds': seconds, 'tokens_per_sec': n / seconds,
          'peak_rss_mb': common.peak_rss_mb(), 'device_peak_mb': common.device_peak_mb(),
          'jax': jax.__version__}


def measure(variant: str, mode: str, n: int, args) -> dict:
  """One point in a fresh process (torch's in its own venv)."""
  if variant == REFERENCE:
    if not os.path.exists(TORCH_PYTHON):
      return {'status': 'error: no .venv-torch (run `make peers-venv`)'}
    argv = [os.path.join(REPO, 'benchmarks', 'torch_gpt.py'), f'--mode={mode}', f'--n={n}',
            f'--width={args.width}', f'--heads={args.heads}', f'--mlp={args.mlp}',
            f'--layers={args.layers}', f'--repeats={args.repeats}']
    return common.run_isolated(argv, args.timeout_s, python=TORCH_PYTHON)
  return common.run_isolated([os.path.abspath(__file__), '--one', variant, mode, str(n)]
                             + _shape_argv(args), args.timeout_s)


def _shape_argv(args) -> list[str]:
  return [f'--width={args.width}', f'--heads={args.heads}', f'--mlp={args.mlp}',
          f'--layers={args.layers}', f'--chunk={args.chunk}', f'--repeats={args.repeats}']


def ratios(records: list[dict]) -> list[dict]:
  """tokens/s of each variant over torch's, paired within rounds, at every (mode, N)."""
  ok = {(r['variant'], r['mode'], r['n']): r for r in records if r['status'] == 'ok'}
  out = []
  for (variant, mode, n), rec in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][2])):
    ref = ok.get((REFERENCE, mode, n))
    if variant != REFERENCE and ref:
      rounds = [t / s for t, s in zip(ref['seconds_rounds'], rec['seconds_rounds'])]
      out.append({'variant': variant, 'mode': mode, 'n': n, 'rounds': rounds,
                  'median': statistics.median(rounds)})
  return out


def plot(records: list[dict], modes: list[str], path: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, axes = plt.subplots(len(modes), 2, figsize=(11, 4.0 * len(modes)), squeeze=False)
  for row, mode in zip(axes, modes):
    for variant in dict.fromkeys(r['variant'] for r in records):
      pts = sorted((r for r in records if r['variant'] == variant and r['mode'] == mode
                    and r['status'] == 'ok'), key=lambda r: r['n'])
      if pts:
        row[0].plot([r['n'] for r in pts], [r['tokens_per_sec'] for r in pts], 'o-',
                    label=variant)
        row[1].plot([r['n'] for r in pts], [common.peak_mb(r) / 1024 for r in pts], 'o-',
                    label=variant)
    common.style_log_axes(row[0], 'sequence length N', f'{mode}: tokens / s')
    common.style_log_axes(row[1], 'sequence length N', common.memory_label(records))
  common.save_figure(fig, 'Ours against a plain PyTorch GPT (SDPA), same machine, same run',
                     path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/peers')
  ap.add_argument('--lengths', default='1024,4096,16384,65536')
  ap.add_argument('--modes', default='train,layer')
  ap.add_argument('--variants', default=','.join(VARIANTS))
  common.add_model_args(ap, width=128, mlp=512)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--rounds', type=int, default=2)
  ap.add_argument('--timeout_s', type=float, default=600)
  ap.add_argument('--max_n', default='full:naive=4096',
                  help="VARIANT=N,...: longest N a variant runs (naive N x N scores would "
                       "swap this machine to a halt long before they run out of memory)")
  ap.add_argument('--one', nargs=3, metavar=('VARIANT', 'MODE', 'N'), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    variant, mode, n = args.one
    print(json.dumps(measure_jax(variant, mode, int(n), args)), flush=True)
    return
  modes, variants = args.modes.split(','), args.variants.split(',')
  lengths = [int(n) for n in args.lengths.split(',')]
  points, failed_at = {}, {}
  for item in filter(None, args.max_n.split(',')):
    variant, _, limit = item.rpartition('=')
    for mode in modes:
      failed_at[variant, mode] = int(limit) + 1
  for round_ in range(args.rounds):
    for mode in modes:
      for n in lengths:
        for variant in (variants if round_ % 2 == 0 else variants[::-1]):
          key = (variant, mode, n)
          if n >= failed_at.get((variant, mode), float('inf')):
            points.setdefault(key, {'status': 'skipped: a shorter N failed, or past --max_n',
                                    'variant': variant, 'mode': mode, 'n': n})
            continue
          rec = measure(variant, mode, n, args)
          rec.update(variant=variant, mode=mode, n=n)
          if rec['status'] != 'ok':
            failed_at[variant, mode] = n
            points[key] = rec
          else:
            prev = points.get(key) or {}
            rounds = prev.get('seconds_rounds', []) + [rec['seconds']]
            rec.update(seconds_rounds=rounds, seconds=statistics.median(rounds),
                       tokens_per_sec=n / statistics.median(rounds),
                       peak_rss_mb=max(rec['peak_rss_mb'], prev.get('peak_rss_mb', 0.0)))
            points[key] = rec
          shown = (f"{rec['tokens_per_sec']:10,.0f} tokens/s  peak "
                   f"{common.peak_mb(rec) / 1024:6.2f} GiB" if rec['status'] == 'ok'
                   else rec['status'])
          print(f"round {round_ + 1}/{args.rounds}  {mode:5s} {variant:18s} N={n:<6d} {shown}",
                flush=True)
          records = list(points.values())
          common.write_records(args, records, ratios=ratios(records))
  records = list(points.values())
  for r in ratios(records):
    print(f"{r['mode']:5s} N={r['n']:<6d} {r['variant']:18s} / torch = {r['median']:.2f}x "
          f"(rounds: {', '.join(f'{x:.2f}' for x in r['rounds'])})")
  plot(records, modes, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
