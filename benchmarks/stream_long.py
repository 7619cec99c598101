"""One long document read in a single streamed context: time, peak memory, bits/byte by position.

    python benchmarks/stream_long.py --workdir=runs/m64 [--bytes 1048576] [--segment 4096]
        [--out benchmarks/results/stream_1m]

The document is built from the built-in corpus without download: the validation
documents of 'stdlib_long' (stdlib files of at least 32 KB, none seen in training by a
'stdlib_long' model; a 'stdlib' model may have trained on some of them, which the
JSON notes), then 'stdlib' validation files, joined with the separator byte and cut at
--bytes. The workdir's model reads it with decode.stream in segments of --segment
tokens, each continuing from the state the previous one left (equal to one pass, tested
in tests/test_decode.py): for causal_latent the state has a fixed size, so memory does
not grow with the document. Writes <out>.json (bits/byte by octave of context, time,
peak RSS) and <out>.png.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import harness
from latent_flax import model as model_lib
from latent_flax.evaluation import decode, evaluator, runs
from latent_flax.tasks import corpus, data
from latent_flax.training import checkpoint


def long_document(config, num_bytes: int) -> tuple[np.ndarray, list[str]]:
  """num_bytes of validation text, long documents first; and where it came from."""
  docs, sources = [], []
  for name in ('stdlib_long', 'stdlib'):
    dc = config.data.copy_and_resolve_references()
    dc.name, dc.min_document_bytes = name, 0
    part = corpus.load_documents(dc, 'validation')
    docs += part
    sources.append(f"{name} validation: {len(part)} documents, {sum(map(len, part)):,} bytes")
    if sum(map(len, docs)) >= num_bytes + 1:
      break
  joined = data.join_documents(docs)
  if len(joined) < num_bytes + 1:
    raise ValueError(f"--bytes={num_bytes:,}: the validation text has {len(joined):,} bytes.")
  return joined[:num_bytes + 1], sources


def plot(result: dict, path: str) -> None:
  """Bits/byte against the bytes of context a prediction had (octave means, log x)."""
  plt = harness.io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  octaves = result['bits_by_context']
  bounds = [tuple(map(int, k.split('-'))) for k in octaves]
  ax.plot([(lo * hi) ** 0.5 for lo, hi in bounds], list(octaves.values()), 'o-',
          label=f"{result['attention']}, trained at {result['trained_seq_len']:,} bytes")
  ax.axvline(result['trained_seq_len'], color='grey', lw=0.8, ls=':')
  harness.log_axes(ax, 'bytes of context (octave mean)', 'bits per byte', log_y=False)
  harness.save_figure(fig, f"One document of {result['bytes']:,} bytes in one streamed context "
                      f"(segments of {result['segment']:,})", path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--workdir', required=True, help='a trained LM workdir')
  ap.add_argument('--bytes', type=int, default=1 << 20)
  ap.add_argument('--segment', type=int, default=4096)
  ap.add_argument('--out', default='benchmarks/results/stream_1m')
  args = ap.parse_args()
  config = runs.workdir_config(args.workdir)
  runs.evaluation_config(config, stream_segment=args.segment)  # refuses a kind that can't
  doc, sources = long_document(config, args.bytes)
  model = model_lib.build_model(config.model)
  restored = checkpoint.restore_workdir(args.workdir, config, model, None, params_only=True)
  batch = {'inputs': doc[None, :-1].astype(np.int32), 'targets': doc[None, 1:].astype(np.int32),
           'weights': np.ones((1, args.bytes), np.float32)}
  start_time = time.perf_counter()
  last = start_time

  def progress(end, n):
    nonlocal last
    now = time.perf_counter()
    if now - last > 10 or end == n:
      rate = end / (now - start_time)
      print(f"{end:>10,} / {n:,} bytes  {rate:,.0f} bytes/s  ETA {(n - end) / rate:,.0f} s  "
            f"peak RSS {harness.peak_rss_mb():,.0f} MiB", flush=True)
      last = now

  loss_by_pos = evaluator.stream_sums(model, restored.params, batch, args.segment,
                                       progress)['loss_by_pos']
  seconds = time.perf_counter() - start_time
  per_token, fixed = decode.state_footprint(model)
  octaves = evaluator.bits_by_context(loss_by_pos, np.ones(args.bytes))
  result = {'workdir': args.workdir, 'step': restored.step, 'attention': config.model.attention,
            'trained_seq_len': config.data.seq_len, 'trained_on': config.data.name,
            'bytes': args.bytes, 'segment': args.segment, 'sources': sources,
            'seconds': seconds, 'bytes_per_s': args.bytes / seconds,
            'peak_rss_mb': harness.peak_rss_mb(),
            'state_bytes': per_token * args.bytes + fixed,
            'bits_per_byte': float(loss_by_pos.mean() / evaluator.LN2),
            'bits_by_context': octaves}
  harness.write_results(args.out + '.json', args, result=result)
  plot(result, args.out + '.png')
  print(f"{args.bytes:,} bytes in {seconds:.0f} s ({args.bytes / seconds:,.0f} bytes/s), peak "
        f"RSS {result['peak_rss_mb']:,.0f} MiB, {result['bits_per_byte']:.4f} bits/byte")
  print('by bytes of context: ' + '  '.join(f'{k} {v:.3f}' for k, v in octaves.items()))
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
