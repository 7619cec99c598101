"""A plain PyTorch GPT, the reference a researcher would otherwise run (peers.py drives it).

Pre-LN blocks as in the common minimal GPT trainers: x + attn(LN(x)), x + MLP(LN(x)),
attention through torch.nn.functional.scaled_dot_product_attention (causal), GELU MLP,
learned absolute position embeddings, a byte vocabulary (256), AdamW. Runs in its own
venv (`make peers-venv`: torch==2.13.0, CPU build); never imported by the project.

    .venv-torch/bin/python benchmarks/torch_gpt.py --mode=train --n=4096
prints one JSON line: seconds per step (median of --repeats after a warm-up), tokens/s,
peak RSS.
"""

import argparse
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
    x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
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
  args = ap.parse_args()
  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count() or 1)
  if args.mode == 'layer':  # one block's attention sub-layer, forward + backward
    block = Block(args.width, args.heads, args.mlp)
    x = torch.randn(1, args.n, args.width, requires_grad=True)

    def step():
      block.zero_grad(set_to_none=True)
      x.grad = None
      (block.attend(x) ** 2).mean().backward()
  else:
    model = GPT(args.n, args.width, args.heads, args.mlp, args.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)
    tokens = torch.randint(0, 256, (1, args.n + 1))

    def step():
      opt.zero_grad(set_to_none=True)
      logits = model(tokens[:, :-1])
      F.cross_entropy(logits.view(-1, 256), tokens[:, 1:].reshape(-1)).backward()
      opt.step()
  step()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  print(json.dumps({'status': 'ok', 'seconds': seconds, 'tokens_per_sec': args.n / seconds,
                    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                    'torch': torch.__version__}))


if __name__ == '__main__':
  main()
