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

from latent_flax.attention.causal_latent import CausalLatentAttention
from latent_flax.attention.full import FullAttention
from latent_flax.attention.latent import LatentAttention

# How a report abbreviates the fields kinds read (the rest are printed by name).
# '' leaves a field out of labels (it changes how, not what, is computed).
FIELD_LABELS = {'num_latents': 'M', 'chunk_size': 'C', 'attention_impl': ''}


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
  decode: str | None = None  # 'state': fixed-size decoding state; 'cache': grows with the
                             # length (cache_len); None: cannot decode
  summary: str = ''          # one line for --help texts and the README table
  # Matmul FLOPs of one layer's forward pass over n tokens (2 per multiply-add), for
  # model-FLOP utilisation in benchmarks: flops(cfg, n) with cfg a ModelConfig.
  flops: Callable[[Any, int], float] | None = None

  @property
  def has_latents(self) -> bool:
    return 'num_latents' in self.fields

  def field_values(self, cfg: Any) -> dict[str, Any]:
    """{field: value} of the fields this kind reads, from a ModelConfig or config.model."""
    get = cfg.get if hasattr(cfg, 'get') else lambda k: getattr(cfg, k)
    return {f: get(f) for f in self.fields}

  def label(self, cfg: Any) -> str:
    """'causal_latent M=64 C=128', 'full': how tables and plots name a model."""
    parts = [f"{FIELD_LABELS.get(f, f)}={v}" for f, v in self.field_values(cfg).items()
             if FIELD_LABELS.get(f, f)]
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
    fields=('num_latents', 'chunk_size'), function_fields=('chunk_size',), decode='state',
    build=lambda cfg, causal, **common: CausalLatentAttention(
        num_latents=cfg.num_latents, chunk_size=cfg.chunk_size, **common),
    summary='chunked causal latent block: O(N*(M+C)*D), fixed-size decoding state',
    flops=_causal_latent_flops))
register(AttentionKind(
    name='full', causal=True, bidirectional=True, decode='cache', fields=('attention_impl',),
    build=lambda cfg, causal, **common: FullAttention(causal=causal, impl=cfg.attention_impl,
                                                      **common),
    summary='full softmax attention: O(N*N*D), KV cache grows with the length',
    flops=_full_flops))
