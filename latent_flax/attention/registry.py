"""The attention kinds by name, and what the rest of the code may ask about each.

    kind = registry.get(cfg.attention)            # one-line ValueError if unknown
    layer = registry.make_layer(cfg, causal=True)  # the block: pre-LN, attention, residual

Everything outside this package asks an `AttentionKind` (is it causal, does it have
latents, which config fields it reads, how a report labels it, how it decodes)
instead of comparing kind names. Adding a kind: its module, one `register(...)`
below, and its config fields in `model.ModelConfig` if it needs new ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn

from latent_flax.attention.causal_latent import LATENT_DECAYS, CausalLatentAttention, fresh_state
from latent_flax.attention.full import FullAttention, fresh_memory
from latent_flax.attention.latent import LatentAttention
from latent_flax.attention import mla
from latent_flax.attention.mla import DECODE_PATHS, MultiHeadLatentAttention
from latent_flax.system.checks import need_int

# How a report abbreviates the fields kinds read (the rest are printed by name).
# '' leaves a field out of labels (it changes how, not what, is computed).
# QUIET_VALUES: a field at this value (today's block) is left out of labels too.
QUIET_VALUES = {'latent_decay': 'none', 'memory': 0}
FIELD_LABELS = {'num_latents': 'M', 'chunk_size': 'C', 'attention_impl': '', 'mla_decode': '',
                'kv_lora_rank': 'd_c', 'q_lora_rank': "d_c'", 'rope_head_dim': 'd_R',
                'head_dim': 'd_h', 'v_head_dim': 'd_v', 'latent_decay': 'decay'}


@dataclasses.dataclass(frozen=True)
class AttentionKind:
  """One attention kind.

  build(cfg, causal=..., **common) returns the block, where cfg is a
  model.ModelConfig and common holds num_heads, dropout_rate, dtype and name.
  """

  name: str
  build: Callable[..., nn.Module]
  causal: bool          # can model language: no position ever sees a later token
  bidirectional: bool   # can read a whole sequence at once (classification)
  fields: tuple[str, ...] = ()           # config.model fields read besides the shared ones
  function_fields: tuple[str, ...] = ()  # of those, fields that change what the same
                                         # parameters compute (a resumed run must keep them)
  shape_fields: tuple[str, ...] = ()     # of those, fields that change the parameters' shapes
                                         # (besides model.SHAPE_FIELDS)
  decode: str | None = None  # 'state': fixed-size decoding state; 'cache': grows with the
                             # length (cache_len); None: cannot decode
  summary: str = ''          # one line for --help texts and the README table
  # Matmul FLOPs of one layer's forward pass over n tokens (2 per multiply-add), for
  # model-FLOP utilisation in benchmarks: flops(cfg, n) with cfg a ModelConfig.
  flops: Callable[[Any, int], float] | None = None
  # validate(cfg) raises ValueError with one line if the kind's own fields are bad.
  validate: Callable[[Any], None] | None = None
  # fresh_carry(cfg, batch, dtype): the state `batch` rows carry from one training window
  # to the next (config.carry_state), fresh as at a document's start, every leaf
  # [batch, ...]; None (or a function returning None for cfg): nothing to carry.
  fresh_carry: Callable[[Any, int, Any], Any] | None = None

  @property
  def has_latents(self) -> bool:
    return 'num_latents' in self.fields

  def seq_split_unit(self, cfg: Any) -> int:
    """Positions a shard along a 'seq' mesh axis must hold a multiple of: a chunked kind's
    chunk size (its chunks stay whole on one shard), else 1."""
    return self.field_values(cfg)['chunk_size'] if 'chunk_size' in self.fields else 1

  def field_values(self, cfg: Any) -> dict[str, Any]:
    """{field: value} of the fields this kind reads, from a ModelConfig or config.model."""
    get = cfg.get if hasattr(cfg, 'get') else lambda k: getattr(cfg, k)
    return {f: get(f) for f in self.fields}

  def label(self, cfg: Any, without: tuple[str, ...] = ()) -> str:
    """'causal_latent M=64 C=128', 'full': how tables and plots name a model (leaving out
    the fields `without`, which a table may show in columns of their own)."""
    # None: a config saved before the field existed, so at today's value.
    quiet = lambda f, v: f in QUIET_VALUES and v in (None, QUIET_VALUES[f])
    parts = [f"{FIELD_LABELS.get(f, f)}={v}" for f, v in self.field_values(cfg).items()
             if FIELD_LABELS.get(f, f) and f not in without and not quiet(f, v)]
    return ' '.join([self.name] + parts)


_KINDS: dict[str, AttentionKind] = {}


def register(kind: AttentionKind) -> AttentionKind:
  if kind.name in _KINDS:
    raise ValueError(f"attention kind {kind.name!r} is already registered.")
  _KINDS[kind.name] = kind
  return kind


def unregister(name: str) -> None:
  _KINDS.pop(name, None)


def names(*, causal: bool | None = None, bidirectional: bool | None = None) -> list[str]:
  """Registered kind names, optionally only the causal or the bidirectional ones."""
  return [k.name for k in _KINDS.values()
          if (causal is None or k.causal == causal)
          and (bidirectional is None or k.bidirectional == bidirectional)]


def get(name: str) -> AttentionKind:
  if name not in _KINDS:
    raise ValueError(f"config.model.attention={name!r} is unknown; use one of {names()}.")
  return _KINDS[name]


def make_layer(cfg: Any, *, causal: bool, dtype: Any, name: str | None = None) -> nn.Module:
  """The attention block of kind `cfg.attention` (a model.ModelConfig)."""
  return get(cfg.attention).build(cfg, causal=causal, num_heads=cfg.num_heads,
                                  dropout_rate=cfg.dropout_rate, dtype=dtype, name=name)


def _latent_flops(cfg, n: int) -> float:
  d, m = cfg.emb_dim, cfg.num_latents
  return (2 * n * 2 * d * d + 2 * 2 * n * m * d + 2 * 2 * m * d * d  # compress
          + 2 * 4 * m * d * d + 2 * 2 * m * m * d                    # refine
          + 2 * n * 2 * d * d + 2 * 2 * m * d * d + 2 * 2 * n * m * d)  # expand


def _causal_latent_flops(cfg, n: int) -> float:
  d, m, c = cfg.emb_dim, cfg.num_latents, cfg.chunk_size
  k = -(-n // c)
  return (2 * n * 2 * d * d              # compress: token keys and values
          + 2 * 2 * n * m * d            # compress: latent-token scores and values
          + 2 * k * m * d * d            # compress: output projection of every prefix
          + k * (2 * 4 * m * d * d + 2 * 2 * m * m * d)  # refine, every chunk
          + 2 * n * 4 * d * d            # expand: token Q, K, V, O
          + 2 * k * 2 * m * d * d        # expand: latent keys and values per chunk
          + 2 * 2 * n * (m + c / 2) * d)  # expand: scores and values


def _mla_flops(cfg, n: int) -> float:
  d, h, dc, dq = cfg.emb_dim, cfg.num_heads, cfg.kv_lora_rank, cfg.q_lora_rank
  dqk = cfg.head_dim + cfg.rope_head_dim
  query = d * dq + dq * h * dqk if dq else d * h * dqk
  per_token = (query + d * (dc + cfg.rope_head_dim)         # W_Q (or W_DQ, W_UQ); W_DKV, W_KR
               + dc * h * (cfg.head_dim + cfg.v_head_dim)   # W_UK, W_UV
               + h * cfg.v_head_dim * d)                    # W_O
  return 2 * n * per_token + 2 * n * (n / 2) * h * (dqk + cfg.v_head_dim)  # causal attention


def _validate_mla(cfg) -> None:
  for name in ('kv_lora_rank', 'rope_head_dim', 'head_dim', 'v_head_dim'):
    need_int(f'config.model.{name}', getattr(cfg, name))
  need_int('config.model.q_lora_rank', cfg.q_lora_rank, 0, ' (0 = no query compression)')
  if cfg.rope_head_dim % 2:
    raise ValueError(f"config.model.rope_head_dim={cfg.rope_head_dim} must be even (rotary "
                     "embeddings rotate pairs of channels).")
  if cfg.mla_decode not in DECODE_PATHS:
    raise ValueError(f"config.model.mla_decode={cfg.mla_decode!r} is unknown; use one of "
                     f"{list(DECODE_PATHS)}.")
  _validate_memory(cfg)


def _validate_causal_latent(cfg) -> None:
  if cfg.latent_decay not in LATENT_DECAYS:
    raise ValueError(f"config.model.latent_decay={cfg.latent_decay!r} is unknown; use one of "
                     f"{list(LATENT_DECAYS)}.")


def _validate_memory(cfg) -> None:
  need_int('config.model.memory', cfg.memory, 0, ' (tokens carried to the next window; 0 = none)')


def _full_flops(cfg, n: int) -> float:
  d = cfg.emb_dim
  return 2 * n * 4 * d * d + 2 * 2 * n * (n / 2) * d  # projections; causal scores and values


register(AttentionKind(
    name='latent', causal=False, bidirectional=True, fields=('num_latents',),
    build=lambda cfg, causal, **common: LatentAttention(num_latents=cfg.num_latents, **common),
    summary='bidirectional latent block: O(N*M*D); classification only',
    flops=_latent_flops))
register(AttentionKind(
    name='causal_latent', causal=True, bidirectional=False,
    fields=('num_latents', 'chunk_size', 'latent_decay'),
    function_fields=('chunk_size', 'latent_decay'), shape_fields=('latent_decay',),
    decode='state',
    build=lambda cfg, causal, **common: CausalLatentAttention(
        num_latents=cfg.num_latents, chunk_size=cfg.chunk_size, latent_decay=cfg.latent_decay,
        **common),
    summary='chunked causal latent block: O(N*(M+C)*D), fixed-size decoding state',
    flops=_causal_latent_flops, validate=_validate_causal_latent, fresh_carry=fresh_state))
register(AttentionKind(
    name='full', causal=True, bidirectional=True, decode='cache',
    fields=('attention_impl', 'memory'), function_fields=('memory',),
    build=lambda cfg, causal, **common: FullAttention(causal=causal, impl=cfg.attention_impl,
                                                      **common),
    summary='full softmax attention: O(N*N*D), KV cache grows with the length',
    flops=_full_flops, validate=lambda cfg: _validate_memory(cfg),
    fresh_carry=lambda cfg, batch, dtype: fresh_memory(cfg, batch, dtype) if cfg.memory else None))
register(AttentionKind(
    name='mla', causal=True, bidirectional=True, decode='cache',
    fields=('kv_lora_rank', 'q_lora_rank', 'rope_head_dim', 'head_dim', 'v_head_dim',
            'attention_impl', 'mla_decode', 'memory'), function_fields=('memory',),
    shape_fields=('kv_lora_rank', 'q_lora_rank', 'rope_head_dim', 'head_dim', 'v_head_dim'),
    build=lambda cfg, causal, **common: MultiHeadLatentAttention(
        kv_lora_rank=cfg.kv_lora_rank, q_lora_rank=cfg.q_lora_rank,
        rope_head_dim=cfg.rope_head_dim, head_dim=cfg.head_dim, v_head_dim=cfg.v_head_dim,
        causal=causal, impl=cfg.attention_impl, absorb=cfg.mla_decode == 'absorbed', **common),
    summary=("DeepSeek's multi-head latent attention: full attention, O(N*N), on keys and "
             "values rebuilt from a d_c-wide latent; caches d_c + d_R numbers per token"),
    flops=_mla_flops, validate=_validate_mla,
    fresh_carry=lambda cfg, batch, dtype: mla.fresh_memory(cfg, batch, dtype) if cfg.memory else None))
