"""Where the LM train step's time goes, by part of the model and kind of op, with its MFU.

    python benchmarks/profile_step.py [--lengths 4096,65536] [--config m64]
        [--out benchmarks/results/profile_step]

The trainer's own train step (harness.LMStep) of a config module of configs/ (default m64:
causal_latent M=64, C=128, D=128, 4 layers), batch 1, is traced for --steps steps with
jax.profiler and the trace read back with jax.profiler.ProfileData.
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
measured without the profiler (the shares are the shares of thread time). Also measured:
the host's part (the time train.py's loop spends per step beyond the jitted step, from a
short real run), minor page faults per step, and the model-FLOP utilisation: XLA's FLOP
count of the step over its wall time, against harness.matmul_peak_gflops on --peak_size^3
matmuls in this process. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib
import os
import re
import resource
import subprocess
import sys
import tempfile

from benchmarks import harness

ROWS = ('token-side projections', 'latent-side projections', 'attention scores/values',
        'softmax and scan', 'layer norms', 'MLP, embedding, head', 'layout copies',
        'optimizer and loss', 'not attributed')
_TOKEN_SIDE = ('compress.project_kv', 'expand.project_q', 'expand.project_out', 'attn/query',
               'attn/key', 'attn/value', 'attn/out')
_LATENT_SIDE = ('compress.project_q', 'compress.project_out', 'refine', 'expand.project_kv')
# XLA:CPU's threads that run the ops of a step, and their events that are not ops.
_OP_THREADS = ('tf_XLAEigen', 'tf_XLAExecute')
_NOT_OPS = ('ThunkExecutor', 'ThreadPool', 'Threadpool')


def op_kind(op: str) -> str:
  """'matmul', 'copy' (layout copies and transposes) or 'other', from an XLA:CPU op's name
  ('copy_bitcast_fusion.16' -> copy; YNNPACK's fusions are matmuls)."""
  base = re.sub(r'\.\d+$', '', op)
  words = set(base.split('_')) - {'fusion', 'wrapped', 'bitcast'}
  if base.startswith('ynn') or words == {'dot'}:
    return 'matmul'
  if words and words <= {'copy', 'transpose'}:
    return 'copy'
  return 'other'


def op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """Milliseconds per step of every XLA op in a jax.profiler trace, summed over threads."""
  from jax.profiler import ProfileData
  path = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)[0]
  times = collections.Counter()
  for plane in ProfileData.from_file(path).planes:
    for line in plane.lines:
      if line.name.startswith(_OP_THREADS):
        for event in line.events:
          if not any(part in event.name for part in _NOT_OPS):
            times[event.name] += event.duration_ns / 1e6 / steps
  return dict(times)


def op_paths(compiled_text: str) -> dict[str, str]:
  """{HLO instruction name: the op_name of its metadata} for the compiled step."""
  return dict(re.findall(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"',
                         compiled_text, re.M))


def row_of(op: str, path: str) -> str:
  """The row of ROWS an op belongs to, from its name and module path."""
  kind = op_kind(op)
  if 'LanguageModel' not in path:
    return ROWS[7]
  if kind == 'copy':
    return ROWS[6]
  if re.search(r'/ln[\w_]*/', path + '/'):
    return ROWS[4]
  if '/attention/' not in path:
    return ROWS[5]
  if kind == 'matmul':
    if any(part in path for part in _TOKEN_SIDE):
      return ROWS[0]
    if any(part in path for part in _LATENT_SIDE):
      return ROWS[1]
    return ROWS[2]
  return ROWS[3]


def loop_seconds_per_step(config_name: str, n: int, steps: int) -> float | None:
  """Seconds per step of a real train.py run at n tokens, batch 1 (logged steps/s after
  the first log, so compilation is out)."""
  with tempfile.TemporaryDirectory() as workdir:
    argv = [sys.executable, 'train.py', f'--config=configs/{config_name}.py',
            f'--config.data.seq_len={n}', '--config.per_device_batch_size=1',
            f'--config.num_train_steps={steps}', '--config.warmup_steps=0',
            f'--config.log_every_steps={steps // 2}',
            f'--config.eval_every_steps={steps * 10}', f'--config.checkpoint_every_steps={steps * 10}',
            '--config.num_eval_steps=1', f'--workdir={workdir}/run']
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=harness.REPO)
    rates = re.findall(r'([\d.]+) steps/s', proc.stdout + proc.stderr)
  return 1.0 / float(rates[-1]) if rates else None


def profile(config_name: str, n: int, steps: int) -> dict:
  import jax
  config = importlib.import_module(f'configs.{config_name}').get_config()
  config.data.seq_len = n
  config.per_device_batch_size = 1
  step = harness.LMStep(config)
  compiled, _ = step.compile()
  paths = op_paths(compiled.as_text())
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', float('nan'))
  step.run(2)  # initialises, compiles, warms up
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  # Wall time without the profiler, which slows the step down.
  wall = sorted(step.run(1) for _ in range(steps))[steps // 2]
  faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      step.run(steps)
    ops = op_times(trace_dir, steps)
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
  plt = harness.io_utils.pyplot()
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
  harness.save_figure(fig, 'LM train step (batch 1): where the time goes', path)


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
  peak = harness.matmul_peak_gflops(args.peak_size)
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
    harness.write_results(args.out + '.json', args, records=records,
                          matmul_peak_gflops=peak)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
