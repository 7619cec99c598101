"""Ours against what a researcher would otherwise run: a plain PyTorch GPT with SDPA.

    make peers-venv    # once: torch==2.13.0 (CPU build) into .venv-torch, never a dependency
    python benchmarks/peers.py --modes train,layer --lengths 1024,4096,16384 --rounds 2

Variants (`--variants`): `torch` (benchmarks/torch_gpt.py: pre-LN GPT, SDPA, AdamW),
`full:blockwise` (our flash-style full attention), `full:naive` (XLA's N x N path),
`causal_latent:M`, or any kind of the attention registry, `KIND[:DETAIL]`. Modes: `layer`
is one attention sub-layer's forward + backward (LN, QKV, attention, out projection,
residual; batch 1), `train` the whole LM train step as the trainer runs it (embedding,
`--layers` blocks with MLP, head, cross-entropy, AdamW; batch 1). Every point runs in a
fresh process (harness.run_isolated); at each (mode, N) the variants run back to back in
paired alternating rounds (harness.paired_rounds), and the JSON holds every round's time,
the median, and the median and range of each variant's paired speed-up over torch
(tokens/s over torch's within a round). A variant that fails (out of memory, timeout) is
not run at longer N. Writes <out>.json and <out>.png (tokens/s and peak memory against N).
"""

from __future__ import annotations

import argparse
import os

from benchmarks import harness

TORCH_PYTHON = os.path.join(harness.REPO, '.venv-torch', 'bin', 'python')
VARIANTS = ['torch', 'full:blockwise', 'full:naive', 'causal_latent:16', 'causal_latent:64']
REFERENCE = 'torch'


def model_config(variant: str, args):
  """The ModelConfig of one of our variants, 'KIND[:DETAIL]' (full's core, or M)."""
  from latent_flax import model as model_lib
  from latent_flax.attention import registry
  kind, _, detail = variant.partition(':')
  fields = dict(attention=kind, num_heads=args.heads, emb_dim=args.width, mlp_dim=args.mlp,
                num_layers=args.layers, chunk_size=args.chunk)
  reads = registry.get(kind).fields
  if detail and 'attention_impl' in reads:
    fields['attention_impl'] = detail
  elif detail and 'num_latents' in reads:
    fields['num_latents'] = int(detail)
  return model_lib.validate_model_config(model_lib.ModelConfig(**fields))


def layer_fwd_bwd(cfg, n: int):
  """One causal attention sub-layer of cfg, batch 1: fn() runs the jitted gradient of
  mean(y**2) with respect to its parameters and input."""
  import jax
  import jax.numpy as jnp
  from latent_flax import model as model_lib
  layer = model_lib.make_attention(cfg, causal=True)
  x = jax.random.normal(jax.random.key(0), (1, n, cfg.emb_dim), jnp.float32)
  params = layer.init(jax.random.key(1), x[:, :min(n, 256)])
  loss = lambda p, x: jnp.mean(layer.apply(p, x).astype(jnp.float32) ** 2)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: grad(params, x)


def measure_here(variant: str, mode: str, n: int, args) -> dict:
  """One point of one of our variants, in this (child) process."""
  harness.make_oom_killable()
  import jax
  from configs import base
  cfg = model_config(variant, args)
  if mode == 'layer':
    _, seconds = harness.time_fn(layer_fwd_bwd(cfg, n), repeats=args.repeats)
  else:
    config = base.get_config()
    config.model.update(**{f: getattr(cfg, f) for f in config.model.keys()})
    config.data.seq_len = n
    config.per_device_batch_size = 1
    step = harness.LMStep(config)
    _, seconds = harness.time_fn(step.run, repeats=args.repeats)
  return {'status': 'ok', 'seconds': seconds, 'tokens_per_sec': n / seconds,
          'peak_rss_mb': harness.peak_rss_mb(), 'device_peak_mb': harness.device_peak_mb(),
          'jax': jax.__version__}


def measure(variant: str, mode: str, n: int, args) -> dict:
  """One point in a fresh process (torch's in its own venv)."""
  if variant == REFERENCE:
    if not os.path.exists(TORCH_PYTHON):
      return {'status': 'error: no .venv-torch (run `make peers-venv`)'}
    argv = [os.path.join(harness.REPO, 'benchmarks', 'torch_gpt.py'), f'--mode={mode}',
            f'--n={n}', f'--width={args.width}', f'--heads={args.heads}', f'--mlp={args.mlp}',
            f'--layers={args.layers}', f'--repeats={args.repeats}']
    return harness.run_isolated(argv, args.timeout_s, python=TORCH_PYTHON)
  shape = [f'--width={args.width}', f'--heads={args.heads}', f'--mlp={args.mlp}',
           f'--layers={args.layers}', f'--chunk={args.chunk}', f'--repeats={args.repeats}']
  return harness.run_isolated([os.path.abspath(__file__), '--one', variant, mode, str(n)]
                              + shape, args.timeout_s)


def plot(records: list[dict], modes: list[str], path: str) -> None:
  plt = harness.io_utils.pyplot()
  fig, axes = plt.subplots(len(modes), 2, figsize=(11, 4.0 * len(modes)), squeeze=False)
  for row, mode in zip(axes, modes):
    for variant in dict.fromkeys(r['variant'] for r in records):
      pts = sorted((r for r in records if r['variant'] == variant and r['mode'] == mode
                    and r['status'] == 'ok'), key=lambda r: r['n'])
      if pts:
        row[0].plot([r['n'] for r in pts], [r['tokens_per_sec'] for r in pts], 'o-',
                    label=variant)
        row[1].plot([r['n'] for r in pts], [harness.peak_mb(r) / 1024 for r in pts], 'o-',
                    label=variant)
    harness.log_axes(row[0], 'sequence length N', f'{mode}: tokens / s')
    harness.log_axes(row[1], 'sequence length N', harness.memory_label(records))
  harness.save_figure(fig, 'Ours against a plain PyTorch GPT (SDPA), same machine, same run',
                      path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/peers')
  ap.add_argument('--lengths', default='1024,4096,16384,65536')
  ap.add_argument('--modes', default='train,layer')
  ap.add_argument('--variants', default=','.join(VARIANTS))
  ap.add_argument('--width', type=int, default=128)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--mlp', type=int, default=512)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--chunk', type=int, default=128)
  ap.add_argument('--repeats', type=int, default=3, help='timed runs per point (median)')
  ap.add_argument('--rounds', type=int, default=2)
  ap.add_argument('--timeout_s', type=float, default=600)
  ap.add_argument('--max_n', default='full:naive=4096',
                  help="VARIANT=N,...: longest N a variant runs (naive N x N scores would "
                       "swap this machine to a halt long before they run out of memory)")
  ap.add_argument('--one', nargs=3, metavar=('VARIANT', 'MODE', 'N'), help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.one:
    variant, mode, n = args.one
    harness.emit(measure_here(variant, mode, int(n), args))
    return
  modes, variants = args.modes.split(','), args.variants.split(',')
  for mode in modes:
    if mode not in ('layer', 'train'):
      raise SystemExit(f"peers.py: --modes has {mode!r}; use layer and/or train.")
  lengths = [int(n) for n in args.lengths.split(',')]
  longest = {}
  for item in filter(None, args.max_n.split(',')):
    variant, _, limit = item.rpartition('=')
    longest.update({(variant, mode): int(limit) for mode in modes})
  harness.machine_from_child()  # this process never starts the accelerator
  records, ratios = [], []
  for mode in modes:
    for n in lengths:
      run = [v for v in variants if n <= longest.get((v, mode), n)]
      records += [{'status': 'skipped: a shorter N failed, or past --max_n', 'variant': v,
                   'mode': mode, 'n': n} for v in variants if v not in run]

      def shown(v, r, mode=mode, n=n):
        what = (f"{n / r['seconds']:10,.0f} tokens/s  peak {harness.peak_mb(r) / 1024:6.2f} GiB"
                if r['status'] == 'ok' else r['status'])
        print(f"round {r['round'] + 1}/{args.rounds}  {mode:5s} {v:18s} N={n:<6d} {what}",
              flush=True)

      rounds = harness.paired_rounds(run, lambda v: measure(v, mode, n, args), args.rounds,
                                     on_record=shown)
      for v, recs in rounds.items():
        rec = {**harness.merge_rounds(recs), 'variant': v, 'mode': mode, 'n': n}
        if rec['status'] == 'ok':
          rec['tokens_per_sec'] = n / rec['seconds']
        else:
          longest[v, mode] = n - 1  # not run at longer N
        records.append(rec)
        speedup = harness.ratio_stats(rounds.get(REFERENCE, []), recs)  # torch time / ours
        if v != REFERENCE and speedup:
          ratios.append({'variant': v, 'mode': mode, 'n': n, **speedup})
      harness.write_results(args.out + '.json', args, records=records, ratios=ratios)
  for r in ratios:
    print(f"{r['mode']:5s} N={r['n']:<6d} {r['variant']:18s} / torch = "
          f"{harness.format_ratio(r)} (tokens/s, paired rounds)")
  plot(records, modes, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
