"""Byte-level language model and sequence classifier from interchangeable attention blocks.

LanguageModel: tokens_BN (int32 bytes, vocab 256) -> embedding -> num_layers x
[attention, MLP] -> final LayerNorm -> logits_BNV (float32).
Classifier: the same stack with bidirectional attention over a padding mask, then
pooling (`pooling='mean'`: the masked mean over real tokens; 'first': the output at
position 0) -> logits_BK over K classes.

Positions: rotary embeddings inside token-token attention (latent_flax/attention/). The
bidirectional latent block has no token-token attention, so without more a latent
classifier sees a bag of tokens; `input_positions='sinusoidal'` adds the fixed
absolute encoding to the token embeddings (classification only; the ListOps
configs use it, since the answer hangs on which operator comes first).

The attention kind comes from `config.attention`, a name in
latent_flax/attention/registry.py, which says what each costs. Parameters are float32; `dtype`
sets the compute dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from latent_flax.system import sharding
from latent_flax.attention import registry
from latent_flax.attention.primitives import ATTENTION_IMPLS
from latent_flax.system.checks import need, need_int

VOCAB_SIZE = 256
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
INPUT_POSITIONS = ('none', 'sinusoidal')
POOLINGS = ('mean', 'first')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The one definition of the model fields and their defaults (`config.model`).

  configs/base.py builds config.model from these defaults; a field only some
  attention kinds read is listed in that kind's registry entry (`fields`).
  """

  attention: str = 'causal_latent'  # a kind of latent_flax/attention/registry.py
  num_latents: int = 64             # M: learnable latents per block (latent kinds)
  num_heads: int = 4                # H: heads in every attention (emb_dim must divide by it)
  chunk_size: int = 128             # C: tokens per chunk (causal_latent)
  latent_decay: str = 'none'        # causal_latent's prefix weights: 'none' (every past token
                                    # alike) or 'multiscale' (learned per-latent decays with
                                    # half-lives of 1 to 256 chunks; design section 2)
  attention_impl: str = 'auto'      # full attention's softmax core: 'auto', 'blockwise'
                                    # (flash-style, O(N*D) memory), 'naive' (N x N, the
                                    # reference) or 'cudnn' (GPU, bfloat16/float16)
  kv_lora_rank: int = 64            # d_c: width of MLA's cached key-value latent (mla)
  q_lora_rank: int = 0              # d_c': width of MLA's query latent; 0 = none (mla)
  rope_head_dim: int = 16           # d_R: MLA's rotary query/key width per head (mla)
  head_dim: int = 32                # d_h: MLA's non-rotary query/key width per head (mla)
  v_head_dim: int = 32              # d_v: MLA's value width per head (mla)
  mla_decode: str = 'absorbed'      # MLA decode steps: 'absorbed' (against the compressed
                                    # cache) or 'naive' (rebuild keys and values; reference)
  memory: int = 0                   # full/mla trained past the window (config.carry_state):
                                    # tokens of keys and values each row carries to its next
                                    # window (Transformer-XL's memory); 0 = none
  emb_dim: int = 128                # D: model width
  mlp_dim: int = 512                # hidden width of the MLP
  num_layers: int = 4               # number of blocks
  dropout_rate: float = 0.0         # dropout on every residual branch while training
  remat: bool = False               # recompute each block in the backward pass (saves memory)
  dtype: str = 'float32'            # compute dtype: 'float32' or 'bfloat16' (params stay float32)
  input_positions: str = 'none'     # 'sinusoidal': absolute positions added to the embeddings
                                    # (classification; the latent block is otherwise order-blind)
  pooling: str = 'mean'             # classifier pooling: 'mean' over real tokens, or 'first'
                                    # (the output at position 0)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict | dict) -> 'ModelConfig':
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(config)
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ValueError(f"config.model has unknown field(s) {unknown}; known: {sorted(fields)}.")
    return cls(**values)


def default_model_config() -> ml_collections.ConfigDict:
  """config.model with every field at its ModelConfig default."""
  return ml_collections.ConfigDict(dataclasses.asdict(ModelConfig()))


# Shape of the model: a workdir trained with other values cannot be resumed.
SHAPE_FIELDS = ('attention', 'num_latents', 'num_heads', 'emb_dim', 'mlp_dim', 'num_layers')
# What the same parameters compute (a config saved before a field existed had its default).
FUNCTION_FIELDS = ('input_positions', 'pooling')


def validate_model_config(config: ml_collections.ConfigDict | ModelConfig, *,
                          task: str = 'lm') -> ModelConfig:
  """Returns the config as a ModelConfig or raises ValueError with one clear line."""
  cfg = config if isinstance(config, ModelConfig) else ModelConfig.from_config(config)

  kind = registry.get(cfg.attention)
  for name in ('num_latents', 'num_heads', 'chunk_size', 'emb_dim', 'mlp_dim', 'num_layers'):
    need_int(f'config.model.{name}', getattr(cfg, name))
  need(cfg.emb_dim % cfg.num_heads == 0,
       f"config.model.emb_dim={cfg.emb_dim} is not divisible by num_heads={cfg.num_heads}; "
       f"pick num_heads among {[h for h in range(1, cfg.emb_dim + 1) if cfg.emb_dim % h == 0]}.")
  need((cfg.emb_dim // cfg.num_heads) % 2 == 0,
       f"config.model.emb_dim / num_heads = {cfg.emb_dim // cfg.num_heads} must be even "
       "(rotary embeddings rotate pairs of channels).")
  need(isinstance(cfg.dropout_rate, (int, float)) and 0.0 <= cfg.dropout_rate < 1.0,
       f"config.model.dropout_rate={cfg.dropout_rate} must be in [0, 1).")
  need(cfg.dtype in DTYPES,
       f"config.model.dtype={cfg.dtype!r} is unknown; use one of {list(DTYPES)}.")
  need(isinstance(cfg.remat, bool), f"config.model.remat={cfg.remat!r} must be True or False.")
  need(cfg.attention_impl in ATTENTION_IMPLS,
       f"config.model.attention_impl={cfg.attention_impl!r} is unknown; use one of "
       f"{list(ATTENTION_IMPLS)}.")
  need(cfg.attention_impl != 'cudnn' or cfg.dtype == 'bfloat16',
       "config.model.attention_impl='cudnn' needs config.model.dtype='bfloat16' (cuDNN's "
       "fused attention has no float32 path); or use 'auto'.")
  need(cfg.input_positions in INPUT_POSITIONS,
       f"config.model.input_positions={cfg.input_positions!r} is unknown; use one of "
       f"{list(INPUT_POSITIONS)}.")
  need(cfg.pooling in POOLINGS,
       f"config.model.pooling={cfg.pooling!r} is unknown; use one of {list(POOLINGS)}.")
  if kind.validate is not None:
    kind.validate(cfg)
  if task == 'lm':
    need(cfg.pooling == 'mean',
         f"config.model.pooling={cfg.pooling!r} is for classification; a language model "
         "does not pool: use 'mean' (the default).")
    need(cfg.input_positions == 'none',
         f"config.model.input_positions={cfg.input_positions!r} is for classification; a "
         "language model takes positions from rotary attention: use 'none'.")
    need(kind.causal,
         f"config.model.attention={cfg.attention!r} cannot do language modelling: it is "
         "bidirectional, so position t would see tokens after t; use one of "
         f"{registry.names(causal=True)}.")
  else:
    need(kind.bidirectional,
         f"config.model.attention={cfg.attention!r} is causal only; classification reads the "
         f"whole sequence: use one of {registry.names(bidirectional=True)}.")
  return cfg


def make_attention(cfg: ModelConfig, *, causal: bool = True, name: str | None = None) -> nn.Module:
  """The attention block of kind `cfg.attention`, with its own pre-LN and residual."""
  return registry.make_layer(cfg, causal=causal, dtype=DTYPES[cfg.dtype], name=name)


class Block(nn.Module):
  """x + attention, then x + MLP(LN(x))."""

  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BND: jax.Array, deterministic: bool,
               mask_BN: jax.Array | None = None, decode: str | None = None,
               cache_len: int | None = None, carry: Any = None):
    """x_BND -> y_BND; with `carry` (the attention's state from the previous window),
    (y_BND, the state for the next window)."""
    cfg = self.cfg
    dtype = DTYPES[cfg.dtype]
    extra = {} if carry is None else {'carry': carry}
    out = make_attention(cfg, causal=self.causal, name='attention')(
        x_BND, mask_BN, deterministic=deterministic, decode=decode, cache_len=cache_len, **extra)
    x_BND, carry = out if carry is not None else (out, None)
    h = nn.LayerNorm(dtype=dtype, name='ln_mlp')(x_BND)
    h = nn.Dense(cfg.mlp_dim, dtype=dtype, name='mlp_in')(h)
    h = nn.Dense(x_BND.shape[-1], dtype=dtype, name='mlp_out')(nn.gelu(h))
    y_BND = x_BND + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    return y_BND if carry is None else (y_BND, carry)


def sinusoidal_positions(length: int, width: int) -> jax.Array:
  """[length, width] float32: sin(p / 10000^(2i/width)) in the first half of the
  channels, cos in the second (the Transformer paper's absolute encoding)."""
  half = width // 2
  freqs_f = 10_000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_Nf = jnp.outer(jnp.arange(length, dtype=jnp.float32), freqs_f)
  return jnp.concatenate([jnp.sin(angles_Nf), jnp.cos(angles_Nf)], axis=-1)


def _embed_and_blocks(cfg: ModelConfig, tokens_BN: jax.Array, deterministic: bool, *,
                      causal: bool, mask_BN: jax.Array | None = None,
                      decode: str | None = None, cache_len: int | None = None,
                      carry: dict | None = None):
  """Embedding, the blocks and the final LayerNorm, created in the calling compact module
  (parameters 'embed', 'block_<i>', 'ln_final'), shared by LanguageModel and Classifier.
  With `carry` ({'block_<i>': that block's state}) returns (x, the blocks' next states)."""
  dtype = DTYPES[cfg.dtype]
  x_BND = nn.Embed(VOCAB_SIZE, cfg.emb_dim, dtype=dtype, name='embed',
                   embedding_init=nn.initializers.normal(1.0))(tokens_BN)
  x_BND = sharding.constrain(x_BND, sharding.BATCH, 'seq')  # positions split along a seq axis
  if cfg.input_positions == 'sinusoidal':
    x_BND = x_BND + sinusoidal_positions(tokens_BN.shape[1], cfg.emb_dim)[None].astype(dtype)
  block = nn.remat(Block, static_argnums=(2,)) if cfg.remat and decode is None else Block
  extra = () if decode is None else (decode, cache_len)
  next_carry = {}
  for i in range(cfg.num_layers):
    name = f'block_{i}'
    if carry is None:
      x_BND = block(cfg, causal=causal, name=name)(x_BND, deterministic, mask_BN, *extra)
    else:
      x_BND, next_carry[name] = block(cfg, causal=causal, name=name)(
          x_BND, deterministic, mask_BN, None, None, carry[name])
    x_BND = sharding.constrain(x_BND, sharding.BATCH, 'seq')
  x_BND = nn.LayerNorm(dtype=dtype, name='ln_final')(x_BND)
  return x_BND if carry is None else (x_BND, next_carry)


class LanguageModel(nn.Module):
  """Decoder-only byte LM. apply({'params': p}, tokens_BN) -> logits_BNV, deterministic.

  Decoding modes (`decode=`, with the mutable 'cache' collection; see evaluation/decode.py):
  'prefill' runs the parallel pass over a prompt and writes each layer's state; 'step'
  takes one token [B, 1] per call and updates the state; 'extend' takes S more tokens
  [B, S] in parallel after those the state holds (a long text in segments). `cache_len`
  bounds the length for full attention's KV cache; the latent state has a fixed size.
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BN: jax.Array, *, deterministic: bool = True,
               decode: str | None = None, cache_len: int | None = None,
               carry: dict | None = None):
    out = _embed_and_blocks(self.cfg, tokens_BN, deterministic, causal=True, decode=decode,
                            cache_len=cache_len, carry=carry)
    x_BND, next_carry = out if carry is not None else (out, None)
    logits_BNV = nn.Dense(VOCAB_SIZE, dtype=DTYPES[self.cfg.dtype], name='head')(x_BND)
    logits_BNV = logits_BNV.astype(jnp.float32)
    return logits_BNV if carry is None else (logits_BNV, next_carry)


def fresh_carry(cfg: ModelConfig, batch: int) -> dict | None:
  """What `batch` rows carry into their first window ({'block_<i>': state}, every leaf
  [batch, ...]): the attention kind's fresh state; None if the kind carries nothing."""
  kind = registry.get(cfg.attention)
  if kind.fresh_carry is None:
    return None
  layers = [kind.fresh_carry(cfg, batch, DTYPES[cfg.dtype]) for _ in range(cfg.num_layers)]
  if layers[0] is None:
    return None
  return {f'block_{i}': layer for i, layer in enumerate(layers)}


def reset_carry(carry: dict, fresh: dict, start_B: jax.Array) -> dict:
  """Rows flagged as starting a document take the fresh state, bit for bit."""
  def pick(old, new):
    flag = start_B.reshape(start_B.shape + (1,) * (old.ndim - 1)).astype(bool)
    return jnp.where(flag, new, old)
  return jax.tree.map(pick, carry, fresh)


class Classifier(nn.Module):
  """Sequence classifier. apply({'params': p}, tokens_BN, mask_BN) -> logits_BK.

  Attention is bidirectional (a kind whose registry entry says `bidirectional`). `mask_BN`
  (True = real token; default: every token; real tokens come first) keeps padded
  tokens out of every attention as keys and out of the pooled mean, so what padding
  holds cannot change the logits.

  `cfg.pooling`: 'mean' averages the real tokens' outputs; 'first' reads the output
  at position 0 (the BERT [CLS] slot, here the first real token). With 'first' the
  head sees token 0's own embedding through the residual stream, and everything
  else only through attention.
  """

  cfg: ModelConfig
  num_classes: int

  @nn.compact
  def __call__(self, tokens_BN: jax.Array, mask_BN: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    mask_BN = jnp.ones(tokens_BN.shape, bool) if mask_BN is None else mask_BN.astype(bool)
    x_BND = _embed_and_blocks(self.cfg, tokens_BN, deterministic, causal=False, mask_BN=mask_BN)
    if self.cfg.pooling == 'first':
      pooled_BD = x_BND[:, 0].astype(jnp.float32)
    else:
      w_BN1 = mask_BN[..., None].astype(jnp.float32)
      pooled_BD = jnp.sum(x_BND.astype(jnp.float32) * w_BN1, axis=1) / jnp.maximum(
          jnp.sum(w_BN1, axis=1), 1.0)
    return nn.Dense(self.num_classes, name='head')(pooled_BD)


def build_model(model_config: ml_collections.ConfigDict | ModelConfig, *, task: str = 'lm',
                num_classes: int | None = None) -> nn.Module:
  """Validates the model config for `task` ('lm' or 'classify') and returns the Module."""
  cfg = validate_model_config(model_config, task=task)
  if task == 'classify':
    return Classifier(cfg, num_classes)
  return LanguageModel(cfg)


def count_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
