"""The online-softmax algebra every attention core and the latent prefix scan build on.

A set of scores s_i with values v_i is summarised by the triple
(m, l, o) = (max s, sum exp(s - m), sum exp(s - m) v); two triples merge
associatively (`combine_softmax_triples`) and o / l is the attention output.
The causal latent block's prefix scan, the blockwise (flash) core and the two-part
softmaxes are built on it. Everything here is float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite "minus infinity": exp(-1e30 - max) is exactly 0.


def combine_softmax_triples(a, b):
  """Associative merge of online-softmax partials (max, sum of exp, weighted sum)."""
  m_a, l_a, o_a = a
  m_b, l_b, o_b = b
  m = jnp.maximum(m_a, m_b)
  w_a, w_b = jnp.exp(m_a - m), jnp.exp(m_b - m)
  return m, w_a * l_a + w_b * l_b, w_a[..., None] * o_a + w_b[..., None] * o_b


def finish_softmax(l_BKHM: jax.Array, o_BKHMd: jax.Array) -> jax.Array:
  """Attention output o / l as [B, K, M, H, d]; an all-invalid prefix gives 0."""
  l_safe = jnp.where(l_BKHM > 0, l_BKHM, 1.0)
  return jnp.swapaxes(o_BKHMd / l_safe[..., None], 2, 3)


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
