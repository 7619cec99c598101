"""Per-token decoding latency and decoding-state memory against context length.

    python benchmarks/decode.py [--out benchmarks/results/decode]

The language model of configs/m64.py (D=128, 4 layers, H=4, M=64, C=128), batch 1,
float32, for causal_latent and full attention. For each context length L the state
is built for L tokens, then `--steps` greedy decode steps run as one jitted
`lax.scan` (so chunk ends and their refine step are included); the median of
three runs divided by the steps is the time per token. The state is a real
prefill of L random bytes, except for full attention above --max_full_prefill,
whose O(L^2) prefill does not fit in memory here: its KV cache is then zeros with
the position set to L, which costs exactly the same per decoded token.
Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402
from configs import m64  # noqa: E402
from latent_flax import decode  # noqa: E402
from latent_flax import model as model_lib  # noqa: E402
from latent_flax.attention import registry  # noqa: E402

LENGTHS = [1024, 4096, 16384, 65536]
KINDS = ['causal_latent', 'full']


@functools.partial(jax.jit, static_argnames=('model', 'steps'), donate_argnames=('cache',))
def greedy_steps(model, params, cache, token_B, steps: int):
  def one(carry, _):
    cache, token_B = carry
    logits_BV, cache = decode.decode_step(model, params, cache, token_B)
    return (cache, jnp.argmax(logits_BV, -1).astype(jnp.int32)), None
  (cache, token_B), _ = jax.lax.scan(one, (cache, token_B), None, length=steps)
  return cache, token_B


def build_state(model, params, length: int, cache_len: int, real: bool):
  prompt = jax.random.randint(jax.random.key(0), (1, length), 0, model_lib.VOCAB_SIZE)
  if real:
    return decode.prefill(model, params, prompt, cache_len)[1]
  shapes = jax.eval_shape(lambda: decode.prefill(model, params, prompt, cache_len))[1]
  state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.asarray(length, x.dtype) if p[-1].key == 'index' else x, state)


def measure(kind: str, length: int, steps: int, max_full_prefill: int) -> dict:
  config = m64.get_config()
  config.model.attention = kind
  model = model_lib.build_model(config.model)
  params = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params']
  repeats = 3
  cache_len = length + steps * (repeats + 2)
  # A state that grows with the length is prefilled for real only up to max_full_prefill.
  real = registry.get(kind).decode != 'cache' or length <= max_full_prefill
  cache = build_state(model, params, length, cache_len, real)
  jax.block_until_ready(cache)
  state_bytes = decode.state_bytes(cache)
  holder = {'cache': cache, 'token': jnp.zeros((1,), jnp.int32)}

  def run():  # the state carries on from run to run, as in a long generation
    holder['cache'], holder['token'] = greedy_steps(model, params, holder['cache'],
                                                    holder['token'], steps)
    return holder['token']

  _, seconds = common.time_fn(run, repeats)  # compile + warm-up, then the median of `repeats`
  return {'kind': kind, 'context': length, 'steps': steps, 'state': 'prefill' if real else
          'zeros', 'ms_per_token': 1e3 * seconds / steps, 'tokens_per_s': steps / seconds,
          'state_mib': state_bytes / 2**20}


def plot(records: list[dict], path: str) -> None:
  from latent_flax import io_utils
  plt = io_utils.pyplot()
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  for kind in KINDS:
    pts = [r for r in records if r['kind'] == kind]
    ax_t.plot([r['context'] for r in pts], [r['ms_per_token'] for r in pts], 'o-', label=kind)
    ax_m.plot([r['context'] for r in pts], [r['state_mib'] for r in pts], 'o-', label=kind)
  for ax, ylabel in ((ax_t, 'ms per generated token'), (ax_m, 'decoding state (MiB)')):
    common.style_log_axes(ax, 'context length (tokens already seen)', ylabel)
  common.save_figure(fig, 'Decoding, m64 model (D=128, 4 layers, M=64, C=128), batch 1, CPU', path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/decode')
  ap.add_argument('--lengths', default=','.join(map(str, LENGTHS)))
  ap.add_argument('--kinds', default=','.join(KINDS))
  ap.add_argument('--steps', type=int, default=256, help='decode steps per timed run')
  ap.add_argument('--max_full_prefill', type=int, default=4096)
  args = ap.parse_args()
  records = []
  for kind in args.kinds.split(','):
    for length in map(int, args.lengths.split(',')):
      rec = measure(kind, length, args.steps, args.max_full_prefill)
      records.append(rec)
      print(f"{kind:14s} context {length:6d}: {rec['ms_per_token']:7.2f} ms/token "
            f"({rec['tokens_per_s']:7.1f} tokens/s), state {rec['state_mib']:8.2f} MiB "
            f"[{rec['state']}]", flush=True)
      common.write_records(args, records)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
