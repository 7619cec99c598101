"""Does a model use its context, and past its training length? Document-aligned evaluation
of every run of a sweep at several lengths.

    python benchmarks/context_use.py --workdir=runs/long_context [--lengths 4096,16384,65536]
        [--out docs/results/long_context]

For each run directory under --workdir (a sweep such as configs/sweeps/long_context.py)
and each length L: eval.py's evaluation of the latest checkpoint on the validation
split with `--seq_len=L --windows=documents` (each document at least L + 1 bytes long,
read from its first byte), streamed in segments of --segment tokens beyond the
training length for kinds that decode (the same losses as one pass, in bounded memory
for causal_latent). Writes <out>/context_use.json, <out>/bits_by_context.png (one panel
per length, bits/byte against bytes of context) and <out>/report.md (bits/byte in the
last octave of each length, and overall). `--restart_every=4096` adds the control: the
same documents and positions with the model restarted every 4,096 bytes, so the
difference at a position is what the longer context bought there.

`--restart_every=128` (the chunk size C) is the control of issue 35: every token sees
only its own chunk. For causal_latent that is exactly the model with its latent summary
removed (a chunk without R_{k-1} computes what the same chunk computes alone), so the
difference is what the summary buys; for full attention and MLA it is what everything
before the chunk buys. The report then also tabulates this gain by position bucket
(128-511, 512-2,047, 2,048-4,095, ... bytes of context) and draws it
(<out>/gain_by_context.png). Several controls: `--restart_every=128,4096`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks import harness
from latent_flax import config_lib
from latent_flax.attention import registry
from latent_flax.evaluation import runs


def run_names(workdir: str) -> list[str]:
  """The runs under a sweep's workdir (the folders with a config.json)."""
  if not os.path.isdir(workdir):
    raise SystemExit(f"context_use.py: --workdir={workdir!r} does not exist; give the sweep's "
                     "workdir (the folder holding its runs).")
  return sorted(d for d in os.listdir(workdir)
                if os.path.exists(os.path.join(workdir, d, 'config.json')))


def evaluate(run_dir: str, length: int, segment: int, windows: str = 'documents',
             documents: int = 0) -> dict:
  """documents > 0: the first that many (whole batches of the run's global batch)."""
  import jax
  config = config_lib.load_saved_config(run_dir)
  kind = registry.get(config.model.attention)
  stream = segment if kind.decode and length > config.data.seq_len else None
  batch = config.per_device_batch_size * jax.device_count()
  t0 = time.perf_counter()
  r = runs.evaluate_checkpoint(run_dir, None, num_eval_steps=-(-documents // batch),
                               seq_len=length, windows=windows, stream_segment=stream)
  carried = ' carried' if config.get('carry_state') else ''  # trained past the window
  return {'run': os.path.basename(run_dir), 'label': kind.label(config.model) + carried,
          'length': length, 'stream_segment': stream, 'documents': r['tokens'] // length,
          'windows': windows,
          'bits_per_byte': r['bits_per_byte'], 'bits_by_context': r['bits_by_context'],
          'seconds': time.perf_counter() - t0, 'peak_rss_mb': harness.peak_rss_mb(),
          'step': r['step']}


def evaluate_restarted(run_dir: str, length: int, every: int,
                       windows: str = 'documents', documents: int = 0) -> dict:
  """The control: the same windows and positions, but the model restarts every `every`
  bytes (position p sees only the p mod `every` bytes before it in its piece), so any
  gain of the streamed evaluation over this one is what the longer context bought."""
  import jax
  import numpy as np
  from latent_flax.training import checkpoint
  from latent_flax.evaluation import evaluator
  from latent_flax import model as model_lib
  config = config_lib.load_saved_config(run_dir)
  kind = registry.get(config.model.attention)
  model = model_lib.build_model(config.model)
  params = checkpoint.restore_workdir(run_dir, config, model, None, params_only=True).params
  docs = runs.evaluation_windows(config, length, windows)
  if documents:
    global_batch = config.per_device_batch_size * jax.device_count()
    docs = docs[:-(-documents // global_batch) * global_batch]  # those evaluate() read
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x))
  loss_by_pos, t0 = np.zeros(length), time.perf_counter()
  for doc in docs:
    pieces = np.stack([doc[k * every:(k + 1) * every + 1] for k in range(length // every)])
    logits = forward(params, pieces[:, :-1])
    ce = jax.vmap(lambda l, t: evaluator.segment_ce(l[None], t[None], np.ones((1, every),
                                                     np.float32))[0])(logits, pieces[:, 1:])
    loss_by_pos += np.asarray(ce, np.float64).reshape(-1)
  octaves = evaluator.bits_by_context(loss_by_pos, np.full(length, float(len(docs))))
  return {'run': os.path.basename(run_dir) + f' restart {every}',
          'label': f"{kind.label(config.model)}{' carried' if config.get('carry_state') else ''}, "
                   f'context reset every {every:,}',
          'length': length, 'stream_segment': None, 'documents': len(docs), 'windows': windows,
          'bits_per_byte': float(loss_by_pos.sum() / len(docs) / length / evaluator.LN2),
          'bits_by_context': octaves, 'seconds': time.perf_counter() - t0,
          'peak_rss_mb': harness.peak_rss_mb(), 'step': None}


GAIN_BUCKETS = [(128, 512), (512, 2048), (2048, 4096), (4096, 8192), (8192, 16384),
                (16384, 65536)]


def bucket_means(octaves: dict[str, float]) -> dict[str, float]:
  """Bits/byte over contexts [lo, hi) from octave means ('a-b': the contexts a..b), each
  octave weighted by its width (document-aligned windows weigh every position alike)."""
  out = {}
  for lo, hi in GAIN_BUCKETS:
    parts = [(v, b - a + 1) for (a, b), v in ((tuple(map(int, k.split('-'))), v)
                                              for k, v in octaves.items()) if lo <= a < hi]
    if parts:
      out[f'{lo}-{hi - 1}'] = sum(v * w for v, w in parts) / sum(w for _, w in parts)
  return out


def gains(records: list[dict]) -> list[dict]:
  """Per model, length and control: control minus full context, by position bucket."""
  full = {(r['run'], r['length']): r for r in records if ' restart ' not in r['run']}
  out = []
  for r in records:
    if ' restart ' not in r['run']:
      continue
    run, every = r['run'].split(' restart ')
    if (run, r['length']) not in full:
      continue
    ours = bucket_means(full[run, r['length']]['bits_by_context'])
    reset = bucket_means(r['bits_by_context'])
    out.append({'run': run, 'label': full[run, r['length']]['label'], 'length': r['length'],
                'restart_every': int(every),
                'bits_per_byte': full[run, r['length']]['bits_per_byte'],
                'gain_by_bucket': {k: reset[k] - ours[k] for k in ours
                                   if k in reset and int(k.split('-')[0]) >= int(every)}})
  return out


def plot_gains(rows: list[dict], path: str) -> None:
  plt = harness.io_utils.pyplot()
  controls = sorted({r['restart_every'] for r in rows})
  fig, axes = plt.subplots(1, len(controls), figsize=(6.5 * len(controls) + 1.5, 4.0),
                           squeeze=False)
  models = list(dict.fromkeys(r['label'] for r in rows))
  colors = dict(zip(models, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 4))
  for ax, every in zip(axes[0], controls):
    for r in sorted((r for r in rows if r['restart_every'] == every),
                    key=lambda r: -r['length']):
      bounds = [tuple(map(int, k.split('-'))) for k in r['gain_by_bucket']]
      ax.plot([(lo * (hi + 1)) ** 0.5 for lo, hi in bounds], list(r['gain_by_bucket'].values()),
              '-' if r['length'] <= 4096 else '--', marker='o', ms=4, color=colors[r['label']],
              label=f"{r['label']} (read to {r['length']:,})")
    ax.axhline(0, color='grey', lw=0.8)
    ax.axvline(4096, color='grey', lw=0.8, ls=':')
    ax.set_xscale('log', base=2)
    ax.set_xlabel('bytes of context')
    ax.set_ylabel(f'bits/byte saved over the model\nrestarted every {every:,} bytes')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1.02, 0.5))
  harness.save_figure(fig, 'What the context beyond the last restart buys, by position '
                      '(trained at 4,096 bytes: grey line)', path)


def plot(records: list[dict], lengths: list[int], path: str) -> None:
  plt = harness.io_utils.pyplot()
  fig, axes = plt.subplots(1, len(lengths), figsize=(4.6 * len(lengths) + 1.5, 4.0),
                           sharey=True, squeeze=False)
  models = list(dict.fromkeys(r['label'].split(', context reset')[0] for r in records))
  colors = dict(zip(models, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 4))
  for ax, length in zip(axes[0], lengths):
    for r in [r for r in records if r['length'] == length]:
      bounds = [tuple(map(int, k.split('-'))) for k in r['bits_by_context']]
      control = 'context reset' in r['label']
      ax.plot([(lo * hi) ** 0.5 for lo, hi in bounds], list(r['bits_by_context'].values()),
              ':' if control else '-', marker='.', ms=4, label=r['label'],
              color=colors[r['label'].split(', context reset')[0]])
    ax.axvline(4096, color='grey', lw=0.8, ls=':')
    ax.set_xscale('log', base=2)
    what = 'windows' if any(r.get('windows') == 'stream' for r in records) else 'documents'
    ax.set_title(f'{what} read to {length:,} bytes', fontsize=9)
    ax.set_xlabel('bytes of context')
    ax.grid(True, which='both', alpha=0.3)
  axes[0][0].set_ylabel('bits per byte')
  handles = {}
  for ax in axes[0]:
    for h, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, h)
  axes[0][-1].legend(handles.values(), handles.keys(), fontsize=7, loc='center left',
                     bbox_to_anchor=(1.02, 0.5))
  harness.save_figure(fig, 'Context use: bits/byte by position, trained at 4,096 bytes (grey '
                      'line); dotted: the model restarted', path)


def report(records: list[dict], lengths: list[int], path: str, workdir: str) -> None:
  labels = list(dict.fromkeys(r['label'] for r in records))
  head = ['model'] + [f'last octave of {n:,}' for n in lengths] + [
      f'all of {n:,}' for n in lengths]
  lines = [f'# Context use ({workdir})', '',
           'Bits/byte of document-aligned validation windows; "last octave of L" is the '
           'mean over the predictions with L/2 to L bytes of context. Documents per '
           'length: ' + ', '.join(f"{n:,}: {next(r['documents'] for r in records if r['length'] == n)}"
                                 for n in lengths if any(r['length'] == n for r in records))
           + '.', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for label in labels:
    by_len = {r['length']: r for r in records if r['label'] == label}
    last = [f"{list(by_len[n]['bits_by_context'].values())[-1]:.4f}" if n in by_len else '—'
            for n in lengths]
    every = [f"{by_len[n]['bits_per_byte']:.4f}" if n in by_len else '—' for n in lengths]
    lines.append('| ' + ' | '.join([label] + last + every) + ' |')
  lines += ['', '![bits/byte by context](bits_by_context.png)', '']
  rows = gains(records)
  if rows:
    buckets = list(dict.fromkeys(k for r in rows for k in r['gain_by_bucket']))
    head = ['model', 'read to', 'restarted every', 'bits/byte'] + [
        f'gain at {k}' for k in buckets] + ['last / first']
    lines += ['## Gain by position', '',
              'Bits/byte saved at each bucket of context by everything before the last '
              'restart of the control; "last / first" is the gain in the last bucket over '
              'the gain in the first.', '',
              '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
      g = r['gain_by_bucket']
      first, last = (list(g.values())[0], list(g.values())[-1]) if g else (0, 0)
      lines.append('| ' + ' | '.join(
          [r['label'], f"{r['length']:,}", f"{r['restart_every']:,}",
           f"{r['bits_per_byte']:.4f}"] + [f"{g[k]:+.4f}" if k in g else '—' for k in buckets]
          + [f"{last / first:.2f}" if first else '—']) + ' |')
    lines += ['', '![gain by context](gain_by_context.png)', '']
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--lengths', default='4096,16384,65536')
  ap.add_argument('--segment', type=int, default=4096)
  ap.add_argument('--runs', nargs='*', default=[], help='run names (default: all)')
  ap.add_argument('--restart_every', default='',
                  help='also the controls: the model restarted every this many bytes '
                       '(comma-separated)')
  ap.add_argument('--windows', default='documents', choices=['documents', 'stream'],
                  help="'stream': windows cut from the joined split, as in training")
  ap.add_argument('--documents', type=int, default=0,
                  help='read only the first this many documents at each length (rounded up '
                       "to the run's global batch; 0 = all)")
  ap.add_argument('--out', default='docs/results/long_context')
  ap.add_argument('--report_only', action='store_true', help='draw and tabulate the JSON only')
  args = ap.parse_args()
  lengths = [int(n) for n in args.lengths.split(',')]
  restarts = [int(n) for n in args.restart_every.split(',') if n]
  names = args.runs or run_names(args.workdir)
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, 'context_use.json')
  records = json.load(open(path))['records'] if os.path.exists(path) else []
  done = {(r['run'], r['length']) for r in records}
  for length in ([] if args.report_only else lengths):
    for name in names:
      run_dir = os.path.join(args.workdir, name)
      if (name, length) not in done:
        _record(evaluate(run_dir, length, args.segment, args.windows, args.documents),
                records, path, args)
      for every in restarts:
        control = f'{name} restart {every}'
        if length > every and (control, length) not in done:
          _record(evaluate_restarted(run_dir, length, every, args.windows, args.documents),
                  records, path, args)
  lengths = sorted({r['length'] for r in records} | set(lengths))
  plot(records, lengths, os.path.join(args.out, 'bits_by_context.png'))
  if gains(records):
    plot_gains(gains(records), os.path.join(args.out, 'gain_by_context.png'))
  report(records, lengths, os.path.join(args.out, 'report.md'), args.workdir)
  print(f"wrote {args.out}/context_use.json, report.md and the PNGs")


def _record(r: dict, records: list[dict], path: str, args) -> None:
  """Adds a result, prints it and rewrites the JSON (a rerun skips what it holds)."""
  records.append(r)
  print(f"{r['label']:40s} L={r['length']:6,}: {r['bits_per_byte']:.4f} bits/byte over "
        f"{r['documents']} documents, last octave "
        f"{list(r['bits_by_context'].values())[-1]:.4f}  ({r['seconds']:.0f} s)", flush=True)
  harness.write_results(path, args, records=records)


if __name__ == '__main__':
  main()
