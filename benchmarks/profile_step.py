"""Where the LM train step's time goes, by part of the model and kind of op, with its MFU.

    python benchmarks/profile_step.py [--lengths 4096,65536] [--config m64]
        [--out benchmarks/results/profile_step]

The whole jitted train step of a config module of configs/ (default m64: causal_latent
M=64, C=128, D=128, 4 layers), batch 1, is traced for --steps steps with jax.profiler.
Every XLA op of the trace is attributed through the compiled HLO's metadata (the flax
module path and jax primitive that produced it) to one row:

  token-side projections   compress keys/values, expand queries/outputs (N rows each)
  latent-side projections  compress queries/outputs, refine, expand keys/values
                           (M or K*M rows)
  attention scores/values  the score and weighted-value products (token x latent,
                           in-chunk token x token)
  softmax and scan         exp, max, sums, the prefix scan's combines, masks
  layer norms              every LayerNorm, forward and backward
  MLP, embedding, head     their matmuls and elementwise work
  layout copies            copy / transpose ops anywhere in the model
  optimizer and loss       what runs outside the model (AdamW, clipping, cross-entropy)
  not attributed           ops the trace names but the top-level HLO does not (those of
                           nested computations, such as the prefix scan's)

Op times are summed over XLA's worker threads and then scaled to the step's wall time
measured without the profiler (the shares are the shares of thread time). Also measured: the host's part (the time
train.py's loop spends per step beyond the jitted step, from a short real run), minor
page faults per step, and the model-FLOP utilisation: XLA's FLOP count of the step
over its wall time, against the float32 matmul rate of this process on
--peak_size^3 matmuls. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time


from benchmarks import common  # noqa: E402
from benchmarks import profile_layer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ('token-side projections', 'latent-side projections', 'attention scores/values',
        'softmax and scan', 'layer norms', 'MLP, embedding, head', 'layout copies',
        'optimizer and loss', 'not attributed')
_TOKEN_SIDE = ('compress.project_kv', 'expand.project_q', 'expand.project_out', 'attn/query',
               'attn/key', 'attn/value', 'attn/out')
_LATENT_SIDE = ('compress.project_q', 'compress.project_out', 'refine', 'expand.project_kv')


def op_paths(compiled_text: str) -> dict[str, str]:
  """{HLO instruction name: the op_name of its metadata} for the compiled step."""
  return dict(re.findall(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"',
                         compiled_text, re.M))


def row_of(op: str, path: str) -> str:
  """The row of ROWS an op belongs to, from its name and module path."""
  kind = profile_layer.category(op)
  if 'LanguageModel' not in path:
    return ROWS[7]
  if kind == profile_layer.CATEGORIES[1]:
    return ROWS[6]
  if re.search(r'/ln[\w_]*/', path + '/'):
    return ROWS[4]
  if '/attention/' not in path:
    return ROWS[5]
  if kind == profile_layer.CATEGORIES[0]:
    if any(part in path for part in _TOKEN_SIDE):
      return ROWS[0]
    if any(part in path for part in _LATENT_SIDE):
      return ROWS[1]
    return ROWS[2]
  return ROWS[3]


def matmul_peak_gflops(size: int) -> float:
  """float32 GFLOP/s of a jitted size^3 matmul here (best of 5)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  jax.block_until_ready(f(a))
  best = min(_timed(lambda: jax.block_until_ready(f(a))) for _ in range(5))
  return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def loop_seconds_per_step(config_name: str, n: int, steps: int) -> float | None:
  """Seconds per step of a real train.py run at n tokens, batch 1 (logged steps/s after
  the first log, so compilation is out)."""
  with tempfile.TemporaryDirectory() as workdir:
    argv = [sys.executable, 'train.py', f'--config=configs/{config_name}.py',
            f'--config.data.seq_len={n}', '--config.per_device_batch_size=1',
            f'--config.num_train_steps={steps}', f'--config.log_every_steps={steps // 2}',
            f'--config.eval_every_steps={steps * 10}', f'--config.checkpoint_every_steps={steps * 10}',
            '--config.num_eval_steps=1', f'--workdir={workdir}/run']
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    rates = re.findall(r'([\d.]+) steps/s', proc.stdout + proc.stderr)
  return 1.0 / float(rates[-1]) if rates else None


def profile(config_name: str, n: int, steps: int) -> dict:
  import jax
  config = importlib.import_module(f'configs.{config_name}').get_config()
  step, state, batch = common.lm_train_step(config, n)
  rng = jax.random.key(1)
  compiled = step.lower(state, batch, rng).compile()
  paths = op_paths(compiled.as_text())
  flops = compiled.cost_analysis().get('flops', float('nan'))
  for _ in range(2):
    state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  walls = []
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):  # wall time without the profiler, which slows the step down
    t0 = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    walls.append(time.perf_counter() - t0)
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
  wall = sorted(walls)[len(walls) // 2]
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      for _ in range(steps):
        state, metrics = step(state, batch, rng)
        jax.block_until_ready(metrics)
    ops = profile_layer.op_times(trace_dir, steps)
  rows = collections.Counter()
  for op, ms in ops.items():
    rows[row_of(op, paths[op]) if op in paths else ROWS[-1]] += ms
  thread_ms = sum(rows.values())
  scale = 1e3 * wall / thread_ms
  return {'config': config_name, 'attention': config.model.attention, 'n': n,
          'wall_ms': 1e3 * wall, 'thread_ms': thread_ms,
          'rows_ms': {r: rows.get(r, 0.0) * scale for r in ROWS},
          'rows_share': {r: rows.get(r, 0.0) / thread_ms for r in ROWS},
          'gflop': flops / 1e9, 'achieved_gflops': flops / wall / 1e9,
          'minor_faults_per_step': faults, 'tokens_per_s': n / wall}


def plot(records: list[dict], path: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(8, 4.4))
  labels = [f"{r['attention']} N={r['n']:,}\n{r['wall_ms']:.0f} ms, MFU {100 * r['mfu']:.0f}%"
            for r in records]
  bottom = [0.0] * len(records)
  for row in ROWS:
    shares = [100 * r['rows_share'][row] for r in records]
    ax.barh(labels, shares, left=bottom, label=row)
    bottom = [b + s for b, s in zip(bottom, shares)]
  ax.set_xlabel('share of the step (XLA thread time), %')
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.01, 0.5))
  common.save_figure(fig, 'LM train step (batch 1, CPU): where the time goes', path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/profile_step')
  ap.add_argument('--config', default='m64', help='a config module of configs/')
  ap.add_argument('--lengths', default='4096,65536')
  ap.add_argument('--steps', type=int, default=3)
  ap.add_argument('--loop_steps', type=int, default=8,
                  help='steps of the real train.py run that measures host time (0 = skip)')
  ap.add_argument('--peak_size', type=int, default=2048)
  args = ap.parse_args()
  peak = matmul_peak_gflops(args.peak_size)
  print(f"float32 matmul peak here: {peak:.1f} GFLOP/s ({args.peak_size}^3)", flush=True)
  records = []
  for n in map(int, args.lengths.split(',')):
    r = profile(args.config, n, args.steps)
    r['mfu'] = r['achieved_gflops'] / peak
    if args.loop_steps:
      loop = loop_seconds_per_step(args.config, n, args.loop_steps)
      r['loop_ms_per_step'] = None if loop is None else 1e3 * loop
      r['host_ms_per_step'] = None if loop is None else 1e3 * loop - r['wall_ms']
    records.append(r)
    print(f"{r['attention']} N={n}: {r['wall_ms']:.0f} ms/step, {r['gflop']:.1f} GFLOP, "
          f"{r['achieved_gflops']:.1f} GFLOP/s = MFU {100 * r['mfu']:.0f}%, "
          f"{r['minor_faults_per_step']:,.0f} minor faults/step, loop "
          f"{r.get('loop_ms_per_step') or float('nan'):.0f} ms/step", flush=True)
    for row in ROWS:
      print(f"   {row:26s} {r['rows_ms'][row]:8.1f} ms  {100 * r['rows_share'][row]:5.1f}%")
    common.write_records(args, records, matmul_peak_gflops=peak)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
