"""Chunked causal latent block (design section 2): the latent block as a language model.

Chunk k (C tokens) reads the latents only as a summary R_{k-1} of the chunks before
it, plus causal attention inside its own chunk. All prefix summaries S_k come from
one `jax.lax.associative_scan` over per-chunk online-softmax triples; step 2 is
batched over the K = ceil(N / C) chunks. O(N*(M+C)*D + K*M*M*D) time and
O(N*D + K*M*D) memory: no N x N matrix anywhere. The scan mathematics (pure functions
of arrays) is in prefix_scan.py; this module holds the parameters, the parallel pass
and the decoding paths, built from the same three steps.

Decay (`latent_decay='multiscale'`): each head's latent m weighs a token
exp(-lambda_hm) less per chunk of distance from the end of the prefix (exp(-lambda_hm / C)
per token), with lambda_hm learned and initialised to half-lives spread log-uniformly over
1 ... MAX_HALF_LIFE_CHUNKS chunks: some latents summarise the last chunk or two sharply,
others the whole past. The scan stays exact: an element also counts its chunks n, and
combining a with b scales a's weights by exp(-lambda * n_b) (its max shifts by lambda*n_b).

Positions: rotary embeddings on the in-chunk token-token part of step 3 only; the
token query meets latent keys un-rotated and its chunk's keys rotated, in one softmax.

Decoding modes (`decode=`), each layer's `State` in the mutable 'cache' collection
(see evaluation/decode.py):
  'prefill'  the parallel pass over a prompt; also writes the state that feeding its
             tokens one by one would leave.
  'extend'   S more tokens in parallel after the state (which may end inside a chunk):
             their outputs and the state after them (`_extend`).
  'step'     one token: O((M + C) * D + D^2), plus step 2 once per finished chunk
             (`_step`). Equal to 'extend' of one token, which would cost more per token:
             it lays out two whole chunks and refines both at every token.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_flax.system import sharding
from latent_flax.attention.latent import _LatentSteps
from latent_flax.attention.prefix_scan import (chunk_softmax_triples, expand_attention,
                                               prefix_scan, previous_chunk, seen_later)
from latent_flax.attention.primitives import heads_first, rotary_at, rotary_table, rotate
from latent_flax.attention.softmax import (NEG_INF, attend_two_parts, combine_softmax_triples,
                                           finish_softmax)


LATENT_DECAYS = ('none', 'multiscale')
MAX_HALF_LIFE_CHUNKS = 256.0  # the slowest initial decay of 'multiscale', in chunks


class State(NamedTuple):
  """One layer's decoding state after `index` tokens, O((M + C) * D) whatever the length.

  A pytree of arrays, stored leaf by leaf under these names in the 'cache' collection
  (cache['block_<i>']['attention'] is `State._asdict()`). With a decay, the triple is
  weighed as seen from the end of the chunk that holds position `index`.
  """

  index: jax.Array       # int32 []: tokens folded in so far
  compress_q: jax.Array  # [H, M, d]: the latents' compress queries, kept so that a step does
                         # not recompute them (`_extend` recomputes them from the parameters)
  m: jax.Array           # [B, H, M] float32: the prefix's compress triple: max score,
  l: jax.Array           # [B, H, M] float32: sum of exp,
  o: jax.Array           # [B, H, M, d] float32: exp-weighted values
  latent_k: jax.Array    # [B, H, M, d]: expand keys and values of R of the last finished
  latent_v: jax.Array    # chunk (zeros before the first chunk ends)
  chunk_k: jax.Array     # [B, H, C, d] float32: the current chunk's expand keys, rotated,
  chunk_v: jax.Array     # [B, H, C, d]: and values; zeros past its index % C tokens


def _first_slots(k_BHCd: jax.Array, v_BHCd: jax.Array, count) -> tuple[jax.Array, jax.Array]:
  """The chunk keys/values with every slot from `count` on zeroed (a State's chunk_k/v)."""
  keep = (jnp.arange(k_BHCd.shape[2]) < count)[None, None, :, None]
  return jnp.where(keep, k_BHCd, 0.0), jnp.where(keep, v_BHCd, 0).astype(v_BHCd.dtype)


class CausalLatentAttention(_LatentSteps):
  """Chunked causal latent block (design section 2).

  Chunk k reads the latents only as a summary R_{k-1} of the chunks before it,
  plus causal attention inside its own chunk. All prefix summaries S_k come from
  one `jax.lax.associative_scan` over per-chunk online-softmax triples; step 2
  is batched over chunks. Lengths that are not a multiple of `chunk_size` are
  padded at the end (padding sits after every real token and is never a key)
  and sliced off.

  Decoding (`decode='prefill'`, then `'step'` one token at a time or `'extend'` several,
  with a mutable 'cache' collection) keeps a `State` of O((M + C) * D) per layer whatever
  the length. Step 2 runs once per finished chunk (a step runs it under `nn.cond`), not
  once per token.
  """

  chunk_size: int = 128
  latent_decay: str = 'none'  # 'none' | 'multiscale' (module docstring)

  @nn.compact
  def __call__(self, x_BND: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True, decode: str | None = None,
               cache_len: int | None = None, carry: dict | None = None):
    del cache_len  # the latent state does not grow with the length
    N = x_BND.shape[1]
    st = self._steps(x_BND.shape[2])
    x_BND = x_BND.astype(self.dtype)
    if carry is not None:  # training past the window: (outputs, the next window's carry)
      if decode is not None or mask_BN is not None or N % self.chunk_size:
        raise ValueError("a carried state needs whole chunks, no decode mode and no mask.")
      return self._carried(st, x_BND, carry, deterministic)
    if decode == 'step':
      if N != 1:
        raise ValueError(f"decode='step' takes one token at a time, got {N}.")
      y_BND, state = self._step(st, self._read_state(), x_BND)
    elif decode == 'extend':
      y_BND, state = self._extend(st, self._read_state(), x_BND, deterministic)
    elif decode in (None, 'prefill'):
      y_BND, state = self._parallel(st, x_BND, mask_BN, deterministic, decode == 'prefill')
    else:
      raise ValueError(f"decode={decode!r}: use None, 'prefill', 'step' or 'extend'.")
    if state is not None:
      for name, value in state._asdict().items():
        self.put_variable('cache', name, value)
    return y_BND

  # ------------------------------------------------------------- the three steps --
  @nn.nowrap
  def _decay(self) -> jax.Array | None:
    """lambda_HM > 0 (log-weight lost per chunk of distance), or None without decay."""
    if self.latent_decay == 'none':
      return None
    if self.latent_decay not in LATENT_DECAYS:
      raise ValueError(f"latent_decay={self.latent_decay!r}: use one of {list(LATENT_DECAYS)}.")

    def init(key, shape, dtype):
      del key
      half_life_M = MAX_HALF_LIFE_CHUNKS ** jnp.linspace(0.0, 1.0, shape[1])
      return jnp.broadcast_to(jnp.log(jnp.log(2.0) / half_life_M), shape).astype(dtype)

    if self.has_variable('params', 'log_decay'):  # a later step of the same call reads it
      log_decay_HM = self.get_variable('params', 'log_decay')
    else:
      log_decay_HM = self.param('log_decay', init, (self.num_heads, self.num_latents),
                                self.param_dtype)
    return jnp.exp(log_decay_HM.astype(jnp.float32))

  @nn.nowrap
  def _compress_queries(self, st: dict, width: int) -> tuple[jax.Array, jax.Array]:
    """The latents L [M, D] and their compress queries q_HMd."""
    latents_MD = self._latents(width)
    q_HMd = jnp.swapaxes(st['compress'].project_q(st['ln_latents_compress'](latents_MD)), 0, 1)
    return latents_MD, q_HMd

  @nn.nowrap
  def _summaries(self, st: dict, latents_MD: jax.Array, l_BKHM: jax.Array,
                 o_BKHMd: jax.Array, deterministic: bool) -> jax.Array:
    """Step 1's output from prefix triples: S = L + MHA_compress(...), [B, K, M, D]."""
    attn_BKMHd = finish_softmax(l_BKHM, o_BKHMd).astype(self.dtype)
    return latents_MD[None, None] + st['drop'](st['compress'].project_out(attn_BKMHd),
                                               deterministic=deterministic)

  @nn.nowrap
  def _compress(self, st: dict, x_BKCD: jax.Array, valid_BKC: jax.Array | None,
                deterministic: bool, *, before=None, shards: int = 1):
    """Step 1 for every chunk's prefix: S_k = L + MHA_compress(LN(L), LN(X[chunks 0..k])).

    `before`: the triple of the tokens preceding chunk 0 (a State's, seen from the end of
    chunk 0), merged into every prefix. Returns S_BKMD, the prefix triples and q_HMd.
    """
    latents_MD, q_HMd = self._compress_queries(st, x_BKCD.shape[-1])
    k_BKCHd, v_BKCHd = st['compress'].project_kv(st['ln_tokens_compress'](x_BKCD))
    decay_HM = self._decay()
    triples = chunk_softmax_triples(q_HMd, heads_first(k_BKCHd), heads_first(v_BKCHd), valid_BKC,
                                    decay_HM)
    triples = prefix_scan(triples, decay_HM, shards)
    if before is not None:
      m_B1HM, l_B1HM, o_B1HMd = (x[:, None] for x in before)
      if decay_HM is not None:  # seen from the end of each chunk of x
        chunks_K = jnp.arange(x_BKCD.shape[1], dtype=jnp.float32)
        m_B1HM = seen_later(m_B1HM, decay_HM, chunks_K[None, :, None, None])
      triples = combine_softmax_triples((m_B1HM, l_B1HM, o_B1HMd), triples)
    return self._summaries(st, latents_MD, *triples[1:], deterministic), triples, q_HMd

  @nn.nowrap
  def _latent_kv(self, st: dict, r_MD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Step 3's keys and values of refined latents [..., M, D], head-major [..., H, M, d]."""
    return tuple(map(heads_first, st['expand'].project_kv(st['ln_latents_expand'](r_MD))))

  @nn.nowrap
  def _expand(self, st: dict, x_BKCD: jax.Array, kv_lat_BKHMd, valid_BKC: jax.Array | None,
              *, chunk_before=None, has_past_K=None):
    """Step 3: Y_t = MHA_expand(LN(X_t), [LN(R_{k-1}) ; LN(X[chunk k, <= t])]), [B, K, C, D].

    `kv_lat_BKHMd`: the latent keys/values each chunk reads. `chunk_before` (k_BHCd
    rotated, v_BHCd, j): the first j slots of chunk 0 are a State's tokens. Returns the
    outputs and the chunks' local keys (rotated if `chunk_before`) and values, head-major.
    """
    xe_BKCD = st['ln_tokens_expand'](x_BKCD)
    q_BKHCd = heads_first(st['expand'].project_q(xe_BKCD))
    k_loc_BKHCd, v_loc_BKHCd = map(heads_first, st['expand'].project_kv(xe_BKCD))
    if chunk_before is not None:
      chunk_k, chunk_v, j = chunk_before
      C, d = k_loc_BKHCd.shape[-2:]
      sin, cos = rotary_table(C, d)
      k_loc_BKHCd = rotate(k_loc_BKHCd, sin[None, None, None], cos[None, None, None])
      from_state = (jnp.arange(C) < j)[None, None, :, None]
      k_loc_BKHCd = k_loc_BKHCd.at[:, 0].set(jnp.where(from_state, chunk_k, k_loc_BKHCd[:, 0]))
      v_loc_BKHCd = v_loc_BKHCd.at[:, 0].set(jnp.where(from_state, chunk_v, v_loc_BKHCd[:, 0]))
    # Every [B, K, ...] operand on its chunks' seq shard (a no-op without a seq axis):
    # left to itself, XLA moves whole chunks between devices to transpose them.
    on_shard = lambda x: sharding.constrain(x, sharding.BATCH, 'seq')
    out_BKHCd = expand_attention(on_shard(q_BKHCd), *map(on_shard, kv_lat_BKHMd),
                                 on_shard(k_loc_BKHCd), on_shard(v_loc_BKHCd), valid_BKC,
                                 keys_rotated=chunk_before is not None, has_past_K=has_past_K)
    out_BKCHd = on_shard(heads_first(on_shard(out_BKHCd)))
    y_BKCD = st['expand'].project_out(out_BKCHd.astype(self.dtype))
    return y_BKCD, k_loc_BKHCd, v_loc_BKHCd

  # ------------------------------------------------------------ the parallel pass --
  @nn.nowrap
  def _parallel(self, st: dict, x_BND: jax.Array, mask_BN: jax.Array | None,
                deterministic: bool, with_state: bool):
    """All N tokens at once: (outputs, and with `with_state` the State after them)."""
    B, N, D = x_BND.shape
    C, M = self.chunk_size, self.num_latents
    K = -(-N // C)
    pad = K * C - N
    shards = sharding.axis_size('seq')
    x_BKCD = sharding.constrain(jnp.pad(x_BND, ((0, 0), (0, pad), (0, 0))).reshape(B, K, C, D),
                                sharding.BATCH, 'seq')  # chunks stay on their seq shard
    valid_BKC = None
    if mask_BN is not None or pad:
      mask_BN = jnp.ones((B, N), bool) if mask_BN is None else mask_BN.astype(bool)
      valid_BKC = jnp.pad(mask_BN, ((0, 0), (0, pad))).reshape(B, K, C)

    s_BKMD, triples, q_HMd = self._compress(st, x_BKCD, valid_BKC, deterministic, shards=shards)
    self.sow('intermediates', 'compressed', s_BKMD)
    # Step 2, batched over chunks: R_k = S_k + MHA_refine(LN(S_k), LN(S_k)).
    r_BKMD = self._refine(st, s_BKMD.reshape(B * K, M, D), deterministic).reshape(B, K, M, D)
    self.sow('intermediates', 'refined', r_BKMD)
    kv_lat = self._latent_kv(st, previous_chunk(r_BKMD, shards))
    y_BKCD, k_loc_BKHCd, v_loc_BKHCd = self._expand(st, x_BKCD, kv_lat, valid_BKC)
    y_BND = x_BND + st['drop'](y_BKCD.reshape(B, K * C, D)[:, :N], deterministic=deterministic)
    if not with_state:
      return y_BND, None

    # The state token-by-token feeding would leave after these N tokens.
    finished, rem = divmod(N, C)
    if finished:
      latent_kv = self._latent_kv(st, r_BKMD[:, finished - 1])
    else:
      latent_kv = (jnp.zeros((B, self.num_heads, M, D // self.num_heads), self.dtype),) * 2
    sin, cos = rotary_table(C, D // self.num_heads)
    k_rot_BHCd = rotate(k_loc_BKHCd[:, -1], sin[None, None], cos[None, None])
    m_BHM, l_BHM, o_BHMd = (x[:, -1] for x in triples)
    decay_HM = self._decay()
    if decay_HM is not None and rem == 0:  # seen from the end of the next (empty) chunk
      m_BHM = seen_later(m_BHM, decay_HM, 1.0)
    return y_BND, State(jnp.asarray(N, jnp.int32), q_HMd, m_BHM, l_BHM, o_BHMd, *latent_kv,
                        *_first_slots(k_rot_BHCd, v_loc_BKHCd[:, -1], rem))

  @nn.nowrap
  def _carried(self, st: dict, x_BND: jax.Array, carry: dict, deterministic: bool):
    """The parallel pass after what the row read in earlier windows (config.carry_state):
    `carry` holds that prefix's triple (seen from the end of chunk 0, as a State's) and the
    expand keys/values of the last refined latents before chunk 0. Returns the outputs and
    the same for the next window: the state of feeding the tokens one by one, at a chunk
    boundary, without the token-level parts a State also keeps."""
    B, N, D = x_BND.shape
    C, M = self.chunk_size, self.num_latents
    K = N // C
    shards = sharding.axis_size('seq')
    x_BKCD = sharding.constrain(x_BND.reshape(B, K, C, D), sharding.BATCH, 'seq')
    s_BKMD, triples, _ = self._compress(st, x_BKCD, None, deterministic, shards=shards,
                                        before=(carry['m'], carry['l'], carry['o']))
    r_BKMD = self._refine(st, s_BKMD.reshape(B * K, M, D), deterministic).reshape(B, K, M, D)
    k_lat, v_lat = self._latent_kv(st, previous_chunk(r_BKMD, shards))
    k_lat = k_lat.at[:, 0].set(carry['latent_k'].astype(k_lat.dtype))
    v_lat = v_lat.at[:, 0].set(carry['latent_v'].astype(v_lat.dtype))
    has_past_BK = jnp.concatenate([carry['seen'][:, None], jnp.ones((B, K - 1), bool)], axis=1)
    y_BKCD, _, _ = self._expand(st, x_BKCD, (k_lat, v_lat), None, has_past_K=has_past_BK)
    y_BND = x_BND + st['drop'](y_BKCD.reshape(B, N, D), deterministic=deterministic)
    m_BHM, l_BHM, o_BHMd = (x[:, -1] for x in triples)
    if self.latent_decay != 'none':  # seen from the end of the next window's chunk 0
      decay_HM = jnp.exp(self.get_variable('params', 'log_decay').astype(jnp.float32))
      m_BHM = seen_later(m_BHM, decay_HM, 1.0)
    latent_k, latent_v = self._latent_kv(st, r_BKMD[:, -1])
    return y_BND, {'m': m_BHM, 'l': l_BHM, 'o': o_BHMd, 'latent_k': latent_k,
                   'latent_v': latent_v, 'seen': jnp.ones((B,), bool)}

  # ------------------------------------------------------------- decoding paths --
  @nn.nowrap
  def _read_state(self) -> State:
    return State(*(self.get_variable('cache', name) for name in State._fields))

  @nn.nowrap
  def _extend(self, st: dict, state: State, x_BSD: jax.Array,
              deterministic: bool = True) -> tuple[jax.Array, State]:
    """S more tokens in parallel after the `state.index` the state holds, which may end
    inside a chunk: (their outputs, the State after them), as feeding them one by one.

    The tokens are laid out from the start of the current chunk, at offset j = index % C
    in a buffer of whole chunks (static shape; j may be traced). Chunk 0 of the buffer
    is the current chunk: its first j slots hold the state's keys and values, and every
    prefix triple is the state's merged with the scan over the new tokens. The
    parameters are read afresh (compress queries included), so a state carried across
    parameter updates meets the current ones.
    """
    B, S, D = x_BSD.shape
    C, M = self.chunk_size, self.num_latents
    K = -(-(S + C) // C)  # j + S < S + C slots, in whole chunks
    j = state.index % C
    slots_T = jnp.arange(K * C)
    x_BKCD = jax.lax.dynamic_update_slice_in_dim(
        jnp.zeros((B, K * C, D), x_BSD.dtype), x_BSD, j, axis=1).reshape(B, K, C, D)
    new_BKC = jnp.broadcast_to(((slots_T >= j) & (slots_T < j + S)).reshape(1, K, C), (B, K, C))

    s_BKMD, triples, q_HMd = self._compress(st, x_BKCD, new_BKC, deterministic,
                                            before=(state.m, state.l, state.o))
    r_BKMD = self._refine(st, s_BKMD.reshape(B * K, M, D), deterministic).reshape(B, K, M, D)
    # Step 3: chunk 0 reads the state's latent keys/values (if a chunk has finished) and
    # the state's first j in-chunk keys/values; chunk k > 0 reads R of buffer chunk k - 1.
    kv_lat = tuple(jnp.concatenate([first[:, None], kv[:, :-1]], axis=1) for first, kv in zip(
        (state.latent_k, state.latent_v), self._latent_kv(st, r_BKMD)))
    y_BKCD, k_loc_BKHCd, v_loc_BKHCd = self._expand(
        st, x_BKCD, kv_lat, jnp.broadcast_to((slots_T < j + S).reshape(1, K, C), (B, K, C)),
        chunk_before=(state.chunk_k, state.chunk_v, j),
        has_past_K=(jnp.arange(K) > 0) | (state.index >= C))
    y_BSD = jax.lax.dynamic_slice_in_dim(y_BKCD.reshape(B, K * C, D), j, S, axis=1)

    # The state after the last new token: in buffer chunk k_end, with `rem` tokens in it.
    k_end, rem = (j + S) // C, (j + S) % C
    take = lambda x: jax.lax.dynamic_index_in_dim(x, k_end, axis=1, keepdims=False)
    r_last_BMD = jax.lax.dynamic_index_in_dim(r_BKMD, jnp.maximum(k_end - 1, 0), axis=1,
                                              keepdims=False)
    latent_kv = (jnp.where(k_end > 0, new, old) for new, old in zip(
        self._latent_kv(st, r_last_BMD), (state.latent_k, state.latent_v)))
    return x_BSD + st['drop'](y_BSD, deterministic=deterministic), State(
        state.index + S, q_HMd, *map(take, triples), *latent_kv,
        *_first_slots(take(k_loc_BKHCd), take(v_loc_BKHCd), rem))

  @nn.nowrap
  def _step(self, st: dict, state: State, x_B1D: jax.Array) -> tuple[jax.Array, State]:
    """One token at position `state.index`: fold it into the state, attend, and close the
    chunk if it is full. (output [B, 1, D], the State after it)."""
    D = x_B1D.shape[2]
    C, d = self.chunk_size, D // self.num_heads
    pos, j = state.index, state.index % C

    # Step 1: the token as a chunk of one, seen from the end of its chunk, merged into
    # the prefix triple.
    k_B1Hd, v_B1Hd = st['compress'].project_kv(st['ln_tokens_compress'](x_B1D))
    m_B1HM, l_B1HM, o_B1HMd = chunk_softmax_triples(
        state.compress_q, k_B1Hd[:, :, :, None], v_B1Hd[:, :, :, None])
    decay_HM = self._decay()
    if decay_HM is not None:
      m_B1HM = seen_later(m_B1HM, decay_HM, (C - 1 - j) / C)
    triple = combine_softmax_triples((state.m, state.l, state.o),
                                     (m_B1HM[:, 0], l_B1HM[:, 0], o_B1HMd[:, 0]))

    # Step 3: one softmax over [R_{k-1} ; this chunk's tokens up to and including this one].
    xe_B1D = st['ln_tokens_expand'](x_B1D)
    q_BHd = st['expand'].project_q(xe_B1D)[:, 0]
    k_loc_B1Hd, v_loc_B1Hd = st['expand'].project_kv(xe_B1D)
    sin, cos = rotary_at(j[None], d)
    chunk_k = state.chunk_k.at[:, :, j].set(rotate(k_loc_B1Hd[:, 0], sin[None], cos[None]))
    chunk_v = state.chunk_v.at[:, :, j].set(v_loc_B1Hd[:, 0])
    scale = d ** -0.5
    s_lat_BHM = jnp.einsum('bhd,bhmd->bhm', q_BHd, state.latent_k,
                           preferred_element_type=jnp.float32) * scale
    s_lat_BHM = jnp.where(pos >= C, s_lat_BHM, NEG_INF)
    s_loc_BHC = jnp.einsum('bhd,bhcd->bhc', rotate(q_BHd, sin[None], cos[None]), chunk_k,
                           preferred_element_type=jnp.float32) * scale
    s_loc_BHC = jnp.where(jnp.arange(C) <= j, s_loc_BHC, NEG_INF)
    o_BHd = attend_two_parts(s_lat_BHM[:, :, None], state.latent_v, s_loc_BHC[:, :, None],
                             chunk_v)[:, :, 0]
    y_B1D = st['expand'].project_out(o_BHd[:, None].astype(self.dtype))

    state = state._replace(index=pos + 1, m=triple[0], l=triple[1], o=triple[2],
                           chunk_k=chunk_k, chunk_v=chunk_v)
    state = nn.cond((pos + 1) % C == 0, lambda mdl, s: mdl._close_chunk(s, D),
                    lambda mdl, s: s, self, state)
    return x_B1D + y_B1D, state

  @nn.nowrap
  def _close_chunk(self, state: State, width: int) -> State:
    """After a chunk's last token: S from the triple, R by step 2, R's expand keys/values;
    the next chunk starts empty."""
    st = self._steps(width)
    s_BMD = self._summaries(st, self._latents(width), state.l[:, None], state.o[:, None],
                            True)[:, 0]
    r_BMD = self._refine(st, s_BMD, deterministic=True)
    latent_k, latent_v = self._latent_kv(st, r_BMD)
    decay_HM = self._decay()
    m_BHM = state.m if decay_HM is None else seen_later(state.m, decay_HM, 1.0)  # C tokens on
    return state._replace(m=m_BHM, latent_k=latent_k, latent_v=latent_v,
                          chunk_k=jnp.zeros_like(state.chunk_k),
                          chunk_v=jnp.zeros_like(state.chunk_v))


def fresh_state(cfg, batch: int, dtype) -> dict:
  """What a row carries into a document's first window (config.carry_state): an empty
  prefix triple and no previous latents (CausalLatentAttention._carried)."""
  H, M = cfg.num_heads, cfg.num_latents
  d = cfg.emb_dim // H
  return {'m': jnp.full((batch, H, M), NEG_INF, jnp.float32),
          'l': jnp.zeros((batch, H, M), jnp.float32),
          'o': jnp.zeros((batch, H, M, d), jnp.float32),
          'latent_k': jnp.zeros((batch, H, M, d), dtype),
          'latent_v': jnp.zeros((batch, H, M, d), dtype),
          'seen': jnp.zeros((batch,), bool)}
