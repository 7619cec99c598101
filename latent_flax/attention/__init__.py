"""Attention kinds: one module each, shared primitives, and the registry.

  latent.py         LatentAttention: bidirectional three-step latent block.
  causal_latent.py  CausalLatentAttention: the chunked causal variant (language models),
                    its parallel pass and decoding paths (prefill, step, extend).
  prefix_scan.py    the causal variant's scan mathematics: pure functions of arrays.
  full.py           FullAttention: softmax attention over all tokens, the baseline.
  mla.py            MultiHeadLatentAttention: DeepSeek-V2's MLA (compressed KV cache).
  flash.py          the blockwise (flash-style) softmax core of full attention and MLA.
  primitives.py     rotary positions, projections around one softmax core.
  softmax.py        the online-softmax algebra (triples, two-part softmax), NEG_INF.
  registry.py       the kinds by name and what each answers (causal, latents, fields...).

Shapes: B batch, N tokens, D width, H heads of width d = D / H, M latents,
C chunk size, K = ceil(N / C) chunks. Every block maps x_BND -> y_BND and holds
its own pre-LN and residual, so the kinds are interchangeable in a model.
"""

from latent_flax.attention.causal_latent import CausalLatentAttention
from latent_flax.attention.prefix_scan import chunk_softmax_triples, expand_attention
from latent_flax.attention.full import FullAttention
from latent_flax.attention.latent import LatentAttention
from latent_flax.attention.mla import MultiHeadLatentAttention
from latent_flax.attention.primitives import MultiHeadAttention, rotary_at, rotary_table, rotate
from latent_flax.attention.softmax import (NEG_INF, attend_two_parts, combine_softmax_triples,
                                           finish_softmax)
from latent_flax.attention.registry import AttentionKind, get, make_layer, names, register
