"""Pieces every attention kind shares: rotary positions and the Q/K/V/O projections
around one softmax-attention core (naive, blockwise or cuDNN).

Scores and softmaxes are float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latent_flax.attention import flash

Dtype = Any
# Softmax-attention cores: 'blockwise' (flash.py: O(N*D) memory, causal blocks skipped),
# 'naive' (jax.nn.dot_product_attention's XLA path: N x N scores; the reference),
# 'cudnn' (cuDNN's fused attention on NVIDIA GPUs, float16/bfloat16 only), and 'auto':
# cudnn where it runs (a GPU and a half-precision compute dtype), else blockwise.
ATTENTION_IMPLS = ('auto', 'blockwise', 'naive', 'cudnn')


def resolve_impl(impl: str, dtype) -> str:
  """The core 'auto' stands for here: cudnn on a GPU in float16/bfloat16, else blockwise."""
  if impl != 'auto':
    return impl
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  return 'cudnn' if jax.default_backend() == 'gpu' and half else 'blockwise'


def attention_core(q_BTHd, k_BSHd, v_BSHd, *, impl: str, mask_BS=None,
                   is_causal: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v over heads [B, T, H, d] (values may have another width
  d_v: the output is [B, T, H, d_v]), by the core `impl`."""
  impl = resolve_impl(impl, q_BTHd.dtype)
  if impl == 'blockwise':
    return flash.flash_attention(q_BTHd, k_BSHd, v_BSHd, causal=is_causal, key_valid_BS=mask_BS)
  mask = None if mask_BS is None else mask_BS[:, None, None, :]
  d, dv = q_BTHd.shape[-1], v_BSHd.shape[-1]
  if d != dv:  # jax.nn.dot_product_attention wants one head width: zero-pad to the larger
    width = max(d, dv)
    pad = lambda x: jnp.pad(x, [(0, 0)] * 3 + [(0, width - x.shape[-1])])
    q_BTHd, k_BSHd, v_BSHd = pad(q_BTHd), pad(k_BSHd), pad(v_BSHd)
  o = jax.nn.dot_product_attention(q_BTHd, k_BSHd, v_BSHd, mask=mask, is_causal=is_causal,
                                   scale=d ** -0.5,
                                   implementation='cudnn' if impl == 'cudnn' else None)
  return o[..., :dv]


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
  impl: str = 'naive'  # the softmax-attention core: see ATTENTION_IMPLS

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
             mask_BS: jax.Array | None = None, is_causal: bool = False,
             impl: str | None = None) -> jax.Array:
    """Softmax attention of projected heads (by the core `impl`, default self.impl), then W_O."""
    return self.project_out(attention_core(q_BTHd, k_BSHd, v_BSHd, impl=impl or self.impl,
                                           mask_BS=mask_BS, is_causal=is_causal))

  def __call__(self, q_in_BTD: jax.Array, kv_in_BSD: jax.Array, *,
               mask_BS: jax.Array | None = None, is_causal: bool = False,
               rotary: bool = False) -> jax.Array:
    q_BTHd = self.project_q(q_in_BTD)
    k_BSHd, v_BSHd = self.project_kv(kv_in_BSD)
    if rotary:  # token-token self-attention: positions 0..T-1 on both sides.
      positions = np.arange(q_BTHd.shape[1])
      q_BTHd, k_BSHd = self.apply_rotary(q_BTHd, positions), self.apply_rotary(k_BSHd, positions)
    return self.attend(q_BTHd, k_BSHd, v_BSHd, mask_BS=mask_BS, is_causal=is_causal)


def append_to_cache(module: nn.Module, pos, new: dict[str, jax.Array]) -> tuple[jax.Array, ...]:
  """Writes N new tokens' entries {name: [B, N, ...]} at positions pos.. of `module`'s
  'cache' collection, advances its 'index' by N and returns the updated caches."""
  caches = tuple(jax.lax.dynamic_update_slice_in_dim(module.get_variable('cache', name), x, pos,
                                                     axis=1) for name, x in new.items())
  for name, cache in zip(new, caches):
    module.put_variable('cache', name, cache)
  module.put_variable('cache', 'index', pos + next(iter(new.values())).shape[1])
  return caches


def heads_first(x_BKTHd: jax.Array) -> jax.Array:
  return jnp.swapaxes(x_BKTHd, -2, -3)
