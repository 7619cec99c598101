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


import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from latent_flax.training import checkpoint
from latent_flax.tasks import data
from latent_flax.evaluation import decode, runs, evaluator
from latent_flax.system import io_utils  # noqa: E402
from latent_flax import model as model_lib  # noqa: E402
from latent_flax.tasks import corpus  # noqa: E402


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
            f"peak RSS {io_utils.peak_rss_mb():,.0f} MiB", flush=True)
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
            'peak_rss_mb': io_utils.peak_rss_mb(),
            'state_bytes': per_token * args.bytes + fixed,
            'bits_per_byte': float(loss_by_pos.mean() / evaluator.LN2),
            'bits_by_context': octaves}
  io_utils.write_json(args.out + '.json', {'config': vars(args), 'machine': common.machine_info(),
                                           'result': result})
  runs.plot_by_context({'dataset': 'one document', 'split': f"{args.bytes:,} bytes",
                            'step': restored.step, 'windows': 'one',
                            'seq_len': args.bytes, 'stream_segment': args.segment,
                            'bits_by_context': octaves}, args.out + '.png')
  print(f"{args.bytes:,} bytes in {seconds:.0f} s ({args.bytes / seconds:,.0f} bytes/s), peak "
        f"RSS {result['peak_rss_mb']:,.0f} MiB, {result['bits_per_byte']:.4f} bits/byte")
  print('by bytes of context: ' + '  '.join(f'{k} {v:.3f}' for k, v in octaves.items()))
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
