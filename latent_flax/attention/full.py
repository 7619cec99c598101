"""Full multi-head self-attention, causal or bidirectional: the baseline.

O(N*N*D) time (half the blocks when causal). `impl` picks the softmax core
(primitives.ATTENTION_IMPLS): by default the blockwise flash-style core of flash.py,
O(N*D) memory, or cuDNN's fused attention on a GPU in half precision; 'naive' is XLA's
N x N path, kept as the reference. Rotary positions on queries and keys. Decoding keeps
the usual KV cache of O(cache_len * D) per layer.

Training past the window (`carry`, Transformer-XL's memory): each row carries the keys and
values of its last `memory` tokens into the next window; the window's queries attend to
[memory ; the window's causal prefix]. Rotary positions count from the memory's first slot,
which gives the same scores as absolute positions (they depend only on offsets).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latent_flax.attention import flash
from latent_flax.attention.primitives import Dtype, MultiHeadAttention, append_to_cache


class FullAttention(nn.Module):
  """Multi-head self-attention over all tokens, causal or bidirectional: the baseline.

  Decoding keeps the usual KV cache: `decode='prefill'` with `cache_len` >= the
  final length, then `decode='step'` (one token) or `decode='extend'` (several, in
  parallel: streaming a long text); its state grows as O(cache_len * D).
  """

  num_heads: int
  causal: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x_BND: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True, decode: str | None = None,
               cache_len: int | None = None, carry: dict | None = None):
    B, N, D = x_BND.shape
    x_BND = x_BND.astype(self.dtype)
    h = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name='ln')(x_BND)
    mha = MultiHeadAttention(self.num_heads, D, self.dtype, self.param_dtype, impl=self.impl,
                             name='attn')
    if carry is not None:
      if not self.causal or decode is not None or mask_BN is not None:
        raise ValueError("a carried memory needs causal attention, no decode mode, no mask.")
      y, carry = self._with_memory(mha, h, carry)
      return x_BND + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic), carry
    if decode is None:
      y = mha(h, h, mask_BS=mask_BN, is_causal=self.causal, rotary=True)
      return x_BND + nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    if not self.causal or decode not in ('prefill', 'step', 'extend'):
      raise ValueError(f"decode={decode!r} needs causal=True and one of 'prefill', 'step', "
                       "'extend'.")
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
    pos = self.get_variable('cache', 'index')
    if decode == 'extend':  # N tokens at positions pos.., in parallel, after the cached ones
      positions = pos + jnp.arange(N)
      q_BNHd, k_BNHd = mha.apply_rotary(q_BNHd, positions), mha.apply_rotary(k_BNHd, positions)
      cache_k, cache_v = append_to_cache(self, pos, {'key': k_BNHd, 'value': v_BNHd})
      o = flash.flash_attention_from(q_BNHd, cache_k, cache_v, pos)
      return x_BND + mha.project_out(o)
    if N != 1:
      raise ValueError(f"decode='step' takes one token at a time, got {N}.")
    q_BNHd, k_BNHd = mha.apply_rotary(q_BNHd, pos[None]), mha.apply_rotary(k_BNHd, pos[None])
    cache_k, cache_v = append_to_cache(self, pos, {'key': k_BNHd, 'value': v_BNHd})
    seen_BS = jnp.broadcast_to(jnp.arange(cache_k.shape[1]) <= pos, (B, cache_k.shape[1]))
    # One query row: there is no N x N array to avoid, and XLA's single pass over the cache
    # is faster than the blockwise loop over key blocks (timed on CPU at 4k and 64k tokens).
    return x_BND + mha.attend(q_BNHd, cache_k, cache_v, mask_BS=seen_BS, impl='naive')

  @nn.nowrap
  def _with_memory(self, mha: MultiHeadAttention, h_BND: jax.Array, carry: dict):
    """The window attending to [memory ; its causal prefix], and the next memory: the last
    `memory` tokens' keys and values (without rotary) and which slots hold a token."""
    B, N, _ = h_BND.shape
    mem = carry['valid'].shape[1]
    q_BNHd = mha.project_q(h_BND)
    k_BNHd, v_BNHd = mha.project_kv(h_BND)
    k_BSHd = jnp.concatenate([carry['key'].astype(k_BNHd.dtype), k_BNHd], axis=1)
    v_BSHd = jnp.concatenate([carry['value'].astype(v_BNHd.dtype), v_BNHd], axis=1)
    valid_BS = jnp.concatenate([carry['valid'], jnp.ones((B, N), bool)], axis=1)
    q_BNHd = mha.apply_rotary(q_BNHd, np.arange(mem, mem + N))
    # Causal with the last query on the last key: query i sees memory and window keys <= i.
    o = flash.flash_attention(q_BNHd, mha.apply_rotary(k_BSHd, np.arange(mem + N)), v_BSHd,
                              causal=True, key_valid_BS=valid_BS)
    keep = lambda x: x[:, x.shape[1] - mem:]
    return mha.project_out(o), {'key': keep(k_BSHd), 'value': keep(v_BSHd),
                                'valid': keep(valid_BS)}


def fresh_memory(cfg, batch: int, dtype) -> dict:
  """A row's memory at a document's start: `cfg.memory` empty slots."""
  d = cfg.emb_dim // cfg.num_heads
  zeros = jnp.zeros((batch, cfg.memory, cfg.num_heads, d), dtype)
  return {'key': zeros, 'value': zeros, 'valid': jnp.zeros((batch, cfg.memory), bool)}
