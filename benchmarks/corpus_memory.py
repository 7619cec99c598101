"""Peak process memory against corpus size: preparing a split, and reading training batches
from it, with the corpus mapped from disk (now) and, for comparison, read into RAM (an
older checkout, `--before DIR`).

    python benchmarks/corpus_memory.py [--sizes_mb 10,100,500,2000] [--before OLD_CHECKOUT]

For each size, a text_files corpus of that many bytes (16 MiB files of Python source,
split by file into train and validation) is written to --scratch. Then, each in a fresh
process: `prepare` (the train split prepared into its byte
file, an empty cache), `read` (the prepared split mapped and --batches training batches of
--batch x --seq_len drawn in the shuffled order), and with --before, `before` (the older
code's load and the same batches). Each child reports its peak RSS (VmHWM) and, at its
end, the anonymous part of its RSS (its own memory) and the file-backed part (shared
libraries and the page cache of the mapped corpus that its reads faulted in: shared
between processes, dropped under memory pressure). A process that only imports jax and
the data code gives the floor. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time


from benchmarks import common  # noqa: E402

FILE_BYTES = 16 << 20

CHILD = """
import json, sys, time
import jax, ml_collections  # jax: what a training process has loaded anyway
from latent_flax.tasks import data
from latent_flax import tasks
cfg = ml_collections.ConfigDict(dict(name='text_files', path=sys.argv[1], text_key='text',
                                     data_dir='', seq_len=int(sys.argv[3]), cache_dir=sys.argv[2]))
out = {}
if sys.argv[5] != 'import':
  t0 = time.perf_counter()
  windows = tasks.load(cfg, 'train')
  out['load_s'] = time.perf_counter() - t0
  it = data.TrainIterator(windows, int(sys.argv[4]), 0)
  t0 = time.perf_counter()
  for _ in range(int(sys.argv[6])):
    next(it)
  out.update(batches_s=time.perf_counter() - t0, windows=windows.num_windows)
# VmHWM starts afresh at exec (wait4's ru_maxrss would start at the parent's size).
status = {l.split(':')[0]: int(l.split()[1]) / 1024 for l in open('/proc/self/status')
          if l.startswith(('VmHWM:', 'RssAnon:', 'RssFile:'))}
out.update(peak_rss_mb=status['VmHWM'], anon_mb=status['RssAnon'], file_mb=status['RssFile'])
print(json.dumps(out))
"""


def write_corpus(folder: str, size: int) -> None:
  """`size` bytes of stdlib source in files of FILE_BYTES, written piecewise."""
  if os.path.isdir(folder) and sum(os.path.getsize(os.path.join(folder, f))
                                   for f in os.listdir(folder)) == size:
    return
  shutil.rmtree(folder, ignore_errors=True)
  os.makedirs(folder)
  root = sysconfig.get_paths()['stdlib']
  text = b''.join(open(os.path.join(d, f), 'rb').read() for d, _, fs in os.walk(root)
                  for f in sorted(fs) if f.endswith('.py'))[:FILE_BYTES]
  left, i = size, 0
  while left > 0:
    n = min(FILE_BYTES, left)
    with open(os.path.join(folder, f'part{i:05d}.py'), 'wb') as f:
      f.write(text[:n] if n < len(text) else (text * (n // len(text) + 1))[:n])
    left, i = left - n, i + 1


def run_child(checkout: str, corpus: str, cache: str, args, phase: str) -> dict:
  argv = [sys.executable, '-c', CHILD, corpus, cache, str(args.seq_len), str(args.batch),
          phase, str(args.batches)]
  t0 = time.perf_counter()
  proc = subprocess.run(argv, cwd=checkout, capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=checkout, JAX_PLATFORMS='cpu'))
  if proc.returncode:
    raise RuntimeError(f"{phase} in {checkout} failed:\n{proc.stderr[-3000:]}")
  return {'phase': phase, 'seconds': time.perf_counter() - t0,
          **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--sizes_mb', default='10,100,500,2000')
  ap.add_argument('--before', default='', help='an older checkout that reads corpora into RAM')
  ap.add_argument('--scratch', default='/tmp/lf_corpus_memory')
  ap.add_argument('--seq_len', type=int, default=512)
  ap.add_argument('--batch', type=int, default=64)
  ap.add_argument('--batches', type=int, default=200)
  ap.add_argument('--out', default='benchmarks/results/corpus_memory')
  args = ap.parse_args()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  records = []
  floor = run_child(repo, args.scratch, args.scratch, args, 'import')
  print(f"floor (imports only): {floor['peak_rss_mb']:,.0f} MiB", flush=True)
  for size_mb in map(int, args.sizes_mb.split(',')):
    corpus = os.path.join(args.scratch, f'corpus_{size_mb}mb')
    write_corpus(corpus, size_mb << 20)
    cache = os.path.join(args.scratch, f'cache_{size_mb}mb')
    shutil.rmtree(cache, ignore_errors=True)
    phases = [('prepare', repo), ('read', repo)] + ([('before', args.before)] if args.before
                                                    else [])
    for phase, checkout in phases:
      record = {'corpus_mb': size_mb, **run_child(checkout, corpus, cache, args, phase)}
      records.append(record)
      print(f"{size_mb:>6,} MB  {phase:<8} peak RSS {record['peak_rss_mb']:>7,.0f} MiB "
            f"(at the end: {record['anon_mb']:,.0f} anonymous, {record['file_mb']:,.0f} "
            f"file-backed)  {record['seconds']:6.1f} s", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
  result = {'floor_rss_mb': floor['peak_rss_mb'], 'records': records,
            'settings': {k: v for k, v in vars(args).items() if k != 'out'},
            'date': time.strftime('%Y-%m-%d'), 'command': ' '.join(sys.argv)}
  common.write_json(args.out + '.json', result)

  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  names = {'prepare': 'prepare (now)', 'read': f'{args.batches} batches, mapped (now)',
           'before': f'{args.batches} batches, read into RAM (before)'}
  for (phase, label), color in zip(names.items(), ('C0', 'C1', 'C3')):
    pts = [r for r in records if r['phase'] == phase]
    if pts:
      sizes = [r['corpus_mb'] for r in pts]
      ax.plot(sizes, [r['peak_rss_mb'] for r in pts], marker='o', color=color,
              label=f'{label}: peak RSS')
      ax.plot(sizes, [r['anon_mb'] for r in pts], marker='x', ls='--', color=color,
              label=f'{label}: anonymous')
  ax.axhline(floor['peak_rss_mb'], color='gray', ls=':', label='imports only')
  ax.set_xscale('log')
  ax.set_xlabel('corpus size (MB)')
  ax.set_ylabel('peak process memory (MiB)')
  ax.set_title('Memory against corpus size (CPU)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(args.out + '.png', dpi=120)
  print(f"wrote {args.out}.json and .png")


if __name__ == '__main__':
  main()
