"""Blockwise softmax attention with an online softmax (the FlashAttention algorithm) in XLA.

    o_BTHd = flash_attention(q_BTHd, k_BSHd, v_BSHd, causal=True, key_valid_BS=None)

Query blocks of `block_q` rows meet key blocks of `block_k` columns; each query block
keeps a running max, sum of exponentials and weighted sum of values (the online-softmax
triple of primitives.py) while it walks over the key blocks. With `causal=True` a query
block visits only the key blocks at or below the diagonal: the blocks above it are
skipped (the loop stops there), not computed and masked. The backward pass is a custom
VJP that recomputes each block's scores from q, k and the saved log-sum-exp, so no
N x N array exists in either pass: memory is O(N*D) (the inputs, the output, the
log-sum-exp and the gradients), time O(N^2*D) with half the blocks for causal attention.

Scores and softmax are float32 whatever the input dtype. Sequences whose length is not
a multiple of the block are padded at the end; padded keys are never attended to and
padded queries are dropped. `key_valid_BS` (True = a real key) masks keys such as
padding or the unwritten part of a KV cache. A query with no valid key gets 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from latent_flax.attention.softmax import NEG_INF

DEFAULT_BLOCK = 512


def block_sizes(t: int, s: int, block: int = DEFAULT_BLOCK) -> tuple[int, int]:
  """(block_q, block_k) for t queries and s keys: `block`, or the whole (8-padded)
  length when it is shorter, so a short sequence is one block."""
  fit = lambda n: min(block, -(-n // 8) * 8)
  return fit(t), fit(s)


def flash_attention(q_BTHd: jax.Array, k_BSHd: jax.Array, v_BSHd: jax.Array, *,
                    causal: bool, key_valid_BS: jax.Array | None = None,
                    block: int = DEFAULT_BLOCK) -> jax.Array:
  """softmax(q k^T / sqrt(d) [causal, key mask]) v, blockwise; [B, T, H, dv] in q's dtype.

  Causal attention aligns the last query with the last key (query i sees keys
  0 .. i + S - T), which is the usual alignment for T == S.
  """
  B, T, H, d = q_BTHd.shape
  S = k_BSHd.shape[1]
  bq, bk = block_sizes(T, S, block)
  tp, sp = -(-T // bq) * bq, -(-S // bk) * bk
  valid_BS = jnp.ones((B, S), bool) if key_valid_BS is None else key_valid_BS.astype(bool)
  q, k, v = _heads_first(q_BTHd, tp), _heads_first(k_BSHd, sp), _heads_first(v_BSHd, sp)
  valid = jnp.pad(valid_BS, ((0, 0), (0, sp - S)))
  o = _flash(q, k, v, valid, causal, bq, bk, T, S)
  return jnp.swapaxes(o[:, :, :T], 1, 2).astype(q_BTHd.dtype)


def _heads_first(x_BTHd, length: int):
  """[B, T, H, d] -> [B, H, length, d], zero-padded at the end."""
  return jnp.pad(jnp.swapaxes(x_BTHd, 1, 2), ((0, 0), (0, 0), (0, length - x_BTHd.shape[1]),
                                              (0, 0)))


def _block(x, index, size: int, axis: int = 2):
  """Block `index` of `size` rows along `axis`."""
  return jax.lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


def _num_key_blocks(i, causal: bool, bq: int, bk: int, t: int, s: int, nk: int):
  """Key blocks query block i visits: all, or (causal) those at or below its diagonal."""
  if not causal:
    return nk
  last_key = jnp.minimum((i + 1) * bq - 1 + (s - t), s - 1)  # of the block's last real query
  return jnp.clip(last_key // bk + 1, 0, nk)


def _first_query_block(j, causal: bool, bq: int, bk: int, t: int, s: int):
  """The first query block that sees key block j (causal), else 0."""
  if not causal:
    return 0
  return jnp.maximum(j * bk - (s - t), 0) // bq


def _block_scores(q_i, k_j, valid_j, i, j, causal, bq, bk, t, s, scale):
  """Masked float32 scores [B, H, bq, bk] of query block i against key block j."""
  s_ij = jnp.einsum('bhqd,bhkd->bhqk', q_i, k_j, preferred_element_type=jnp.float32) * scale
  keep = valid_j[:, None, None, :]
  if causal:
    rows = i * bq + jnp.arange(bq) + (s - t)
    cols = j * bk + jnp.arange(bk)
    keep = keep & (cols[None, :] <= rows[:, None])[None, None]
  return jnp.where(keep, s_ij, NEG_INF), keep


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _flash(q, k, v, valid, causal, bq, bk, t, s):
  return _flash_forward(q, k, v, valid, causal, bq, bk, t, s)[0]


def _flash_forward(q, k, v, valid, causal, bq, bk, t, s):
  """Heads-first padded inputs [B, H, Tp, d]; returns (o [B, H, Tp, dv], lse [B, H, Tp])."""
  B, H, tp, d = q.shape
  nq, nk = tp // bq, k.shape[2] // bk
  dv = v.shape[-1]
  scale = d ** -0.5

  def query_block(i, carry):
    o, lse = carry
    q_i = _block(q, i, bq)

    def key_block(j, acc):
      m, l, w = acc
      k_j = _block(k, j, bk)
      v_j = _block(v, j, bk)
      valid_j = _block(valid, j, bk, axis=1)
      s_ij, keep = _block_scores(q_i, k_j, valid_j, i, j, causal, bq, bk, t, s, scale)
      m_new = jnp.maximum(m, s_ij.max(-1))
      p = jnp.where(keep, jnp.exp(s_ij - m_new[..., None]), 0.0)
      alpha = jnp.exp(m - m_new)
      w = alpha[..., None] * w + jnp.einsum('bhqk,bhkd->bhqd', p, v_j.astype(jnp.float32),
                                            preferred_element_type=jnp.float32)
      return m_new, alpha * l + p.sum(-1), w

    init = (jnp.full((B, H, bq), NEG_INF, jnp.float32), jnp.zeros((B, H, bq), jnp.float32),
            jnp.zeros((B, H, bq, dv), jnp.float32))
    m, l, w = jax.lax.fori_loop(0, _num_key_blocks(i, causal, bq, bk, t, s, nk), key_block,
                                init)
    l_safe = jnp.where(l > 0, l, 1.0)
    o = jax.lax.dynamic_update_slice_in_dim(o, (w / l_safe[..., None]).astype(o.dtype),
                                            i * bq, axis=2)
    lse_i = jnp.where(l > 0, m + jnp.log(l_safe), jnp.inf)  # inf: p = exp(s - inf) = 0
    return o, jax.lax.dynamic_update_slice_in_dim(lse, lse_i, i * bq, axis=2)

  o = jnp.zeros((B, H, tp, dv), q.dtype)
  lse = jnp.zeros((B, H, tp), jnp.float32)
  o, lse = jax.lax.fori_loop(0, nq, query_block, (o, lse))
  return o, lse


def _flash_fwd(q, k, v, valid, causal, bq, bk, t, s):
  o, lse = _flash_forward(q, k, v, valid, causal, bq, bk, t, s)
  return o, (q, k, v, valid, o, lse)


def _flash_bwd(causal, bq, bk, t, s, residuals, do):
  """Key block by key block: dk_j and dv_j accumulate over the query blocks that see j;
  dq accumulates into its rows. Scores are recomputed from q, k and the saved lse."""
  q, k, v, valid, o, lse = residuals
  B, H, tp, d = q.shape
  nq, nk = tp // bq, k.shape[2] // bk
  scale = d ** -0.5
  do = do.astype(jnp.float32)
  delta = jnp.sum(do * o.astype(jnp.float32), axis=-1)  # [B, H, Tp]: rowsum(dO * O)

  def key_block(j, dq):
    k_j = _block(k, j, bk)
    v_j = _block(v, j, bk).astype(jnp.float32)
    valid_j = _block(valid, j, bk, axis=1)

    def query_block(i, acc):
      dq, dk_j, dv_j = acc
      q_i = _block(q, i, bq)
      do_i = _block(do, i, bq)
      lse_i = _block(lse, i, bq)
      delta_i = _block(delta, i, bq)
      s_ij, keep = _block_scores(q_i, k_j, valid_j, i, j, causal, bq, bk, t, s, scale)
      p = jnp.where(keep, jnp.exp(s_ij - lse_i[..., None]), 0.0)
      dv_j = dv_j + jnp.einsum('bhqk,bhqd->bhkd', p, do_i, preferred_element_type=jnp.float32)
      dp = jnp.einsum('bhqd,bhkd->bhqk', do_i, v_j, preferred_element_type=jnp.float32)
      ds = p * (dp - delta_i[..., None]) * scale
      dk_j = dk_j + jnp.einsum('bhqk,bhqd->bhkd', ds, q_i.astype(jnp.float32),
                               preferred_element_type=jnp.float32)
      dq_i = _block(dq, i, bq) + jnp.einsum(
          'bhqk,bhkd->bhqd', ds, k_j.astype(jnp.float32), preferred_element_type=jnp.float32)
      return jax.lax.dynamic_update_slice_in_dim(dq, dq_i, i * bq, axis=2), dk_j, dv_j

    init = (dq, jnp.zeros((B, H, bk, d), jnp.float32),
            jnp.zeros((B, H, bk, v.shape[-1]), jnp.float32))
    dq, dk_j, dv_j = jax.lax.fori_loop(_first_query_block(j, causal, bq, bk, t, s), nq,
                                       query_block, init)
    return dq, dk_j, dv_j

  def outer(j, carry):
    dq, dk, dv = carry
    dq, dk_j, dv_j = key_block(j, dq)
    dk = jax.lax.dynamic_update_slice_in_dim(dk, dk_j, j * bk, axis=2)
    dv = jax.lax.dynamic_update_slice_in_dim(dv, dv_j, j * bk, axis=2)
    return dq, dk, dv

  init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32),
          jnp.zeros(v.shape, jnp.float32))
  dq, dk, dv = jax.lax.fori_loop(0, nk, outer, init)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention_from(q_BTHd: jax.Array, k_BSHd: jax.Array, v_BSHd: jax.Array,
                         q_start: jax.Array, *, block: int = DEFAULT_BLOCK) -> jax.Array:
  """Causal attention of T queries at positions q_start .. q_start + T - 1 against the
  first q_start + T of S cached keys (the rest of the cache is never read): continuing a
  sequence from a KV cache. `q_start` may be traced. Forward only (evaluation and
  decoding), blockwise as flash_attention: [B, T, H, dv] in q's dtype.
  """
  B, T, H, d = q_BTHd.shape
  S = k_BSHd.shape[1]
  bq, bk = block_sizes(T, S, block)
  tp, sp = -(-T // bq) * bq, -(-S // bk) * bk
  q, k, v = _heads_first(q_BTHd, tp), _heads_first(k_BSHd, sp), _heads_first(v_BSHd, sp)
  end = jnp.asarray(q_start, jnp.int32) + T  # keys at or after `end` are not yet written
  valid = jnp.broadcast_to(jnp.arange(sp) < end, (B, sp))
  # _flash_forward aligns the last query with key `s - 1`; s = end does exactly that.
  o, _ = _flash_forward(q, k, v, valid, True, bq, bk, T, end)
  return jnp.swapaxes(o[:, :, :T], 1, 2).astype(q_BTHd.dtype)
