"""Autoregressive generation and streaming over the model's three decoding modes.

  decode='prefill'  the parallel pass over a prompt, writing each layer's state: `prefill`
  decode='step'     one token per sequence against the state: `decode_step`, `generate`
  decode='extend'   S more tokens per sequence in parallel after the state: `extend`, `stream`

Per layer, causal_latent keeps a fixed-size state of O((M + C) * D) numbers (the
running compress triple, the expand keys/values of the last finished chunk's
refined latents, the current chunk's keys/values); full attention keeps a KV
cache of O(cache_len * D). Each token costs O((M + C) * D + D^2) for the
latent block, plus one O(M^2 * D + M * D^2) refine at each chunk end, versus
O(cache_len * D + D^2) for full attention.

    logits_BV, cache = prefill(model, params, prompt_BP, cache_len)
    logits_BV, cache = decode_step(model, params, cache, token_B)
    logits_BSV, cache = extend(model, params, cache, tokens_BS)
    new_BT = generate(model, params, prompt_BP, 200, jax.random.key(0), Sampling(0.8, top_p=0.95))
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from latent_flax import model as model_lib


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How the next token is drawn from the logits."""

  temperature: float = 1.0  # 0 = greedy (argmax)
  top_k: int = 0            # keep the k most likely tokens; 0 = all
  top_p: float = 1.0        # keep the smallest set with probability >= top_p; 1 = all

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy).")
    if not 0 <= self.top_k <= model_lib.VOCAB_SIZE:
      raise ValueError(f"top_k={self.top_k} must be in [0, {model_lib.VOCAB_SIZE}] (0 = off).")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 = off).")


@functools.partial(jax.jit, static_argnames=('model', 'cache_len', 'every_position'))
def prefill(model: model_lib.LanguageModel, params, prompt_BP: jax.Array,
            cache_len: int | None = None, every_position: bool = False):
  """Parallel pass over the prompt: (logits of its last position [B, V], or of every
  position [B, P, V] with `every_position`; decoding state).

  The state equals what feeding the prompt one token at a time would leave.
  `cache_len` is the longest length the state must hold (full attention only).
  """
  logits_BPV, variables = model.apply({'params': params}, prompt_BP, decode='prefill',
                                      cache_len=cache_len, mutable=['cache'])
  return (logits_BPV if every_position else logits_BPV[:, -1]), variables['cache']


@functools.partial(jax.jit, static_argnames=('model',), donate_argnames=('cache',))
def decode_step(model: model_lib.LanguageModel, params, cache, token_B: jax.Array):
  """Feeds one token per sequence: (logits of the next token [B, V], updated state)."""
  logits_B1V, variables = model.apply({'params': params, 'cache': cache}, token_B[:, None],
                                      decode='step', mutable=['cache'])
  return logits_B1V[:, 0], variables['cache']


@functools.partial(jax.jit, static_argnames=('model',), donate_argnames=('cache',))
def extend(model: model_lib.LanguageModel, params, cache, tokens_BS: jax.Array):
  """Feeds S more tokens per sequence in parallel after those the state holds: (logits
  [B, S, V], updated state), equal to feeding them one by one (a long text in segments)."""
  logits_BSV, variables = model.apply({'params': params, 'cache': cache}, tokens_BS,
                                      decode='extend', mutable=['cache'])
  return logits_BSV, variables['cache']


@functools.partial(jax.jit, static_argnames=('model',))
def carried(model: model_lib.LanguageModel, params, carry, tokens_BS: jax.Array):
  """One segment read with the state carried across training windows (the train step's
  forward pass): (logits [B, S, V], the state it leaves)."""
  return model.apply({'params': params}, tokens_BS, carry=carry)


def stream(model: model_lib.LanguageModel, params, tokens_BN, segment: int):
  """Logits of every position of tokens_BN, computed `segment` tokens at a time, each
  segment starting from the state the previous one left; yields (start, logits [B, S, V]).

  Equals one parallel pass over the whole sequence (tests/test_decode.py), in the memory
  of one segment plus the decoding state: fixed for causal_latent, a KV cache of the
  whole length for kinds that cache. A model with a Transformer-XL memory
  (config.model.memory > 0) reads as it was trained: each segment attends to itself and
  the last `memory` tokens' keys and values, not to the whole past (tests/test_carry.py).
  """
  n = tokens_BN.shape[1]
  if segment < 1:
    raise ValueError(f"segment={segment} must be >= 1 token.")
  if model.cfg.memory:
    carry = model_lib.fresh_carry(model.cfg, tokens_BN.shape[0])
    for start in range(0, n, segment):
      logits_BSV, carry = carried(model, params, carry, tokens_BN[:, start:start + segment])
      yield start, logits_BSV
    return
  logits_BSV, cache = prefill(model, params, tokens_BN[:, :segment], n, every_position=True)
  yield 0, logits_BSV
  for start in range(segment, n, segment):
    logits_BSV, cache = extend(model, params, cache, tokens_BN[:, start:start + segment])
    yield start, logits_BSV


def filter_logits(logits_BV: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Sets to -inf every logit outside the top-k and outside the top-p nucleus."""
  if top_k:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    num_kept_B1 = jnp.sum(mass_before_BV < top_p, axis=-1, keepdims=True)  # >= 1
    cutoff_B1 = jnp.take_along_axis(sorted_BV, num_kept_B1 - 1, axis=-1)
    logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
  return logits_BV


def sample_token(logits_BV: jax.Array, rng: jax.Array, sampling: Sampling) -> jax.Array:
  """The next token per sequence, int32 [B]."""
  if sampling.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = filter_logits(logits_BV / sampling.temperature, sampling.top_k, sampling.top_p)
  return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'sampling'))
def generate(model: model_lib.LanguageModel, params, prompt_BP: jax.Array, max_new_tokens: int,
             rng: jax.Array, sampling: Sampling = Sampling()) -> jax.Array:
  """Samples max_new_tokens after each prompt: int32 [B, max_new_tokens].

  One compiled program: the prefill, then a `lax.scan` of decode steps. Token i
  is drawn with `fold_in(rng, i)`, so a seed gives the same text every time.
  """
  if prompt_BP.shape[1] < 1 or max_new_tokens < 1:
    raise ValueError("generate needs a prompt of at least one token and max_new_tokens >= 1.")
  logits_BV, cache = prefill(model, params, prompt_BP, prompt_BP.shape[1] + max_new_tokens)

  def one_token(carry, i):
    logits_BV, cache = carry
    token_B = sample_token(logits_BV, jax.random.fold_in(rng, i), sampling)
    logits_BV, cache = decode_step(model, params, cache, token_B)
    return (logits_BV, cache), token_B

  _, tokens_TB = jax.lax.scan(one_token, (logits_BV, cache), jnp.arange(max_new_tokens))
  return tokens_TB.T


def state_bytes(cache) -> int:
  """Bytes held by a decoding state (all layers)."""
  return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(cache)))


def state_footprint(model: model_lib.LanguageModel) -> tuple[float, int]:
  """(bytes per token of context, bytes that do not grow) of one sequence's decoding state,
  all layers, from the state's shapes (nothing is computed). A model with a Transformer-XL
  memory streams through it (stream): its memory's bytes, fixed."""
  if model.cfg.memory:
    return 0.0, state_bytes(jax.eval_shape(lambda: model_lib.fresh_carry(model.cfg, 1)))
  tokens = jax.ShapeDtypeStruct((1, 8), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), tokens)['params']
  short, long = (state_bytes(jax.eval_shape(lambda p: prefill(model, p, tokens, n), params)[1])
                 for n in (64, 128))
  per_token = (long - short) / 64
  return per_token, int(short - 64 * per_token)
