"""Per-token decoding latency and decoding-state memory against context length.

    python benchmarks/decode.py [--out benchmarks/results/decode] [--rounds 2]

Variants are config modules of configs/ with optional overrides (`NAME[:ARG]`, as for
train.py): by default `m64` (causal_latent, fixed state), `full` (KV cache), `mla`
(compressed cache, absorbed decode steps) and `mla:mla_decode=naive` (the same cache,
keys and values rebuilt at every step); the three LMs hold the same number of
parameters (D=128, 4 layers, H=4). Batch 1, float32. For each context length L the
state holds L tokens, then `--steps` greedy decode steps run as one jitted `lax.scan`
(chunk ends and their refine step included); the median of three runs divided by the
steps is the time per token. Rounds go length by length with the variants back to
back, in alternating order, and the JSON holds every round and the paired ratio of
each variant's ms/token to `--reference`'s within a round. The state is a real
prefill of L random bytes up to --max_prefill tokens, and for a fixed-size state at
every length; above it a growing cache is zeros with the position set to L, which
costs exactly the same per decoded token. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402
from latent_flax.evaluation import decode  # noqa: E402
from latent_flax import model as model_lib  # noqa: E402
from latent_flax.attention import registry  # noqa: E402

LENGTHS = [1024, 4096, 16384, 65536]
VARIANTS = ['m64', 'full', 'mla', 'mla:mla_decode=naive']
REFERENCE = 'full'


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


@functools.lru_cache(maxsize=None)
def load_variant(variant: str):
  """(model, params, kind) of a variant 'NAME[:ARG]' of configs/NAME.py."""
  name, _, arg = variant.partition(':')
  config = importlib.import_module(f'configs.{name}').get_config(arg or None)
  model = model_lib.build_model(config.model)
  params = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params']
  return model, params, registry.get(config.model.attention)


def measure(variant: str, length: int, steps: int, max_prefill: int) -> dict:
  model, params, kind = load_variant(variant)
  repeats = 3
  cache_len = length + steps * (repeats + 2)
  real = kind.decode != 'cache' or length <= max_prefill
  cache = build_state(model, params, length, cache_len, real)
  jax.block_until_ready(cache)
  state_bytes = decode.state_bytes(cache)
  holder = {'cache': cache, 'token': jnp.zeros((1,), jnp.int32)}

  def run():  # the state carries on from run to run, as in a long generation
    holder['cache'], holder['token'] = greedy_steps(model, params, holder['cache'],
                                                    holder['token'], steps)
    return holder['token']

  _, seconds = common.time_fn(run, repeats)  # compile + warm-up, then the median of `repeats`
  return {'variant': variant, 'kind': kind.name, 'context': length, 'steps': steps,
          'state': 'prefill' if real else 'zeros', 'ms_per_token': 1e3 * seconds / steps,
          'tokens_per_s': steps / seconds, 'state_mib': state_bytes / 2**20,
          'cache_len': cache_len}


def summarize(records: list[dict], reference: str) -> list[dict]:
  """Per variant and length: median ms/token over rounds, and the median paired ratio
  ms/token / the reference's ms/token in the same round."""
  out = []
  for v in dict.fromkeys(r['variant'] for r in records):
    for n in dict.fromkeys(r['context'] for r in records):
      pts = [r for r in records if r['variant'] == v and r['context'] == n]
      if not pts:
        continue
      ref = {r['round']: r['ms_per_token'] for r in records
             if r['variant'] == reference and r['context'] == n}
      ratios = [r['ms_per_token'] / ref[r['round']] for r in pts if r['round'] in ref]
      out.append({'variant': v, 'context': n,
                  'ms_per_token': statistics.median(r['ms_per_token'] for r in pts),
                  'state_mib': pts[-1]['state_mib'],
                  f'time_vs_{reference}': statistics.median(ratios) if ratios else None})
  return out


def plot(summary: list[dict], path: str) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  for v in dict.fromkeys(s['variant'] for s in summary):
    pts = [s for s in summary if s['variant'] == v]
    ax_t.plot([s['context'] for s in pts], [s['ms_per_token'] for s in pts], 'o-', label=v)
    ax_m.plot([s['context'] for s in pts], [s['state_mib'] for s in pts], 'o-', label=v)
  for ax, ylabel in ((ax_t, 'ms per generated token'), (ax_m, 'decoding state (MiB)')):
    common.style_log_axes(ax, 'context length (tokens already seen)', ylabel)
  common.save_figure(fig, 'Decoding, D=128, 4 layers, H=4, equal parameters, batch 1, CPU',
                     path)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/decode')
  ap.add_argument('--lengths', default=','.join(map(str, LENGTHS)))
  ap.add_argument('--variants', default=','.join(VARIANTS),
                  help='config modules of configs/, NAME or NAME:ARG (ARG as for train.py)')
  ap.add_argument('--reference', default=REFERENCE)
  ap.add_argument('--rounds', type=int, default=2)
  ap.add_argument('--steps', type=int, default=256, help='decode steps per timed run')
  ap.add_argument('--max_prefill', type=int, default=4096)
  args = ap.parse_args()
  variants = args.variants.split(',')
  for v in variants:  # a bad name fails here, before anything is timed
    load_variant(v)
  records = []
  for length in map(int, args.lengths.split(',')):
    for rnd in range(args.rounds):
      for v in (variants if rnd % 2 == 0 else variants[::-1]):
        rec = {**measure(v, length, args.steps, args.max_prefill), 'round': rnd}
        records.append(rec)
        print(f"{v:22s} context {length:6d} round {rnd}: {rec['ms_per_token']:7.2f} ms/token "
              f"({rec['tokens_per_s']:7.1f} tokens/s), state {rec['state_mib']:8.2f} MiB "
              f"[{rec['state']}]", flush=True)
        common.write_records(args, records, summary=summarize(records, args.reference))
  summary = summarize(records, args.reference)
  plot(summary, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
