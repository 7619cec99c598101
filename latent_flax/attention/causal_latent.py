"""Chunked causal latent block (design section 2): the latent block as a language model.

Chunk k (C tokens) reads the latents only as a summary R_{k-1} of the chunks before
it, plus causal attention inside its own chunk. All prefix summaries S_k come from
one `jax.lax.associative_scan` over per-chunk online-softmax triples; step 2 is
batched over the K = ceil(N / C) chunks. O(N*(M+C)*D + K*M*M*D) time and
O(N*D + K*M*D) memory: no N x N matrix anywhere.

Decay (`latent_decay='multiscale'`): each head's latent m weighs a token
exp(-lambda_hm) less per chunk of distance from the end of the prefix (exp(-lambda_hm / C)
per token), with lambda_hm learned and initialised to half-lives spread log-uniformly over
1 ... MAX_HALF_LIFE_CHUNKS chunks: some latents summarise the last chunk or two sharply,
others the whole past. The scan stays exact: an element also counts its chunks n, and
combining a with b scales a's weights by exp(-lambda * n_b) (its max shifts by lambda*n_b).

Positions: rotary embeddings on the in-chunk token-token part of step 3 only; the
token query meets latent keys un-rotated and its chunk's keys rotated, in one softmax.

Decoding: `decode='prefill'` (the parallel pass, which also writes the state
token-by-token feeding would leave) and `decode='step'` (one token), the state in
the mutable 'cache' collection; see evaluation/decode.py.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_flax.system import sharding
from latent_flax.attention.latent import _LatentSteps
from latent_flax.attention.primitives import heads_first, rotary_at, rotary_table, rotate
from latent_flax.attention.softmax import (NEG_INF, attend_two_parts, combine_softmax_triples,
                                           finish_softmax)


LATENT_DECAYS = ('none', 'multiscale')
MAX_HALF_LIFE_CHUNKS = 256.0  # the slowest initial decay of 'multiscale', in chunks


def chunk_softmax_triples(q_HMd: jax.Array, k_BKHCd: jax.Array, v_BKHCd: jax.Array,
                          valid_BKC: jax.Array | None = None,
                          decay_HM: jax.Array | None = None):
  """Per chunk, the online-softmax triple of the latent queries over that chunk's tokens.

  Returns m_BKHM (max score), l_BKHM (sum of exp), o_BKHMd (exp-weighted values),
  all float32; invalid tokens contribute exactly nothing. The max is a constant
  for differentiation: softmax does not depend on the shift, so gradients are exact.
  With `decay_HM` (lambda per chunk), token c of a chunk is weighed as seen from the
  chunk's end: its score gets -lambda * (C - 1 - c) / C.
  """
  C = k_BKHCd.shape[3]
  scale = q_HMd.shape[-1] ** -0.5
  s_BKHCM = jnp.einsum('bkhcd,hmd->bkhcm', k_BKHCd, q_HMd,
                       preferred_element_type=jnp.float32) * scale
  if decay_HM is not None:
    distance_C = (C - 1 - jnp.arange(C)) / C  # in chunks, to the chunk's last token
    s_BKHCM = s_BKHCM - (decay_HM[:, None, :] * distance_C[None, :, None])[None, None]
  if valid_BKC is not None:
    s_BKHCM = jnp.where(valid_BKC[:, :, None, :, None], s_BKHCM, NEG_INF)
  m_BKHM = jax.lax.stop_gradient(jnp.max(s_BKHCM, axis=3))
  p_BKHCM = jnp.exp(s_BKHCM - m_BKHM[:, :, :, None, :])
  if valid_BKC is not None:
    p_BKHCM = jnp.where(valid_BKC[:, :, None, :, None], p_BKHCM, 0.0)
  l_BKHM = jnp.sum(p_BKHCM, axis=3)
  o_BKHMd = jnp.einsum('bkhcm,bkhcd->bkhmd', p_BKHCM, v_BKHCd,
                       preferred_element_type=jnp.float32)
  return m_BKHM, l_BKHM, o_BKHMd


def prefix_scan(triples, decay_HM: jax.Array | None = None, shards: int = 1):
  """Every prefix's triple along axis 1 (chunks): one associative scan.

  With `decay_HM`, each prefix is weighed as seen from the end of its last chunk: an
  element carries its chunk count n, and an older part is scaled by exp(-lambda * n_newer).

  `shards` > 1 (the chunks split in that many equal runs, one per device along a 'seq'
  mesh axis): a scan within each run, then one over the runs' totals (a triple of
  O(H*M*d) per run: all that crosses devices), whose exclusive prefix is merged into
  each run. The same prefixes, up to float rounding.
  """
  if decay_HM is None:
    combine = combine_softmax_triples
    elems = tuple(triples)
  else:
    def combine(a, b):
      m_a, l_a, o_a, n_a = a
      decay = decay_HM.reshape((1,) * (m_a.ndim - 2) + decay_HM.shape)
      merged = combine_softmax_triples((m_a - decay * b[3], l_a, o_a), b[:3])
      return merged + (n_a + b[3],)
    m = triples[0]
    elems = tuple(triples) + (jnp.ones(m.shape[:2] + (1, 1), jnp.float32),)
  if shards == 1:
    return jax.lax.associative_scan(combine, elems, axis=1)[:3]
  B, K = elems[0].shape[:2]
  if K % shards:
    raise ValueError(f"{K} chunks do not split into {shards} equal runs along the sequence; "
                     "make seq_len / chunk_size a multiple of config.mesh.seq.")
  runs = tuple(sharding.constrain(x.reshape((B, shards, K // shards) + x.shape[2:]),
                                  sharding.BATCH, 'seq') for x in elems)
  local = jax.lax.associative_scan(combine, runs, axis=2)
  totals = jax.lax.associative_scan(combine, tuple(x[:, :, -1] for x in local), axis=1)
  empty = (jnp.full_like(totals[0][:, :1], NEG_INF),) + tuple(
      jnp.zeros_like(x[:, :1]) for x in totals[1:])
  before = tuple(jnp.concatenate([e, x[:, :-1]], axis=1)[:, :, None]
                 for e, x in zip(empty, totals))  # what precedes each run
  merged = combine(before, local)
  return tuple(x.reshape((B, K) + x.shape[3:]) for x in merged[:3])


def previous_chunk(x_BK: jax.Array, shards: int = 1) -> jax.Array:
  """x[:, k - 1] at chunk k along axis 1, zeros at k = 0. With `shards` runs of chunks
  (one per seq device) only each run's last chunk moves to the next run's device."""
  if shards == 1:
    return jnp.concatenate([jnp.zeros_like(x_BK[:, :1]), x_BK[:, :-1]], axis=1)
  B, K = x_BK.shape[:2]
  runs = sharding.constrain(x_BK.reshape((B, shards, K // shards) + x_BK.shape[2:]),
                            sharding.BATCH, 'seq')
  last = runs[:, :, -1:]
  carried = jnp.concatenate([jnp.zeros_like(last[:, :1]), last[:, :-1]], axis=1)
  return jnp.concatenate([carried, runs[:, :, :-1]], axis=2).reshape(x_BK.shape)


class CausalLatentAttention(_LatentSteps):
  """Chunked causal latent block (design section 2).

  Chunk k reads the latents only as a summary R_{k-1} of the chunks before it,
  plus causal attention inside its own chunk. All prefix summaries S_k come from
  one `jax.lax.associative_scan` over per-chunk online-softmax triples; step 2
  is batched over chunks. Lengths that are not a multiple of `chunk_size` are
  padded at the end (padding sits after every real token and is never a key)
  and sliced off.

  Decoding (`decode='prefill'`, then `decode='step'` one token at a time, with a
  mutable 'cache' collection) keeps a state of O((M + C) * D) per layer whatever
  the length: the running compress triple of the prefix, the expand keys/values
  of R of the last finished chunk, and the keys/values of the current chunk.
  Step 2 runs once per finished chunk (under `nn.cond`), not once per token.
  With a decay, the state's triple is weighed as seen from the end of the chunk that
  holds position `index`.
  """

  chunk_size: int = 128
  latent_decay: str = 'none'  # 'none' | 'multiscale' (module docstring)

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

    log_decay_HM = self.param('log_decay', init, (self.num_heads, self.num_latents),
                              self.param_dtype)
    return jnp.exp(log_decay_HM.astype(jnp.float32))

  @nn.compact
  def __call__(self, x_BND: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True, decode: str | None = None,
               cache_len: int | None = None) -> jax.Array:
    del cache_len  # the latent state does not grow with the length
    B, N, D = x_BND.shape
    C = self.chunk_size
    K = -(-N // C)
    pad = K * C - N
    st = self._steps(D)
    M = self.num_latents
    x_BND = x_BND.astype(self.dtype)
    if decode == 'step':
      if N != 1:
        raise ValueError(f"decode='step' takes one token at a time, got {N}.")
      return self._decode_step(st, x_BND)
    if decode == 'extend':
      return self._extend(st, x_BND)
    if decode not in (None, 'prefill'):
      raise ValueError(f"decode={decode!r}: use None, 'prefill', 'step' or 'extend'.")
    x_BKCD = sharding.constrain(jnp.pad(x_BND, ((0, 0), (0, pad), (0, 0))).reshape(B, K, C, D),
                                sharding.BATCH, 'seq')  # chunks stay on their seq shard
    valid_BKC = None
    if mask_BN is not None or pad:
      mask_BN = jnp.ones((B, N), bool) if mask_BN is None else mask_BN.astype(bool)
      valid_BKC = jnp.pad(mask_BN, ((0, 0), (0, pad))).reshape(B, K, C)

    # Step 1, every prefix at once: S_k = L + MHA_compress(LN(L), LN(X[chunks 0..k])).
    latents_MD = self._latents(D)
    q_HMd = jnp.swapaxes(st['compress'].project_q(st['ln_latents_compress'](latents_MD)), 0, 1)
    k_BKCHd, v_BKCHd = st['compress'].project_kv(st['ln_tokens_compress'](x_BKCD))
    decay_HM = self._decay()
    triples = chunk_softmax_triples(q_HMd, heads_first(k_BKCHd), heads_first(v_BKCHd), valid_BKC,
                                    decay_HM)
    m_BKHM, l_BKHM, o_BKHMd = prefix_scan(triples, decay_HM, sharding.axis_size('seq'))
    attn_BKMHd = finish_softmax(l_BKHM, o_BKHMd).astype(self.dtype)
    s_BKMD = latents_MD[None, None] + st['drop'](st['compress'].project_out(attn_BKMHd),
                                                 deterministic=deterministic)
    self.sow('intermediates', 'compressed', s_BKMD)

    # Step 2, batched over chunks: R_k = S_k + MHA_refine(LN(S_k), LN(S_k)).
    r_BKMD = self._refine(st, s_BKMD.reshape(B * K, M, D), deterministic).reshape(B, K, M, D)
    self.sow('intermediates', 'refined', r_BKMD)

    # Step 3: Y_t = X_t + MHA_expand(LN(X_t), [LN(R_{k-1}) ; LN(X[chunk k, <= t])]).
    r_prev_BKMD = previous_chunk(r_BKMD, sharding.axis_size('seq'))
    xe_BKCD = st['ln_tokens_expand'](x_BKCD)
    q_BKCHd = st['expand'].project_q(xe_BKCD)
    k_lat_BKMHd, v_lat_BKMHd = st['expand'].project_kv(st['ln_latents_expand'](r_prev_BKMD))
    k_loc_BKHCd, v_loc_BKHCd = map(heads_first, st['expand'].project_kv(xe_BKCD))
    # Every [B, K, ...] operand on its chunks' seq shard (a no-op without a seq axis):
    # left to itself, XLA moves whole chunks between devices to transpose them.
    on_shard = lambda x: sharding.constrain(x, sharding.BATCH, 'seq')
    out_BKHCd = expand_attention(*map(on_shard, map(heads_first, (q_BKCHd, k_lat_BKMHd,
                                                                   v_lat_BKMHd))),
                                 on_shard(k_loc_BKHCd), on_shard(v_loc_BKHCd), valid_BKC)
    out_BKCHd = on_shard(heads_first(on_shard(out_BKHCd)))
    y_BKCD = st['expand'].project_out(out_BKCHd.astype(self.dtype))
    y_BND = y_BKCD.reshape(B, K * C, D)[:, :N]

    if decode == 'prefill':
      # The state token-by-token feeding would leave after these N tokens.
      finished, rem = divmod(N, C)
      if finished:
        k_lat_BHMd, v_lat_BHMd = self._expand_kv_of_latents(st, r_BKMD[:, finished - 1])
      else:
        k_lat_BHMd = v_lat_BHMd = jnp.zeros((B, self.num_heads, M, D // self.num_heads),
                                            self.dtype)
      in_chunk_C = jnp.arange(C) < rem  # all False when the last chunk is complete
      sin, cos = rotary_table(C, D // self.num_heads)
      k_rot_BHCd = rotate(k_loc_BKHCd[:, -1], sin[None, None], cos[None, None])
      m_BHM = m_BKHM[:, -1]
      if decay_HM is not None and rem == 0:  # seen from the end of the next (empty) chunk
        m_BHM = m_BHM - decay_HM[None]
      self._write_state(
          index=jnp.asarray(N, jnp.int32), compress_q=q_HMd,
          triple=(m_BHM, l_BKHM[:, -1], o_BKHMd[:, -1]),
          latent_kv=(k_lat_BHMd, v_lat_BHMd),
          chunk_kv=(jnp.where(in_chunk_C[:, None], k_rot_BHCd, 0.0),
                    jnp.where(in_chunk_C[:, None], v_loc_BKHCd[:, -1], 0)))
    return x_BND + st['drop'](y_BND, deterministic=deterministic)

  @nn.nowrap
  def _extend(self, st: dict, x_BSD: jax.Array) -> jax.Array:
    """S more tokens in parallel after the `index` already folded into the state, which
    may end inside a chunk: the outputs and the state of feeding them one by one.

    The tokens are laid out from the start of the current chunk, at offset j = index % C
    in a buffer of whole chunks (static shape; j may be traced). Chunk 0 of the buffer
    is the current chunk: its first j slots hold the state's keys and values, its
    summary is the state's; every prefix triple is the state's triple combined with
    the scan over the new tokens.
    """
    B, S, D = x_BSD.shape
    C, M, H = self.chunk_size, self.num_latents, self.num_heads
    K = -(-(S + C) // C)  # j + S < S + C slots, in whole chunks
    pos, q_HMd = self._read_state('index', 'compress_q')
    j = pos % C
    slots_T = jnp.arange(K * C)
    new_T = (slots_T >= j) & (slots_T < j + S)
    x_BKCD = jax.lax.dynamic_update_slice_in_dim(
        jnp.zeros((B, K * C, D), x_BSD.dtype), x_BSD, j, axis=1).reshape(B, K, C, D)
    new_BKC = jnp.broadcast_to(new_T.reshape(1, K, C), (B, K, C))

    # Step 1: the state's prefix triple, then the new tokens chunk by chunk.
    k_BKCHd, v_BKCHd = st['compress'].project_kv(st['ln_tokens_compress'](x_BKCD))
    decay_HM = self._decay()
    triples = chunk_softmax_triples(q_HMd, heads_first(k_BKCHd), heads_first(v_BKCHd), new_BKC,
                                    decay_HM)
    triples = prefix_scan(triples, decay_HM)
    m_state, l_state, o_state = (x[:, None] for x in self._read_state('m', 'l', 'o'))
    if decay_HM is not None:  # the state is seen from the end of buffer chunk 0
      chunks_K = jnp.arange(K, dtype=jnp.float32)
      m_state = m_state - decay_HM[None, None] * chunks_K[None, :, None, None]
    m_BKHM, l_BKHM, o_BKHMd = combine_softmax_triples((m_state, l_state, o_state), triples)
    latents_MD = self._latents(D)
    attn_BKMHd = finish_softmax(l_BKHM, o_BKHMd).astype(self.dtype)
    s_BKMD = latents_MD[None, None] + st['compress'].project_out(attn_BKMHd)
    r_BKMD = self._refine(st, s_BKMD.reshape(B * K, M, D), True).reshape(B, K, M, D)

    # Step 3: chunk 0 reads the state's latent keys/values (if a chunk has finished) and
    # the state's first j in-chunk keys/values; chunk k > 0 reads R of buffer chunk k - 1.
    latent_k, latent_v, chunk_k, chunk_v = self._read_state('latent_k', 'latent_v', 'chunk_k',
                                                            'chunk_v')
    k_lat_BKHMd, v_lat_BKHMd = (
        jnp.concatenate([first[:, None], kv[:, :-1]], axis=1) for first, kv in zip(
            (latent_k, latent_v), map(heads_first, st['expand'].project_kv(
                st['ln_latents_expand'](r_BKMD)))))
    xe_BKCD = st['ln_tokens_expand'](x_BKCD)
    q_BKHCd = heads_first(st['expand'].project_q(xe_BKCD))
    k_loc_BKHCd, v_loc_BKHCd = map(heads_first, st['expand'].project_kv(xe_BKCD))
    sin, cos = rotary_table(C, D // H)
    k_loc_BKHCd = rotate(k_loc_BKHCd, sin[None, None, None], cos[None, None, None])
    from_state_C = jnp.arange(C) < j
    k_loc_BKHCd = k_loc_BKHCd.at[:, 0].set(
        jnp.where(from_state_C[None, None, :, None], chunk_k, k_loc_BKHCd[:, 0]))
    v_loc_BKHCd = v_loc_BKHCd.at[:, 0].set(
        jnp.where(from_state_C[None, None, :, None], chunk_v, v_loc_BKHCd[:, 0]))
    has_past_K = jnp.arange(K) > 0
    has_past_K = has_past_K | (pos >= C)
    out_BKHCd = expand_attention(q_BKHCd, k_lat_BKHMd, v_lat_BKHMd, k_loc_BKHCd, v_loc_BKHCd,
                                 jnp.broadcast_to((slots_T < j + S).reshape(1, K, C), (B, K, C)),
                                 keys_rotated=True, has_past_K=has_past_K)
    y_BTD = st['expand'].project_out(heads_first(out_BKHCd).astype(self.dtype))
    y_BSD = jax.lax.dynamic_slice_in_dim(y_BTD.reshape(B, K * C, D), j, S, axis=1)

    # The state after the last new token: in buffer chunk k_end, with `rem` tokens in it.
    k_end, rem = (j + S) // C, (j + S) % C
    take = lambda x: jax.lax.dynamic_index_in_dim(x, k_end, axis=1, keepdims=False)
    last_r_BMD = jax.lax.dynamic_index_in_dim(r_BKMD, jnp.maximum(k_end - 1, 0), axis=1,
                                              keepdims=False)
    new_lat = self._expand_kv_of_latents(st, last_r_BMD)
    in_chunk_C = (jnp.arange(C) < rem)[None, None, :, None]
    self._write_state(
        index=pos + S, triple=(take(m_BKHM), take(l_BKHM), take(o_BKHMd)),
        latent_kv=tuple(jnp.where(k_end > 0, new, old)
                        for new, old in zip(new_lat, (latent_k, latent_v))),
        chunk_kv=(jnp.where(in_chunk_C, take(k_loc_BKHCd), 0.0),
                  jnp.where(in_chunk_C, take(v_loc_BKHCd), 0.0).astype(chunk_v.dtype)))
    return x_BSD + y_BSD

  @nn.nowrap
  def _expand_kv_of_latents(self, st: dict, r_BMD: jax.Array):
    """Expand-step keys and values of refined latents, head-major [B, H, M, d]."""
    return tuple(map(heads_first, st['expand'].project_kv(st['ln_latents_expand'](r_BMD))))

  @nn.nowrap
  def _write_state(self, **values):
    """Creates or overwrites the decoding state in the 'cache' collection."""
    names = dict(index=('index',), compress_q=('compress_q',), triple=('m', 'l', 'o'),
                 latent_kv=('latent_k', 'latent_v'), chunk_kv=('chunk_k', 'chunk_v'))
    for group, value in values.items():
      for name, v in zip(names[group], value if len(names[group]) > 1 else (value,)):
        self.put_variable('cache', name, v)

  @nn.nowrap
  def _read_state(self, *names: str):
    return [self.get_variable('cache', n) for n in names]

  @nn.nowrap
  def _decode_step(self, st: dict, x_B1D: jax.Array) -> jax.Array:
    """One token at position `index`: fold it into the state, attend, close a full chunk."""
    B, _, D = x_B1D.shape
    C, H = self.chunk_size, self.num_heads
    d = D // H
    scale = d ** -0.5
    pos, q_HMd = self._read_state('index', 'compress_q')
    j = pos % C

    # Step 1 state: merge this token's (score, 1, value) into the prefix triple.
    k_B1Hd, v_B1Hd = st['compress'].project_kv(st['ln_tokens_compress'](x_B1D))
    s_BHM = jnp.einsum('bhd,hmd->bhm', k_B1Hd[:, 0], q_HMd,
                       preferred_element_type=jnp.float32) * scale
    decay_HM = self._decay()
    if decay_HM is not None:  # seen from the end of this chunk
      s_BHM = s_BHM - decay_HM[None] * ((C - 1 - j) / C)
    v_BHMd = jnp.broadcast_to(v_B1Hd[:, 0, :, None, :].astype(jnp.float32), (B, H) + q_HMd.shape[1:])
    triple = combine_softmax_triples(tuple(self._read_state('m', 'l', 'o')),
                                      (s_BHM, jnp.ones_like(s_BHM), v_BHMd))

    # Step 3: one softmax over [R_{k-1} ; this chunk's tokens up to and including this one].
    xe_B1D = st['ln_tokens_expand'](x_B1D)
    q_BHd = st['expand'].project_q(xe_B1D)[:, 0]
    k_loc_B1Hd, v_loc_B1Hd = st['expand'].project_kv(xe_B1D)
    sin, cos = rotary_at(j[None], d)
    q_rot_BHd = rotate(q_BHd, sin[None], cos[None])
    chunk_k, chunk_v, latent_k, latent_v = self._read_state('chunk_k', 'chunk_v', 'latent_k', 'latent_v')
    chunk_k = chunk_k.at[:, :, j].set(rotate(k_loc_B1Hd[:, 0], sin[None], cos[None]))
    chunk_v = chunk_v.at[:, :, j].set(v_loc_B1Hd[:, 0])
    s_lat_BHM = jnp.einsum('bhd,bhmd->bhm', q_BHd, latent_k,
                           preferred_element_type=jnp.float32) * scale
    s_lat_BHM = jnp.where(pos >= C, s_lat_BHM, NEG_INF)
    s_loc_BHC = jnp.einsum('bhd,bhcd->bhc', q_rot_BHd, chunk_k,
                           preferred_element_type=jnp.float32) * scale
    s_loc_BHC = jnp.where(jnp.arange(C) <= j, s_loc_BHC, NEG_INF)
    o_BHd = attend_two_parts(s_lat_BHM[:, :, None], latent_v, s_loc_BHC[:, :, None], chunk_v)[:, :, 0]
    y_B1D = st['expand'].project_out(o_BHd[:, None].astype(self.dtype))

    self._write_state(index=pos + 1, triple=triple, chunk_kv=(chunk_k, chunk_v))
    nn.cond((pos + 1) % C == 0, lambda mdl: mdl._close_chunk(D), lambda mdl: None, self)
    return x_B1D + y_B1D

  @nn.nowrap
  def _close_chunk(self, width: int) -> None:
    """After a chunk's last token: S from the triple, R by step 2, R's expand keys/values."""
    st = self._steps(width)
    l_BHM, o_BHMd = self._read_state('l', 'o')
    attn_BMHd = finish_softmax(l_BHM[:, None], o_BHMd[:, None])[:, 0].astype(self.dtype)
    s_BMD = self._latents(width)[None] + st['compress'].project_out(attn_BMHd)
    r_BMD = self._refine(st, s_BMD, deterministic=True)
    chunk_k, chunk_v = self._read_state('chunk_k', 'chunk_v')
    self._write_state(latent_kv=self._expand_kv_of_latents(st, r_BMD),
                      chunk_kv=(jnp.zeros_like(chunk_k), jnp.zeros_like(chunk_v)))
    decay_HM = self._decay()
    if decay_HM is not None:  # the next token opens a chunk: its end is C tokens later
      m_BHM, = self._read_state('m')
      self.put_variable('cache', 'm', m_BHM - decay_HM[None])


def expand_attention(q_BKHCd, k_lat_BKHMd, v_lat_BKHMd, k_loc_BKHCd, v_loc_BKHCd,
                     valid_BKC=None, *, keys_rotated: bool = False, has_past_K=None):
  """One softmax per token over [latents of the previous chunks ; its chunk's prefix].

  Head-major layouts. Chunk 0 has no previous summary: its latent keys are masked.
  Local keys get rotary positions within the chunk (rotary scores depend only on
  the offset between positions, so in-chunk positions give the same attention as
  absolute ones); latent keys get none. Returns o_BKHCd in float32.
  `keys_rotated`: the local keys already carry their rotary positions. `has_past_K`:
  which chunks have a previous summary (default: all but chunk 0).

  The backward pass recomputes the scores from these inputs (jax.checkpoint, as a
  flash kernel does): it keeps O(N·D) per layer instead of the O(N·H·(C + M)) scores,
  probabilities and masks.
  """
  return _expand_recomputed(q_BKHCd, k_lat_BKHMd, v_lat_BKHMd, k_loc_BKHCd, v_loc_BKHCd,
                            valid_BKC, has_past_K, keys_rotated)


def _expand(q_BKHCd, k_lat_BKHMd, v_lat_BKHMd, k_loc_BKHCd, v_loc_BKHCd, valid_BKC,
            has_past_K, keys_rotated: bool):
  _, K, _, C, d = q_BKHCd.shape
  scale = d ** -0.5
  sin, cos = rotary_table(C, d)
  sin, cos = sin[None, None, None], cos[None, None, None]
  s_lat = jnp.einsum('bkhcd,bkhmd->bkhcm', q_BKHCd, k_lat_BKHMd,
                     preferred_element_type=jnp.float32) * scale
  on_shard = lambda x: sharding.constrain(x, sharding.BATCH, 'seq')  # chunks stay put
  k_rot = k_loc_BKHCd if keys_rotated else on_shard(rotate(k_loc_BKHCd, sin, cos))
  s_loc = jnp.einsum('bkhcd,bkhsd->bkhcs', on_shard(rotate(q_BKHCd, sin, cos)), k_rot,
                     preferred_element_type=jnp.float32) * scale
  has_past = (jnp.arange(K) > 0) if has_past_K is None else has_past_K
  has_past = has_past[None, :, None, None, None]
  s_lat = jnp.where(has_past, s_lat, NEG_INF)
  mask_loc = jnp.tril(jnp.ones((C, C), bool))[None, None, None]
  if valid_BKC is not None:
    mask_loc = mask_loc & valid_BKC[:, :, None, None, :]
  s_loc = jnp.where(mask_loc, s_loc, NEG_INF)
  return attend_two_parts(s_lat, v_lat_BKHMd, s_loc, v_loc_BKHCd)


_expand_recomputed = jax.checkpoint(_expand, static_argnums=(7,),
                                    policy=jax.checkpoint_policies.nothing_saveable)
