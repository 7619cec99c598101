"""The optimizer: AdamW with linear warm-up and cosine decay, global-norm clipping."""

from __future__ import annotations

import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to learning_rate, then cosine decay to 10% of it."""
  warmup = min(config.warmup_steps, config.num_train_steps - 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=config.num_train_steps, end_value=0.1 * config.learning_rate)


def _decay_mask(params):
  """Weight decay on kernels and embeddings only (not biases, norms or latents)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], 'key', '')) in ('kernel', 'embedding'), params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
  parts.append(optax.adamw(learning_rate_schedule(config), b1=0.9, b2=0.95,
                           weight_decay=config.weight_decay, mask=_decay_mask))
  return optax.chain(*parts)
