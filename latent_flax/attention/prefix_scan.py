"""The causal latent block's scan mathematics (design section 2): pure functions of arrays.

Step 1 for every prefix at once: `chunk_softmax_triples` summarises each chunk's C tokens as
the latent queries' online-softmax triple, O(N*M*D); `prefix_scan` merges the K = N / C
triples into every prefix's with one associative scan, O(K*M*D) memory and depth log K
(optionally split along a 'seq' mesh axis). With a decay, `seen_later` moves the point a
triple is weighed from. Step 3: `previous_chunk` hands each chunk its predecessor's summary
and `expand_attention` gives every token one softmax over [latents ; its chunk's prefix],
O(N*(M + C)*D), recomputed in the backward pass. No parameters here: causal_latent.py holds
the flax module that calls these.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latent_flax.system import sharding
from latent_flax.attention.primitives import rotary_table, rotate
from latent_flax.attention.softmax import NEG_INF, attend_two_parts, combine_softmax_triples


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


def seen_later(m_HM: jax.Array, decay_HM: jax.Array, chunks) -> jax.Array:
  """The max of a decayed triple weighed from `chunks` chunks later: every weight loses
  exp(-lambda * chunks), so only the max moves. `m_HM` has any leading axes; `chunks` is a
  number or broadcasts against m_HM at its rank."""
  return m_HM - decay_HM.reshape((1,) * (m_HM.ndim - 2) + decay_HM.shape) * chunks


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
      merged = combine_softmax_triples((seen_later(m_a, decay_HM, b[3]), l_a, o_a), b[:3])
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


def expand_attention(q_BKHCd, k_lat_BKHMd, v_lat_BKHMd, k_loc_BKHCd, v_loc_BKHCd,
                     valid_BKC=None, *, keys_rotated: bool = False, has_past_K=None):
  """One softmax per token over [latents of the previous chunks ; its chunk's prefix].

  Head-major layouts. Chunk 0 has no previous summary: its latent keys are masked.
  Local keys get rotary positions within the chunk (rotary scores depend only on
  the offset between positions, so in-chunk positions give the same attention as
  absolute ones); latent keys get none. Returns o_BKHCd in float32.
  `keys_rotated`: the local keys already carry their rotary positions. `has_past_K`:
  which chunks have a previous summary, [K] or per row [B, K] (default: all but chunk 0).

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
  has_past = (jnp.arange(K) > 0) if has_past_K is None else has_past_K  # [K] or [B, K]
  has_past = has_past[..., None, None, None]
  has_past = has_past[None] if has_past.ndim == 4 else has_past
  s_lat = jnp.where(has_past, s_lat, NEG_INF)
  mask_loc = jnp.tril(jnp.ones((C, C), bool))[None, None, None]
  if valid_BKC is not None:
    mask_loc = mask_loc & valid_BKC[:, :, None, None, :]
  s_loc = jnp.where(mask_loc, s_loc, NEG_INF)
  return attend_two_parts(s_lat, v_lat_BKHMd, s_loc, v_loc_BKHCd)


_expand_recomputed = jax.checkpoint(_expand, static_argnums=(7,),
                                    policy=jax.checkpoint_policies.nothing_saveable)
