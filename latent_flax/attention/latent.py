"""Bidirectional latent block (design section 1): compress, refine, expand.

M learnable latents read the N tokens (step 1), attend to each other (step 2), and
the tokens read them back (step 3): O(N*M*D + M*M*D) time, no N x N matrix. Every
latent sees the whole sequence, so this block is for classification, not for
next-token prediction. No positions: the latents are a set and the tokens meet
them without rotary (use input_positions='sinusoidal' for order).

`_LatentSteps` holds the parameters and sub-layers of the three steps; the causal
block (causal_latent.py) shares it, so the two kinds' parameters are interchangeable.
Intermediate latents are sown into 'intermediates' ('compressed' = S, 'refined' = R).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from latent_flax.attention.primitives import Dtype, MultiHeadAttention


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
