"""DeepSeek's Multi-head Latent Attention (MLA; DeepSeek-V2 report, section 2.1).

Full softmax attention, causal or bidirectional, whose keys and values are rebuilt
from a small per-token latent, so that decoding caches d_c + d_h^R numbers per token
and layer instead of full attention's 2 * H * d_h. Per token h (after the block's LN):

    c_KV = RMSNorm(h W_DKV)                      [d_c]          cached
    k_C  = c_KV W_UK,  v = c_KV W_UV             H heads of d_h, d_v
    q    = h W_Q, or with query compression (q_lora_rank > 0):
           c_Q = RMSNorm(h W_DQ) [d_c'],  q = c_Q W_UQ
    q = [q_C ; q_R]  (H heads of d_h + d_h^R),   q_R = RoPE(q_R)
    k_R  = RoPE(h W_KR)                          [d_h^R]: ONE rotary key for all heads, cached
    k = [k_C ; k_R],  softmax scale 1 / sqrt(d_h + d_h^R),  out = [heads] W_O

No projection has a bias (as in DeepSeek-V2), which is what lets W_UK and W_UV be
absorbed. Training and prefill run the project's attention core (`impl`, blockwise by
default: no N x N array) on the rebuilt keys and values. A decode step attends straight
against the compressed cache (`absorb=True`): the query's non-rotary part is mapped into
the latent space, scores = (q_C W_UK^T) . c_KV + q_R . k_R, and the attention-weighted
sum of c_KV is mapped out by W_UV. `absorb=False` rebuilds k_C and v from the cache at
every step (the reference the absorbed path is tested against).

Training past the window (`carry`, a Transformer-XL memory): each row carries its last
`memory` tokens' compressed cache (c_KV and the un-rotated k_R) into the next window,
whose queries attend to [memory ; the window's causal prefix], keys rebuilt from it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latent_flax.attention import flash
from latent_flax.attention.primitives import (Dtype, append_to_cache, attention_core, rotary_at,
                                              rotate)
from latent_flax.attention.softmax import NEG_INF

DECODE_PATHS = ('absorbed', 'naive')


def _init(in_axes, out_axes):
  return nn.initializers.lecun_normal(in_axis=in_axes, out_axis=out_axes)


class MultiHeadLatentAttention(nn.Module):
  """MLA block: pre-LN, attention with low-rank keys/values, residual.

  Decoding: `decode='prefill'` with `cache_len` >= the final length, then
  `decode='step'` (one token) or `decode='extend'` (several in parallel, through the
  naive path: keys and values rebuilt from the cache); the cache holds c_KV [B, cache_len, d_c] and the rotated shared
  key k_R [B, cache_len, d_h^R] per layer.
  """

  num_heads: int
  kv_lora_rank: int = 64     # d_c
  q_lora_rank: int = 0       # d_c'; 0 = no query compression
  rope_head_dim: int = 16    # d_h^R
  head_dim: int = 32         # d_h: the non-rotary query/key width per head
  v_head_dim: int = 32       # d_v
  causal: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  impl: str = 'auto'         # the softmax core for training and prefill (ATTENTION_IMPLS)
  absorb: bool = True        # decode steps against the compressed cache (else rebuild k, v)

  def _weight(self, name, shape, in_axes, out_axes):
    return self.param(name, _init(in_axes, out_axes), shape, self.param_dtype).astype(self.dtype)

  def _project(self, h_BTD):
    """Rotary-free parts: q_C [B,T,H,d_h], q_R [B,T,H,d_R], c_KV [B,T,d_c], k_R [B,T,d_R]."""
    D, H = h_BTD.shape[-1], self.num_heads
    dq = self.head_dim + self.rope_head_dim
    if self.q_lora_rank:
      c_q = h_BTD @ self._weight('q_down', (D, self.q_lora_rank), 0, 1)
      c_q = nn.RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='q_norm')(c_q)
      q = jnp.einsum('btc,chk->bthk', c_q,
                     self._weight('q_up', (self.q_lora_rank, H, dq), 0, (1, 2)))
    else:
      q = jnp.einsum('btd,dhk->bthk', h_BTD, self._weight('query', (D, H, dq), 0, (1, 2)))
    c_kv = h_BTD @ self._weight('kv_down', (D, self.kv_lora_rank), 0, 1)
    c_kv = nn.RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='kv_norm')(c_kv)
    k_r = h_BTD @ self._weight('key_rope', (D, self.rope_head_dim), 0, 1)
    return q[..., :self.head_dim], q[..., self.head_dim:], c_kv, k_r

  def _rotate(self, x, positions):
    """RoPE at `positions` on [B, T, H, d_R] (per-head queries) or [B, T, d_R] (the key)."""
    sin, cos = rotary_at(positions, self.rope_head_dim)
    if x.ndim == 4:
      sin, cos = sin[:, None], cos[:, None]
    return rotate(x, sin[None], cos[None]).astype(self.dtype)

  def _rebuild(self, c_kv_BSc, k_r_BSR, w_uk, w_uv):
    """Full keys [B,S,H,d_h+d_R] (the rotary key broadcast over heads) and values."""
    k_c = jnp.einsum('bsc,chk->bshk', c_kv_BSc, w_uk)
    k_r = jnp.broadcast_to(k_r_BSR[:, :, None], k_c.shape[:3] + (self.rope_head_dim,))
    return jnp.concatenate([k_c, k_r], -1), jnp.einsum('bsc,chv->bshv', c_kv_BSc, w_uv)

  @nn.compact
  def __call__(self, x_BND: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True, decode: str | None = None,
               cache_len: int | None = None, carry: dict | None = None):
    B, N, D = x_BND.shape
    H, dc = self.num_heads, self.kv_lora_rank
    x_BND = x_BND.astype(self.dtype)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='ln')(x_BND)
    q_c, q_r, c_kv, k_r = self._project(h)
    w_uk = self._weight('key_up', (dc, H, self.head_dim), 0, (1, 2))
    w_uv = self._weight('value_up', (dc, H, self.v_head_dim), 0, (1, 2))
    w_o = self._weight('out', (H, self.v_head_dim, D), (0, 1), 2)
    out = lambda o_BTHv: jnp.einsum('bthv,hvd->btd', o_BTHv.astype(self.dtype), w_o)

    if carry is not None:
      if not self.causal or decode is not None or mask_BN is not None:
        raise ValueError("a carried memory needs causal attention, no decode mode, no mask.")
      mem = carry['valid'].shape[1]
      c_all = jnp.concatenate([carry['latent'].astype(c_kv.dtype), c_kv], axis=1)
      r_all = jnp.concatenate([carry['key_rope'].astype(k_r.dtype), k_r], axis=1)
      valid = jnp.concatenate([carry['valid'], jnp.ones((B, N), bool)], axis=1)
      k, v = self._rebuild(c_all, self._rotate(r_all, np.arange(mem + N)), w_uk, w_uv)
      q = jnp.concatenate([q_c, self._rotate(q_r, np.arange(mem, mem + N))], -1)
      # Causal with the last query on the last key: query i sees memory and window keys <= i.
      o = flash.flash_attention(q, k, v, causal=True, key_valid_BS=valid)
      keep = lambda x: x[:, x.shape[1] - mem:]
      y = nn.Dropout(self.dropout_rate)(out(o), deterministic=deterministic)
      return x_BND + y, {'latent': keep(c_all), 'key_rope': keep(r_all), 'valid': keep(valid)}

    if decode == 'extend':  # N tokens at positions pos.., in parallel, after the cached ones
      if not self.causal:
        raise ValueError("decode='extend' needs causal=True.")
      pos = self.get_variable('cache', 'index')
      positions = pos + jnp.arange(N)
      q_r, k_r = self._rotate(q_r, positions), self._rotate(k_r, positions)
      k, v = self._rebuild(*append_to_cache(self, pos, {'latent': c_kv, 'key_rope': k_r}), w_uk,
                           w_uv)
      o = flash.flash_attention_from(jnp.concatenate([q_c, q_r], -1), k, v, pos)
      return x_BND + out(o)
    if decode == 'step':
      if N != 1:
        raise ValueError(f"decode='step' takes one token at a time, got {N}.")
      pos = self.get_variable('cache', 'index')
      q_r, k_r = self._rotate(q_r, pos[None]), self._rotate(k_r, pos[None])
      cache_c, cache_r = append_to_cache(self, pos, {'latent': c_kv, 'key_rope': k_r})
      seen_BS = jnp.broadcast_to(jnp.arange(cache_c.shape[1]) <= pos, (B, cache_c.shape[1]))
      if self.absorb:
        return x_BND + out(self._absorbed_step(q_c, q_r, cache_c, cache_r, seen_BS, w_uk, w_uv))
      k, v = self._rebuild(cache_c, cache_r, w_uk, w_uv)
      o = attention_core(jnp.concatenate([q_c, q_r], -1), k, v, impl='naive', mask_BS=seen_BS)
      return x_BND + out(o)

    positions = np.arange(N)
    q_r, k_r = self._rotate(q_r, positions), self._rotate(k_r, positions)
    k, v = self._rebuild(c_kv, k_r, w_uk, w_uv)
    o = attention_core(jnp.concatenate([q_c, q_r], -1), k, v, impl=self.impl, mask_BS=mask_BN,
                       is_causal=self.causal)
    y = out(o)
    if decode is None:
      return x_BND + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    if not self.causal or decode != 'prefill':
      raise ValueError(f"decode={decode!r} needs causal=True and one of 'prefill', 'step'.")
    if cache_len is None or cache_len < N:
      raise ValueError(f"cache_len={cache_len} must be at least the prompt length {N}.")
    for name, new in (('latent', c_kv), ('key_rope', k_r)):
      self.put_variable('cache', name,
                        jnp.zeros((B, cache_len, new.shape[-1]), new.dtype).at[:, :N].set(new))
    self.put_variable('cache', 'index', jnp.asarray(N, jnp.int32))
    return x_BND + y

  @nn.nowrap
  def _absorbed_step(self, q_c_B1Hk, q_r_B1HR, cache_c_BSc, cache_r_BSR, seen_BS, w_uk, w_uv):
    """One query per sequence against the compressed cache: o [B, 1, H, d_v].

    W_UK goes into the query and W_UV after the weighted sum, so the step reads
    S * (d_c + d_R) cached numbers and never forms keys or values of width H * d_h.
    """
    f32 = dict(preferred_element_type=jnp.float32)
    q_lat = jnp.einsum('bthk,chk->bthc', q_c_B1Hk, w_uk, **f32)
    s = (jnp.einsum('bthc,bsc->bhts', q_lat, cache_c_BSc.astype(jnp.float32), **f32)
         + jnp.einsum('bthr,bsr->bhts', q_r_B1HR, cache_r_BSR, **f32))
    s = s * (self.head_dim + self.rope_head_dim) ** -0.5
    s = jnp.where(seen_BS[:, None, None, :], s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1)
    o_lat = jnp.einsum('bhts,bsc->bthc', p, cache_c_BSc.astype(jnp.float32), **f32)
    return jnp.einsum('bthc,chv->bthv', o_lat, w_uv.astype(jnp.float32), **f32)


def fresh_memory(cfg, batch: int, dtype) -> dict:
  """A row's memory at a document's start: `cfg.memory` empty slots of the compressed cache."""
  return {'latent': jnp.zeros((batch, cfg.memory, cfg.kv_lora_rank), dtype),
          'key_rope': jnp.zeros((batch, cfg.memory, cfg.rope_head_dim), dtype),
          'valid': jnp.zeros((batch, cfg.memory), bool)}
