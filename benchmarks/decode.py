"""Per-token decoding latency and decoding-state memory against context length.

    python benchmarks/decode.py [--out benchmarks/results/decode] [--rounds 2]

Variants are config modules of configs/ with optional overrides (`NAME[:ARG]`, as for
train.py): by default `m64` (causal_latent, fixed state), `full` (KV cache), `mla`
(compressed cache, absorbed decode steps) and `mla:mla_decode=naive` (the same cache,
keys and values rebuilt at every step); the three LMs hold the same number of
parameters (D=128, 4 layers, H=4). Batch 1, float32. For each context length L the
state holds L tokens, then `--steps` greedy decode steps run as one jitted `lax.scan`
(chunk ends and their refine step included); the median of three runs divided by the
steps is the time per token. At each length the variants run in paired alternating
rounds (harness.paired_rounds), and the JSON holds every round and the median and range
of each variant's ms/token over `--reference`'s within a round. The state is a real
prefill of L random bytes up to --max_prefill tokens, and for a fixed-size state at
every length; above it a growing cache is zeros with the position set to L, which
costs exactly the same per decoded token. Writes <out>.json and <out>.png.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics

import jax
import jax.numpy as jnp

from benchmarks import harness
from latent_flax import model as model_lib
from latent_flax.attention import registry
from latent_flax.evaluation import decode

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

  _, seconds = harness.time_fn(run, repeats)  # compile + warm-up, then the median of `repeats`
  return {'variant': variant, 'kind': kind.name, 'context': length, 'steps': steps,
          'state': 'prefill' if real else 'zeros', 'ms_per_token': 1e3 * seconds / steps,
          'tokens_per_s': steps / seconds, 'state_mib': state_bytes / 2**20,
          'cache_len': cache_len}


def summarize(rounds: dict[str, list[dict]], reference: str) -> list[dict]:
  """Per variant at one length: the median ms/token over rounds, and the median and range
  of its ms/token over the reference's within each round."""
  return [{'variant': v, 'context': recs[0]['context'],
           'ms_per_token': statistics.median(r['ms_per_token'] for r in recs),
           'state_mib': recs[-1]['state_mib'],
           f'time_vs_{reference}': harness.ratio_stats(recs, rounds.get(reference, []),
                                                       key='ms_per_token')}
          for v, recs in rounds.items()]


def plot(summary: list[dict], path: str) -> None:
  plt = harness.io_utils.pyplot()
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  for v in dict.fromkeys(s['variant'] for s in summary):
    pts = [s for s in summary if s['variant'] == v]
    ax_t.plot([s['context'] for s in pts], [s['ms_per_token'] for s in pts], 'o-', label=v)
    ax_m.plot([s['context'] for s in pts], [s['state_mib'] for s in pts], 'o-', label=v)
  for ax, ylabel in ((ax_t, 'ms per generated token'), (ax_m, 'decoding state (MiB)')):
    harness.log_axes(ax, 'context length (tokens already seen)', ylabel)
  harness.save_figure(fig, 'Decoding, batch 1: time per token and state against context', path)


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
  if args.reference not in variants:
    raise SystemExit(f"decode.py: --reference={args.reference!r} is not one of --variants "
                     f"{variants}; add it or pick one of them.")
  for v in variants:  # a bad name fails here, before anything is timed
    load_variant(v)
  records, summary = [], []

  def shown(v, rec):
    print(f"{v:22s} context {rec['context']:6d} round {rec['round']}: "
          f"{rec['ms_per_token']:7.2f} ms/token ({rec['tokens_per_s']:7.1f} tokens/s), state "
          f"{rec['state_mib']:8.2f} MiB [{rec['state']}]", flush=True)

  for length in map(int, args.lengths.split(',')):
    rounds = harness.paired_rounds(
        variants, lambda v: measure(v, length, args.steps, args.max_prefill), args.rounds,
        on_record=shown)
    records += [r for recs in rounds.values() for r in recs]
    summary += summarize(rounds, args.reference)
    harness.write_results(args.out + '.json', args, records=records, summary=summary)
  for s in summary:
    print(f"{s['variant']:22s} context {s['context']:6d}: {s['ms_per_token']:7.2f} ms/token, "
          f"x {harness.format_ratio(s[f'time_vs_{args.reference}'])} of {args.reference}")
  plot(summary, args.out + '.png')
  print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == '__main__':
  main()
