"""Defaults for every experiment; other configs are thin overrides of these.

    python train.py --config=configs/base.py --workdir=/tmp/lf_base
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.attention = 'causal_latent'  # 'causal_latent' (LM), 'full' (baseline), 'latent' (bidirectional)
  m.num_latents = 64             # M: learnable latents per block
  m.num_heads = 4                # H: heads in every attention
  m.chunk_size = 128             # C: tokens per chunk in causal_latent
  m.emb_dim = 256                # D: model width
  m.mlp_dim = 1024               # hidden width of the MLP
  m.num_layers = 4               # number of blocks
  m.dropout_rate = 0.0           # dropout on every residual branch during training
  m.remat = False                # recompute each block in the backward pass (saves memory)
  m.dtype = 'float32'            # compute dtype: 'float32' or 'bfloat16' (params stay float32)
  return m


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.model = model_config()
  return config
