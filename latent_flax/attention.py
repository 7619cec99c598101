"""Latent attention blocks and the full-attention baseline.

Shapes: B batch, N tokens, D width, H heads of width d = D / H, M latents,
C chunk size, K = ceil(N / C) chunks. Every block maps x_BND -> y_BND and holds
its own pre-LN and residual, so the three kinds are interchangeable in a model.

  LatentAttention        bidirectional, three steps (design section 1).
                         O(N*M*D + M*M*D) time.
  CausalLatentAttention  chunked causal variant for language modelling
                         (design section 2). O(N*(M+C)*D + K*M*M*D) time and
                         O(N*D + K*M*D) memory: no N x N matrix anywhere.
  FullAttention          multi-head attention through jax.nn.dot_product_attention,
                         causal or bidirectional. O(N*N*D) time.

Positions: rotary embeddings (RoPE) on token-token attention only, i.e. the local
in-chunk part of the causal expand step and FullAttention. Latent-token attention
carries no positions (the latents are a set): in the causal expand step the token
query meets latent keys un-rotated and its chunk's keys rotated, in one softmax.

Decoding: the causal blocks take `decode='prefill'` (the parallel pass, which also
writes the state token-by-token feeding would leave) and `decode='step'` (one token),
keeping their state in the mutable 'cache' collection; see decode.py.

Scores and softmaxes are float32 whatever the compute dtype. Intermediate latents
are sown into the 'intermediates' collection ('compressed' = S, 'refined' = R) so
tests and analyses can read them with `mutable=['intermediates']`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
_NEG_INF = -1e30  # finite "minus infinity": exp(-1e30 - max) is exactly 0.


def rotary_at(positions_T: jax.Array | np.ndarray, head_dim: int, base: float = 10_000.0):
  """sin, cos of shape [T, head_dim // 2] for the given integer positions.

  Positions known at trace time (a numpy array) give numpy tables, which XLA
  holds as constants; traced positions (decoding) are computed in the graph,
  where XLA would otherwise fuse sin and cos into every element that uses them.
  """
  xp = np if isinstance(positions_T, np.ndarray) else jnp
  half = head_dim // 2
  freqs_f = (base ** (-np.arange(half, dtype=np.float64) / half)).astype(np.float32)
  angles_Tf = xp.asarray(positions_T, xp.float32)[:, None] * freqs_f[None, :]
  return xp.sin(angles_Tf), xp.cos(angles_Tf)


def rotary_table(length: int, head_dim: int):
  """sin, cos (numpy) of shape [length, head_dim // 2] for positions 0..length-1."""
  return rotary_at(np.arange(length), head_dim)


def rotate(x_TD: jax.Array, sin_Tf: jax.Array, cos_Tf: jax.Array) -> jax.Array:
  """Rotary embedding (rotate-half form) in float32; sin/cos broadcast against x[..., :d/2]."""
  half = sin_Tf.shape[-1]
  x = x_TD.astype(jnp.float32)
  x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
  return jnp.concatenate([x1 * cos_Tf - x2 * sin_Tf, x2 * cos_Tf + x1 * sin_Tf, rest], -1)


class MultiHeadAttention(nn.Module):
  """W_Q, W_K, W_V (D -> H x d), W_O (H x d -> D) and the shared attention core.

  Calling it is ordinary attention through jax.nn.dot_product_attention (scores
  and softmax in float32). The latent blocks reuse `project_*` with their own
  score arithmetic where the computation is not a plain softmax attention.
  """

  num_heads: int
  width: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    head_dim = self.width // self.num_heads
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype,
              kernel_init=nn.initializers.lecun_normal())
    self.query = nn.DenseGeneral((self.num_heads, head_dim), **kw)
    self.key = nn.DenseGeneral((self.num_heads, head_dim), **kw)
    self.value = nn.DenseGeneral((self.num_heads, head_dim), **kw)
    self.out = nn.DenseGeneral(self.width, axis=(-2, -1), **kw)

  def project_q(self, x_TD: jax.Array) -> jax.Array:
    return self.query(x_TD)

  def project_kv(self, x_TD: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.key(x_TD), self.value(x_TD)

  def project_out(self, o_THd: jax.Array) -> jax.Array:
    return self.out(o_THd)

  def apply_rotary(self, x_BTHd: jax.Array, positions_T: jax.Array) -> jax.Array:
    """Rotary positions `positions_T` on queries or keys, computed in float32."""
    sin, cos = rotary_at(positions_T, x_BTHd.shape[-1])
    return rotate(x_BTHd, sin[None, :, None], cos[None, :, None]).astype(self.dtype)

  def attend(self, q_BTHd: jax.Array, k_BSHd: jax.Array, v_BSHd: jax.Array, *,
             mask_BS: jax.Array | None = None, is_causal: bool = False) -> jax.Array:
    """Softmax attention of projected heads, then W_O."""
    mask = None if mask_BS is None else mask_BS[:, None, None, :]
    o_BTHd = jax.nn.dot_product_attention(q_BTHd, k_BSHd, v_BSHd, mask=mask, is_causal=is_causal)
    return self.project_out(o_BTHd)

  def __call__(self, q_in_BTD: jax.Array, kv_in_BSD: jax.Array, *,
               mask_BS: jax.Array | None = None, is_causal: bool = False,
               rotary: bool = False) -> jax.Array:
    q_BTHd = self.project_q(q_in_BTD)
    k_BSHd, v_BSHd = self.project_kv(kv_in_BSD)
    if rotary:  # token-token self-attention: positions 0..T-1 on both sides.
      positions = np.arange(q_BTHd.shape[1])
      q_BTHd, k_BSHd = self.apply_rotary(q_BTHd, positions), self.apply_rotary(k_BSHd, positions)
    return self.attend(q_BTHd, k_BSHd, v_BSHd, mask_BS=mask_BS, is_causal=is_causal)


class _LatentSteps(nn.Module):
  """Parameters and the three steps' sub-layers, shared by both latent blocks.

  Both blocks use the same parameter names, so a CausalLatentAttention's params
  drive a LatentAttention and vice versa (the scan-vs-brute-force test uses it).
  """

  num_latents: int
  num_heads: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def _steps(self, width: int) -> dict[str, nn.Module]:
    """The sub-layers of the three steps, created inside the caller's compact scope."""
    mha = lambda name: MultiHeadAttention(self.num_heads, width, self.dtype, self.param_dtype,
                                          name=name)
    ln = lambda name: nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    return dict(
        compress=mha('compress'), refine=mha('refine'), expand=mha('expand'),
        ln_latents_compress=ln('ln_latents_compress'),
        ln_tokens_compress=ln('ln_tokens_compress'), ln_refine=ln('ln_refine'),
        ln_tokens_expand=ln('ln_tokens_expand'), ln_latents_expand=ln('ln_latents_expand'),
        drop=nn.Dropout(self.dropout_rate))

  @nn.nowrap
  def _latents(self, width: int) -> jax.Array:
    return self.param('latents', nn.initializers.normal(1.0), (self.num_latents, width),
                      self.param_dtype).astype(self.dtype)

  @staticmethod
  def _refine(st: dict, s_TMD: jax.Array, deterministic: bool) -> jax.Array:
    """Step 2 on a batch of latent sets: R = S + MHA_refine(LN(S), LN(S))."""
    h = st['ln_refine'](s_TMD)
    return s_TMD + st['drop'](st['refine'](h, h), deterministic=deterministic)


class LatentAttention(_LatentSteps):
  """Bidirectional latent block (design section 1): compress, refine, expand.

  Not for next-token prediction: every latent sees the whole sequence.
  `mask_BN` (True = real token): padded tokens are never keys in step 1.
  """

  @nn.compact
  def __call__(self, x_BND: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True, decode: str | None = None,
               cache_len: int | None = None) -> jax.Array:
    if decode is not None:
      raise ValueError("LatentAttention is bidirectional and cannot decode; use "
                       "CausalLatentAttention (attention='causal_latent').")
    del cache_len
    B, _, D = x_BND.shape
    st = self._steps(D)
    x_BND = x_BND.astype(self.dtype)
    latents_MD = self._latents(D)
    latents_BMD = jnp.broadcast_to(latents_MD, (B,) + latents_MD.shape)
    # Step 1: latents read the tokens.
    l1 = latents_BMD + st['drop'](
        st['compress'](st['ln_latents_compress'](latents_BMD), st['ln_tokens_compress'](x_BND),
                       mask_BS=mask_BN), deterministic=deterministic)
    self.sow('intermediates', 'compressed', l1)
    # Step 2: latents attend to each other.
    l2 = self._refine(st, l1, deterministic)
    self.sow('intermediates', 'refined', l2)
    # Step 3: tokens read the latents.
    return x_BND + st['drop'](
        st['expand'](st['ln_tokens_expand'](x_BND), st['ln_latents_expand'](l2)),
        deterministic=deterministic)


def _combine_softmax_triples(a, b):
  """Associative merge of online-softmax partials (max, sum of exp, weighted sum)."""
  m_a, l_a, o_a = a
  m_b, l_b, o_b = b
  m = jnp.maximum(m_a, m_b)
  w_a, w_b = jnp.exp(m_a - m), jnp.exp(m_b - m)
  return m, w_a * l_a + w_b * l_b, w_a[..., None] * o_a + w_b[..., None] * o_b


def chunk_softmax_triples(q_HMd: jax.Array, k_BKHCd: jax.Array, v_BKHCd: jax.Array,
                          valid_BKC: jax.Array | None = None):
  """Per chunk, the online-softmax triple of the latent queries over that chunk's tokens.

  Returns m_BKHM (max score), l_BKHM (sum of exp), o_BKHMd (exp-weighted values),
  all float32; invalid tokens contribute exactly nothing. The max is a constant
  for differentiation: softmax does not depend on the shift, so gradients are exact.
  """
  scale = q_HMd.shape[-1] ** -0.5
  s_BKHCM = jnp.einsum('bkhcd,hmd->bkhcm', k_BKHCd, q_HMd,
                       preferred_element_type=jnp.float32) * scale
  if valid_BKC is not None:
    s_BKHCM = jnp.where(valid_BKC[:, :, None, :, None], s_BKHCM, _NEG_INF)
  m_BKHM = jax.lax.stop_gradient(jnp.max(s_BKHCM, axis=3))
  p_BKHCM = jnp.exp(s_BKHCM - m_BKHM[:, :, :, None, :])
  if valid_BKC is not None:
    p_BKHCM = jnp.where(valid_BKC[:, :, None, :, None], p_BKHCM, 0.0)
  l_BKHM = jnp.sum(p_BKHCM, axis=3)
  o_BKHMd = jnp.einsum('bkhcm,bkhcd->bkhmd', p_BKHCM, v_BKHCd,
                       preferred_element_type=jnp.float32)
  return m_BKHM, l_BKHM, o_BKHMd


def finish_softmax(l_BKHM: jax.Array, o_BKHMd: jax.Array) -> jax.Array:
  """Attention output o / l as [B, K, M, H, d]; an all-invalid prefix gives 0."""
  l_safe = jnp.where(l_BKHM > 0, l_BKHM, 1.0)
  return jnp.swapaxes(o_BKHMd / l_safe[..., None], 2, 3)


def _heads_first(x_BKTHd: jax.Array) -> jax.Array:
  return jnp.swapaxes(x_BKTHd, -2, -3)


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
  """

  chunk_size: int = 128

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
    if decode not in (None, 'prefill'):
      raise ValueError(f"decode={decode!r}: use None, 'prefill' or 'step'.")
    x_BKCD = jnp.pad(x_BND, ((0, 0), (0, pad), (0, 0))).reshape(B, K, C, D)
    valid_BKC = None
    if mask_BN is not None or pad:
      mask_BN = jnp.ones((B, N), bool) if mask_BN is None else mask_BN.astype(bool)
      valid_BKC = jnp.pad(mask_BN, ((0, 0), (0, pad))).reshape(B, K, C)

    # Step 1, every prefix at once: S_k = L + MHA_compress(LN(L), LN(X[chunks 0..k])).
    latents_MD = self._latents(D)
    q_HMd = jnp.swapaxes(st['compress'].project_q(st['ln_latents_compress'](latents_MD)), 0, 1)
    k_BKCHd, v_BKCHd = st['compress'].project_kv(st['ln_tokens_compress'](x_BKCD))
    triples = chunk_softmax_triples(q_HMd, _heads_first(k_BKCHd), _heads_first(v_BKCHd), valid_BKC)
    m_BKHM, l_BKHM, o_BKHMd = jax.lax.associative_scan(_combine_softmax_triples, triples, axis=1)
    attn_BKMHd = finish_softmax(l_BKHM, o_BKHMd).astype(self.dtype)
    s_BKMD = latents_MD[None, None] + st['drop'](st['compress'].project_out(attn_BKMHd),
                                                 deterministic=deterministic)
    self.sow('intermediates', 'compressed', s_BKMD)

    # Step 2, batched over chunks: R_k = S_k + MHA_refine(LN(S_k), LN(S_k)).
    r_BKMD = self._refine(st, s_BKMD.reshape(B * K, M, D), deterministic).reshape(B, K, M, D)
    self.sow('intermediates', 'refined', r_BKMD)

    # Step 3: Y_t = X_t + MHA_expand(LN(X_t), [LN(R_{k-1}) ; LN(X[chunk k, <= t])]).
    r_prev_BKMD = jnp.concatenate([jnp.zeros_like(r_BKMD[:, :1]), r_BKMD[:, :-1]], axis=1)
    xe_BKCD = st['ln_tokens_expand'](x_BKCD)
    q_BKCHd = st['expand'].project_q(xe_BKCD)
    k_lat_BKMHd, v_lat_BKMHd = st['expand'].project_kv(st['ln_latents_expand'](r_prev_BKMD))
    k_loc_BKHCd, v_loc_BKHCd = map(_heads_first, st['expand'].project_kv(xe_BKCD))
    out_BKHCd = expand_attention(*map(_heads_first, (q_BKCHd, k_lat_BKMHd, v_lat_BKMHd)),
                                 k_loc_BKHCd, v_loc_BKHCd, valid_BKC)
    out_BKCHd = _heads_first(out_BKHCd)
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
      self._write_state(
          index=jnp.asarray(N, jnp.int32), compress_q=q_HMd,
          triple=(m_BKHM[:, -1], l_BKHM[:, -1], o_BKHMd[:, -1]),
          latent_kv=(k_lat_BHMd, v_lat_BHMd),
          chunk_kv=(jnp.where(in_chunk_C[:, None], k_rot_BHCd, 0.0),
                    jnp.where(in_chunk_C[:, None], v_loc_BKHCd[:, -1], 0)))
    return x_BND + st['drop'](y_BND, deterministic=deterministic)

  @nn.nowrap
  def _expand_kv_of_latents(self, st: dict, r_BMD: jax.Array):
    """Expand-step keys and values of refined latents, head-major [B, H, M, d]."""
    return tuple(map(_heads_first, st['expand'].project_kv(st['ln_latents_expand'](r_BMD))))

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
    v_BHMd = jnp.broadcast_to(v_B1Hd[:, 0, :, None, :].astype(jnp.float32), (B, H) + q_HMd.shape[1:])
    triple = _combine_softmax_triples(tuple(self._read_state('m', 'l', 'o')),
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
    s_lat_BHM = jnp.where(pos >= C, s_lat_BHM, _NEG_INF)
    s_loc_BHC = jnp.einsum('bhd,bhcd->bhc', q_rot_BHd, chunk_k,
                           preferred_element_type=jnp.float32) * scale
    s_loc_BHC = jnp.where(jnp.arange(C) <= j, s_loc_BHC, _NEG_INF)
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


def attend_two_parts(s_a_QA: jax.Array, v_a_Ad: jax.Array, s_b_QB: jax.Array,
                     v_b_Bd: jax.Array) -> jax.Array:
  """softmax([s_a ; s_b]) @ [v_a ; v_b] without concatenating, float32.

  Scores are float32 [..., Q, A] and [..., Q, B] with masked entries at a large
  negative value; values [..., A, d] and [..., B, d].
  """
  # The shift is a constant for differentiation: softmax does not depend on it.
  m = jax.lax.stop_gradient(jnp.maximum(s_a_QA.max(-1, keepdims=True),
                                        s_b_QB.max(-1, keepdims=True)))
  p_a, p_b = jnp.exp(s_a_QA - m), jnp.exp(s_b_QB - m)
  denom = p_a.sum(-1, keepdims=True) + p_b.sum(-1, keepdims=True)
  o = (jnp.einsum('...qa,...ad->...qd', p_a, v_a_Ad, preferred_element_type=jnp.float32)
       + jnp.einsum('...qb,...bd->...qd', p_b, v_b_Bd, preferred_element_type=jnp.float32))
  return o / denom


def expand_attention(q_BKHCd, k_lat_BKHMd, v_lat_BKHMd, k_loc_BKHCd, v_loc_BKHCd,
                     valid_BKC=None):
  """One softmax per token over [latents of the previous chunks ; its chunk's prefix].

  Head-major layouts. Chunk 0 has no previous summary: its latent keys are masked.
  Local keys get rotary positions within the chunk (rotary scores depend only on
  the offset between positions, so in-chunk positions give the same attention as
  absolute ones); latent keys get none. Returns o_BKHCd in float32.
  """
  _, K, _, C, d = q_BKHCd.shape
  scale = d ** -0.5
  sin, cos = rotary_table(C, d)
  sin, cos = sin[None, None, None], cos[None, None, None]
  s_lat = jnp.einsum('bkhcd,bkhmd->bkhcm', q_BKHCd, k_lat_BKHMd,
                     preferred_element_type=jnp.float32) * scale
  s_loc = jnp.einsum('bkhcd,bkhsd->bkhcs', rotate(q_BKHCd, sin, cos), rotate(k_loc_BKHCd, sin, cos),
                     preferred_element_type=jnp.float32) * scale
  has_past = (jnp.arange(K) > 0)[None, :, None, None, None]
  s_lat = jnp.where(has_past, s_lat, _NEG_INF)
  mask_loc = jnp.tril(jnp.ones((C, C), bool))[None, None, None]
  if valid_BKC is not None:
    mask_loc = mask_loc & valid_BKC[:, :, None, None, :]
  s_loc = jnp.where(mask_loc, s_loc, _NEG_INF)
  return attend_two_parts(s_lat, v_lat_BKHMd, s_loc, v_loc_BKHCd)


class FullAttention(nn.Module):
  """Multi-head self-attention over all tokens, causal or bidirectional: the baseline.

  Decoding keeps the usual KV cache: `decode='prefill'` with `cache_len` >= the
  final length, then `decode='step'`; its state grows as O(cache_len * D).
  """

  num_heads: int
  causal: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BND: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True, decode: str | None = None,
               cache_len: int | None = None) -> jax.Array:
    B, N, D = x_BND.shape
    x_BND = x_BND.astype(self.dtype)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='ln')(x_BND)
    mha = MultiHeadAttention(self.num_heads, D, self.dtype, self.param_dtype, name='attn')
    if decode is None:
      y = mha(h, h, mask_BS=mask_BN, is_causal=self.causal, rotary=True)
      return x_BND + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    if not self.causal or decode not in ('prefill', 'step'):
      raise ValueError(f"decode={decode!r} needs causal=True and one of 'prefill', 'step'.")
    q_BNHd = mha.project_q(h)
    k_BNHd, v_BNHd = mha.project_kv(h)
    if decode == 'prefill':
      if cache_len is None or cache_len < N:
        raise ValueError(f"cache_len={cache_len} must be at least the prompt length {N}.")
      positions = np.arange(N)
      q_BNHd, k_BNHd = mha.apply_rotary(q_BNHd, positions), mha.apply_rotary(k_BNHd, positions)
      y = mha.attend(q_BNHd, k_BNHd, v_BNHd, mask_BS=mask_BN, is_causal=True)
      for name, kv in (('key', k_BNHd), ('value', v_BNHd)):
        self.put_variable('cache', name,
                          jnp.zeros((B, cache_len) + kv.shape[2:], kv.dtype).at[:, :N].set(kv))
      self.put_variable('cache', 'index', jnp.asarray(N, jnp.int32))
      return x_BND + y
    if N != 1:
      raise ValueError(f"decode='step' takes one token at a time, got {N}.")
    pos = self.get_variable('cache', 'index')
    q_BNHd, k_BNHd = mha.apply_rotary(q_BNHd, pos[None]), mha.apply_rotary(k_BNHd, pos[None])
    cache_k, cache_v = (
        jax.lax.dynamic_update_slice_in_dim(self.get_variable('cache', name), kv, pos, axis=1)
        for name, kv in (('key', k_BNHd), ('value', v_BNHd)))
    self.put_variable('cache', 'key', cache_k)
    self.put_variable('cache', 'value', cache_v)
    self.put_variable('cache', 'index', pos + 1)
    seen_BS = jnp.broadcast_to(jnp.arange(cache_k.shape[1]) <= pos, (B, cache_k.shape[1]))
    return x_BND + mha.attend(q_BNHd, cache_k, cache_v, mask_BS=seen_BS)
