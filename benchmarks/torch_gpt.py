"""A plain PyTorch GPT, the reference a researcher would otherwise run (peers.py drives it).

Pre-LN blocks as in the common minimal GPT trainers: x + attn(LN(x)), x + MLP(LN(x)),
attention through torch.nn.functional.scaled_dot_product_attention (causal), GELU MLP,
learned absolute position embeddings, a byte vocabulary (256), AdamW. Runs in its own
venv (`make peers-venv`: torch==2.13.0, CPU build), or with a machine's own torch on a GPU
(benchmarks/accelerator_check.py); never imported by the project.

    .venv-torch/bin/python benchmarks/torch_gpt.py --mode=train --n=4096
    python benchmarks/torch_gpt.py --device=cuda --dtype=bfloat16 --sdpa=flash --batch=4 --n=16384
prints one JSON line: seconds per step (median of --repeats after a warm-up), tokens/s
(batch x n per second), peak RSS, and on a GPU the allocator's peak (device_peak_mb).
`--dtype=bfloat16` computes under autocast with float32 parameters (as our bfloat16
models do); `--sdpa` pins SDPA's backend (flash: FlashAttention-2's kernel).
"""

import argparse
import contextlib
import json
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
  def __init__(self, width: int, heads: int, mlp: int):
    super().__init__()
    self.heads = heads
    self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
    self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
    self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width))

  def attend(self, x):
    """The attention sub-layer with its residual: x + W_O SDPA(W_QKV LN(x))."""
    b, n, d = x.shape
    q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
    split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
    y = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    return x + self.out(y.transpose(1, 2).reshape(b, n, d))

  def forward(self, x):
    x = self.attend(x)
    return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
  def __init__(self, n: int, width: int, heads: int, mlp: int, layers: int, vocab: int = 256):
    super().__init__()
    self.embed, self.pos = nn.Embedding(vocab, width), nn.Embedding(n, width)
    self.blocks = nn.ModuleList(Block(width, heads, mlp) for _ in range(layers))
    self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

  def forward(self, tokens):
    x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln(x))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--mode', choices=['layer', 'train'], default='train')
  ap.add_argument('--n', type=int, default=4096)
  ap.add_argument('--width', type=int, default=128)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--mlp', type=int, default=512)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--batch', type=int, default=1, help='rows per step (train mode)')
  ap.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
  ap.add_argument('--dtype', choices=['float32', 'bfloat16'], default='float32',
                  help='compute dtype (bfloat16: autocast, float32 parameters)')
  ap.add_argument('--sdpa', choices=['default', 'flash', 'efficient', 'math', 'cudnn'],
                  default='default', help="SDPA's backend ('default': torch chooses)")
  args = ap.parse_args()
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  device = torch.device(args.device)
  cuda = device.type == 'cuda'
  sync = torch.cuda.synchronize if cuda else (lambda: None)
  if args.mode == 'layer':  # one block's attention sub-layer, forward + backward
    block = Block(args.width, args.heads, args.mlp).to(device)
    x = torch.randn(1, args.n, args.width, requires_grad=True, device=device)

    def run():
      block.zero_grad(set_to_none=True)
      x.grad = None
      (block.attend(x).float() ** 2).mean().backward()
  else:
    model = GPT(args.n, args.width, args.heads, args.mlp, args.layers).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01,
                            fused=cuda)
    tokens = torch.randint(0, 256, (args.batch, args.n + 1), device=device)

    def run():
      opt.zero_grad(set_to_none=True)
      logits = model(tokens[:, :-1])
      F.cross_entropy(logits.reshape(-1, 256).float(), tokens[:, 1:].reshape(-1)).backward()
      opt.step()

  def step():
    with contextlib.ExitStack() as stack:
      if args.dtype == 'bfloat16':
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
      if args.sdpa != 'default':
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend = {'flash': SDPBackend.FLASH_ATTENTION, 'math': SDPBackend.MATH,
                   'efficient': SDPBackend.EFFICIENT_ATTENTION,
                   'cudnn': SDPBackend.CUDNN_ATTENTION}[args.sdpa]
        stack.enter_context(sdpa_kernel(backend))
      run()
    sync()

  t0 = time.perf_counter()
  step()
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  rows = args.batch if args.mode == 'train' else 1
  print(json.dumps({'status': 'ok', 'seconds': seconds, 'first_s': first,
                    'tokens_per_sec': rows * args.n / seconds,
                    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                    'device_peak_mb': torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                    'device_kind': torch.cuda.get_device_name() if cuda else 'cpu',
                    'sdpa': args.sdpa, 'torch': torch.__version__}))


if __name__ == '__main__':
  main()
