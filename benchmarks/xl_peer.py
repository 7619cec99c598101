"""The Transformer-XL peer of the books evidence (docs/results/books): lucidrains'
x-transformers, trained and read on exactly the bytes our carried runs train and read.

    python benchmarks/xl_peer.py export --workdir=runs/books/<a carried run> --out=runs/xl_peer
    .venv-torch/bin/python benchmarks/xl_peer.py train --data=runs/xl_peer \\
        --out=docs/results/books/xl_peer.json [--steps=N]

`export` (the project's venv) writes the run's training batches (its document stream:
rows reading 64 KB book pieces and passkey documents in turn, `start` flags), the
validation documents context_use.py reads at 65,536 bytes and the passkey grid probe.py
reads (same seed, haystack, lengths, depths), with the run's shape and optimizer
settings, into one .npz. `train` (the torch venv: `make peers-venv`, which installs
x-transformers==2.31.10 beside torch; never project dependencies) builds
`TransformerWrapper(Decoder(rotary_pos_emb=True), max_mem_len=memory)` of the same width,
depth, heads and MLP width, trains it the Transformer-XL way (each row continues its
stream every step; `mems`, the layer inputs of the last `memory` tokens, carried and
detached across document boundaries as kimiyoung/transformer-xl's LMOrderedIterator does,
or masked out where a row starts a document with --reset), with AdamW (0.9, 0.95),
linear warm-up then cosine decay to 10%, clipping 1.0, weight decay on matrices; then reads
the validation documents in segments of the training length with mems against restarted
every segment, and the passkey grid (exact greedy retrieval = every answer byte the
argmax, as evaluation/retrieval.py). Writes one JSON: step times, tokens/s, losses,
bits/byte by octave, the grid, and the memory's bytes per sequence.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np

LENGTHS = (4096, 16384, 65536)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def export(args) -> None:
  from latent_flax import config_lib, tasks
  from latent_flax.evaluation import retrieval, runs
  from latent_flax.tasks import data as data_lib, haystack
  config = config_lib.load_saved_config(args.workdir)
  if not config.get('carry_state'):
    raise SystemExit(f"xl_peer.py export: {args.workdir} did not carry state; give a carried "
                     "run (its document stream is what the peer trains on).")
  task = tasks.get(config.data.name)
  batch = config.per_device_batch_size  # one device: the run's global batch
  steps = args.steps or config.num_train_steps
  stream = data_lib.DocumentStream(task.documents(config.data, 'train'), batch, config.seed)
  got = [next(stream) for _ in range(steps)]
  arrays = {k: np.stack([b[k] for b in got]).astype(np.uint8) for k in
            ('inputs', 'targets', 'weights', 'start')}
  n = args.length  # the windows context_use.py reads: each document's first n + 1 bytes
  docs = runs.evaluation_windows(config, n)
  if args.documents:
    docs = docs[:args.documents]
  arrays['validation'] = docs.astype(np.uint8)
  probe = haystack.get_probe('passkey')
  text = np.asarray(task.documents(config.data, 'validation').data)
  for length in LENGTHS:
    cell = [d for depth in DEPTHS for d in retrieval.documents(
        probe, length, depth, args.samples, 0, text, config.data)]
    arrays[f'passkey_{length}'] = np.stack([d.tokens for d in cell])
    arrays[f'passkey_{length}_answer'] = np.array([len(d.answer) for d in cell])
  m = config.model
  settings = {'width': m.emb_dim, 'depth': m.num_layers, 'heads': m.num_heads, 'mlp': m.mlp_dim,
              'seq_len': config.data.seq_len, 'memory': args.memory or m.memory or
              config.data.seq_len, 'batch': batch, 'steps': steps,
              'learning_rate': config.learning_rate, 'warmup_steps': config.warmup_steps,
              'weight_decay': config.weight_decay, 'grad_clip_norm': config.grad_clip_norm,
              'samples': args.samples, 'lengths': list(LENGTHS), 'depths': list(DEPTHS),
              'source_run': os.path.abspath(args.workdir), 'data': config.data.to_dict()}
  os.makedirs(args.out, exist_ok=True)
  np.savez(os.path.join(args.out, 'data.npz'), settings=json.dumps(settings), **arrays)
  print(f"wrote {args.out}/data.npz: {steps} steps x {batch} rows x {config.data.seq_len} bytes, "
        f"{len(docs)} validation documents of {n:,}, passkey grid {list(LENGTHS)} x "
        f"{list(DEPTHS)} x {args.samples}", flush=True)


def build(settings):
  from x_transformers import Decoder, TransformerWrapper
  s = settings
  return TransformerWrapper(
      num_tokens=256, max_seq_len=s['seq_len'], max_mem_len=s['memory'], use_abs_pos_emb=False,
      attn_layers=Decoder(dim=s['width'], depth=s['depth'], heads=s['heads'],
                          ff_mult=s['mlp'] / s['width'], rotary_pos_emb=True,
                          attn_flash=True))  # SDPA: 10x the einsum path on this CPU


class Memory:
  """mems and which of their positions a row may attend to (False before its document's
  start: the reset)."""

  def __init__(self, size: int):
    self.size, self.mems, self.valid = size, None, None

  def read(self, x, start=None):
    import torch
    if self.mems is not None and start is not None:
      self.valid = self.valid & ~torch.as_tensor(start, dtype=torch.bool)[:, None]
    if self.mems is None or bool(self.valid.all()):  # no mask: SDPA's fast path
      return self.mems, None
    return self.mems, [self.valid] * len(self.mems)

  def write(self, mems, n: int):
    import torch
    fresh = torch.ones(mems[0].shape[0], n, dtype=torch.bool)
    self.valid = fresh if self.valid is None else torch.cat([self.valid, fresh], 1)
    self.valid = self.valid[:, -self.size:]
    self.mems = mems


def schedule(step: int, s) -> float:
  warmup = min(s['warmup_steps'], s['steps'] - 1)
  if step < warmup:
    return s['learning_rate'] * step / max(warmup, 1)
  frac = min((step - warmup) / max(s['steps'] - warmup, 1), 1.0)
  return s['learning_rate'] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def read_logprobs(model, tokens, segment: int, memory: bool):
  """log-probabilities [B, N-1] of tokens[:, 1:], read `segment` at a time with mems (or
  restarted every segment)."""
  import torch
  x = torch.as_tensor(tokens[:, :-1].astype(np.int64))
  y = torch.as_tensor(tokens[:, 1:].astype(np.int64))
  mem, out = Memory(model.max_mem_len), []
  with torch.no_grad():
    for lo in range(0, x.shape[1], segment):
      mems, masks = mem.read(None) if memory else (None, None)
      logits, new = model(x[:, lo:lo + segment], mems=mems, mem_masks=masks, return_mems=True)
      if memory:
        mem.write(new, logits.shape[1])
      lp = torch.log_softmax(logits.float(), -1)
      out.append(lp.gather(-1, y[:, lo:lo + segment, None])[..., 0])
  return torch.cat(out, 1).numpy()


def train(args) -> None:
  import torch
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  data = np.load(os.path.join(args.data, 'data.npz'))
  s = json.loads(str(data['settings']))
  if args.steps:
    s['steps'] = args.steps
  model = build(s)
  decay = [p for p in model.parameters() if p.ndim >= 2]
  keep = [p for p in model.parameters() if p.ndim < 2]
  opt = torch.optim.AdamW([{'params': decay, 'weight_decay': s['weight_decay']},
                           {'params': keep, 'weight_decay': 0.0}],
                          lr=s['learning_rate'], betas=(0.9, 0.95))
  params = sum(p.numel() for p in model.parameters())
  print(f"x-transformers Transformer-XL: {params:,} params, memory {s['memory']:,} tokens, "
        f"{s['steps']} steps x {s['batch']} x {s['seq_len']}", flush=True)
  mem, losses, times = Memory(s['memory']), [], []
  model.train()
  began = time.perf_counter()
  for step in range(s['steps']):
    t0 = time.perf_counter()
    for group in opt.param_groups:
      group['lr'] = schedule(step, s)
    x = torch.as_tensor(data['inputs'][step].astype(np.int64))
    y = torch.as_tensor(data['targets'][step].astype(np.int64))
    w = torch.as_tensor(data['weights'][step].astype(np.float32))
    mems, masks = mem.read(x, data['start'][step] if args.reset else None)
    logits, new = model(x, mems=mems, mem_masks=masks, return_mems=True)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction='none')
    loss = (ce * w).sum() / w.sum().clamp(min=1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), s['grad_clip_norm'])
    opt.step()
    mem.write(new, x.shape[1])
    losses.append(float(loss.detach()))
    times.append(time.perf_counter() - t0)
    if (step + 1) % 20 == 0 or step + 1 == s['steps']:
      rate = np.median(times[1:] or times)
      print(f"step {step + 1:>6}/{s['steps']}  loss {losses[-1]:.4f} nats/byte  "
            f"{1 / rate:.2f} steps/s  {s['batch'] * s['seq_len'] / rate:,.0f} tokens/s  "
            f"ETA {rate * (s['steps'] - step - 1) / 60:.1f} min", flush=True)
  train_s = time.perf_counter() - began
  model.eval()
  result = {'peer': 'x-transformers', 'x_transformers': _version('x-transformers'),
            'torch': torch.__version__, 'params': params, 'settings': s,
            'memory_bytes_per_sequence': 4 * s['depth'] * s['memory'] * s['width'],
            'train_seconds': train_s, 'seconds_per_step': float(np.median(times[1:])),
            'tokens_per_s': s['batch'] * s['seq_len'] / float(np.median(times[1:])),
            'loss_by_step': losses}
  val = data['validation']
  bits = {}
  for how, memory in (('streamed', True), ('restarted', False)):
    lp = np.concatenate([read_logprobs(model, val[i:i + 4], s['seq_len'], memory)
                         for i in range(0, len(val), 4)])
    bits[how] = -lp / np.log(2)
    print(f"validation, {how}: {bits[how].mean():.4f} bits/byte", flush=True)
  n = val.shape[1] - 1
  octave = lambda b, lo, hi: float(b[:, lo - 1:hi - 1].mean())  # prediction at context p
  result['validation'] = {
      'documents': int(len(val)), 'length': n,
      'bits_per_byte': {k: float(v.mean()) for k, v in bits.items()},
      'last_octave': {str(L): {k: octave(v, L // 2, L) for k, v in bits.items()}
                      for L in (4096, 16384, n)},
      'buckets': {f'{lo}-{hi - 1}': {k: octave(v, lo, hi) for k, v in bits.items()}
                  for lo, hi in ((4096, 8192), (8192, 16384), (16384, 32768), (32768, n))}}
  grid = {'accuracy': [], 'answer_logprob': []}
  for length in s['lengths']:
    docs, answer = data[f'passkey_{length}'], data[f'passkey_{length}_answer']
    lp = np.concatenate([_answer_scores(model, docs[i:i + 4], answer[i:i + 4], s['seq_len'])
                         for i in range(0, len(docs), 4)])
    k = s['samples']
    grid['accuracy'].append([float(lp[j * k:(j + 1) * k, 0].mean()) for j in range(len(s['depths']))])
    grid['answer_logprob'].append([float(lp[j * k:(j + 1) * k, 1].mean())
                                   for j in range(len(s['depths']))])
    print(f"passkey {length:>7,}: exact by depth {grid['accuracy'][-1]}", flush=True)
  result['passkey'] = {'lengths': s['lengths'], 'depths': s['depths'], **grid,
                       'grid_layout': 'grid[i][j]: length i, depth j'}
  result.update(date=datetime.date.today().isoformat(), command=' '.join(sys.argv),
                machine={'platform': platform.platform(), 'cpu_count': os.cpu_count()})
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)
  print(f"wrote {args.out}", flush=True)


def _answer_scores(model, docs, answer_lengths, segment: int) -> np.ndarray:
  """[B, 2]: exact retrieval (every answer byte the argmax, teacher-forced) and the
  answer's log-probability (nats), reading through the memory."""
  import torch
  x = torch.as_tensor(docs[:, :-1].astype(np.int64))
  mem, kept = Memory(model.max_mem_len), []
  with torch.no_grad():
    for lo in range(0, x.shape[1], segment):
      mems, masks = mem.read(None)
      logits, new = model(x[:, lo:lo + segment], mems=mems, mem_masks=masks, return_mems=True)
      mem.write(new, logits.shape[1])
      kept.append(logits[:, -32:].float())
  tail = torch.log_softmax(torch.cat(kept, 1)[:, -32:], -1).numpy()
  out = []
  for row, a in enumerate(answer_lengths):
    want = docs[row, -a:].astype(np.int64)
    lp = tail[row, -a:]
    out.append((float((lp.argmax(-1) == want).all()),
                float(np.take_along_axis(lp, want[:, None], 1).sum())))
  return np.array(out)


def _version(name: str) -> str:
  from importlib import metadata
  return metadata.version(name)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = ap.add_subparsers(dest='mode', required=True)
  e = sub.add_parser('export', help="write a carried run's batches and probes (project venv)")
  e.add_argument('--workdir', required=True)
  e.add_argument('--out', required=True)
  e.add_argument('--steps', type=int, default=0, help='default: the run\'s num_train_steps')
  e.add_argument('--memory', type=int, default=0, help="default: the run's model.memory")
  e.add_argument('--length', type=int, default=65536, help='validation bytes read')
  e.add_argument('--documents', type=int, default=0,
                 help="only the first this many validation documents (context_use.py's "
                      "--documents; default: all)")
  e.add_argument('--samples', type=int, default=4, help='passkey documents per cell')
  t = sub.add_parser('train', help='train and read the peer (torch venv)')
  t.add_argument('--data', required=True)
  t.add_argument('--out', required=True)
  t.add_argument('--steps', type=int, default=0, help='default: the exported steps')
  t.add_argument('--reset', action='store_true',
                 help="mask the memory where a row starts a document (our carried runs' "
                      "reset; default: Transformer-XL's continuous streams, ~1.4x slower "
                      "here with the mask)")
  args = ap.parse_args()
  export(args) if args.mode == 'export' else train(args)


if __name__ == '__main__':
  main()
