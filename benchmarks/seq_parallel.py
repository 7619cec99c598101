"""Sequence parallelism on fake CPU devices: per-device memory, step time and bytes moved
between devices against the seq-axis size, for causal_latent and full attention.

    python benchmarks/seq_parallel.py [--lengths 16384,...,262144] [--seq 1,2,4] [--time_max 65536,16384]

The trainer's LM train step (harness.LMStep: forward, backward, AdamW) on one row of N
bytes, D=128, 4 heads, 2 layers (causal_latent M=64, C=128; full: blockwise), on mesh
(1, 1, s) over the first s of 4 fake CPU devices. From the compiled program: temp
(activation) bytes per device (XLA's memory analysis) and the collectives in its HLO,
each counted once where it appears, with the bytes a device receives by the usual ring
formulas (all-gather and reduce-scatter (s-1)/s of the full buffer, all-reduce 2(s-1)/s,
collective-permute the buffer); a collective inside a loop body is counted once and
flagged. Step time (median of --steps after one warm-up) up to --time_max tokens: on a
2-core machine the fake devices share the cores, so it shows overhead, not speed-up.
Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from configs import base  # noqa: E402

COLLECTIVES = ('all-gather', 'all-reduce', 'collective-permute', 'all-to-all', 'reduce-scatter')
_BYTES = {'f32': 4, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 's8': 1, 'u8': 1, 'pred': 1,
          'f64': 8, 's64': 8, 'u64': 8}
_OP = re.compile(r'= (\(.*?\)|\S+) (' + '|'.join(COLLECTIVES) + r')(-start)?\(')
_SHAPE = re.compile(r'(\w+)\[([\d,]*)\]')


def _shape_bytes(text: str, started: bool) -> int:
  """Bytes of a collective's result: every array of a multi-operand op's tuple; of an
  async -start op's tuple (operand, result, ...), the result."""
  shapes = _SHAPE.findall(text)
  if started:
    shapes = shapes[1:2]
  return sum(_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(',') if d] or [1]))
             for dtype, dims in shapes)


def collectives(hlo: str, s: int) -> dict:
  """Per collective kind: count, buffer bytes, bytes received per device, and how many
  sit in a loop body (counted once)."""
  bodies = set(re.findall(r'body=%?([\w.\-]+)', hlo))
  out, computation = {}, None
  for line in hlo.splitlines():
    head = re.match(r'^%?([\w.\-]+) .*\{$', line) or re.match(r'^ENTRY %?([\w.\-]+)', line)
    if head and not line.startswith(' '):
      computation = head.group(1)
    m = _OP.search(line)
    if not m:
      continue
    kind, size = m.group(2), _shape_bytes(m.group(1), bool(m.group(3)))
    factor = {'all-gather': (s - 1) / s, 'reduce-scatter': (s - 1) / s,
              'all-reduce': 2 * (s - 1) / s}.get(kind, 1.0)
    entry = out.setdefault(kind, {'count': 0, 'buffer_bytes': 0, 'received_bytes': 0.0,
                                  'in_loop': 0})
    entry['count'] += 1
    entry['buffer_bytes'] += size
    entry['received_bytes'] += size * factor
    entry['in_loop'] += computation in bodies
  return out


def lm_config(kind: str, n: int, s: int):
  """The benchmark's LM of `kind` at n tokens, one row, on mesh (1, 1, s)."""
  config = base.get_config()
  config.model.update(attention=kind, num_latents=64, chunk_size=128, num_heads=4,
                      emb_dim=128, mlp_dim=512, num_layers=2)
  config.data.update(seq_len=n)
  config.mesh.update(data=1, fsdp=1, seq=s)
  config.per_device_batch_size = 1
  return config


def measure(kind: str, n: int, s: int, timed: bool, num_steps: int) -> dict:
  step = harness.LMStep(lm_config(kind, n, s), devices=jax.devices()[:s])
  compiled, compile_s = step.compile()
  memory = compiled.memory_analysis()
  record = {'kind': kind, 'n': n, 'seq': s, 'compile_s': compile_s,
            'temp_mb': memory.temp_size_in_bytes / 2**20,
            'argument_mb': memory.argument_size_in_bytes / 2**20,
            'collectives': collectives(compiled.as_text(), s)}
  record['received_mb'] = sum(c['received_bytes'] for c in record['collectives'].values()) / 2**20
  if timed:
    step.run(1)  # initialises, compiles, warms up
    record['step_s'] = statistics.median(step.run(1) for _ in range(num_steps))
    record['tokens_per_s'] = n / record['step_s']
  return record


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--kinds', default='causal_latent,full')
  ap.add_argument('--lengths', default='16384,32768,65536,131072,262144')
  ap.add_argument('--seq', default='1,2,4')
  ap.add_argument('--time_max', default='65536,16384',
                  help='per kind (in --kinds order): time steps up to this N')
  ap.add_argument('--steps', type=int, default=2)
  ap.add_argument('--out', default='benchmarks/results/seq_parallel')
  args = ap.parse_args()
  records = []
  kinds = args.kinds.split(',')
  limits = dict(zip(kinds, map(int, args.time_max.split(','))))
  for kind in kinds:
    for n in map(int, args.lengths.split(',')):
      for s in map(int, args.seq.split(',')):
        r = measure(kind, n, s, n <= limits.get(kind, 0), args.steps)
        records.append(r)
        print(f"{kind:<14} N={n:>7,} seq={s}  temp {r['temp_mb']:>8,.1f} MiB/device  "
              f"received {r['received_mb']:>8.2f} MiB/device  "
              + (f"step {r['step_s']:.2f} s" if 'step_s' in r else 'step not timed')
              + "  (" + ', '.join(f"{k} x{v['count']}" for k, v in r['collectives'].items())
              + ")",
              flush=True)
        harness.write_results(args.out + '.json', args, records=records)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and .png")


def plot(records: list[dict], path: str) -> None:
  plt = harness.io_utils.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  kinds = sorted({r['kind'] for r in records})
  for kind, ls in zip(kinds, ('-', '--', ':', '-.')):
    for s, color in zip(sorted({r['seq'] for r in records}), ('C0', 'C1', 'C2', 'C3')):
      pts = sorted(((r['n'], r) for r in records if r['kind'] == kind and r['seq'] == s),
                   key=lambda p: p[0])
      label = f'{kind}, seq={s}'
      axes[0].plot([n for n, _ in pts], [r['temp_mb'] for _, r in pts], ls, color=color,
                   marker='o', label=label)
      if s > 1:
        axes[1].plot([n for n, _ in pts], [r['received_mb'] for _, r in pts], ls, color=color,
                     marker='o', label=label)
      timed = [(n, r['step_s']) for n, r in pts if 'step_s' in r]
      if timed:
        axes[2].plot(*zip(*timed), ls, color=color, marker='o', label=label)
  for ax, ylabel in zip(axes, ('temp memory per device (MiB)',
                               'received per device per step (MiB)', 'step time (s)')):
    harness.log_axes(ax, 'sequence length N (one row)', ylabel,
                     legend=bool(ax.get_legend_handles_labels()[0]))
  harness.save_figure(fig, 'Sequence parallelism on 4 fake CPU devices (LM train step, D=128, '
                      '2 layers)', path)


if __name__ == '__main__':
  main()
