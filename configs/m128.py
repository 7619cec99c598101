"""Causal latent attention LM with M=128 latents per block, on the built-in corpus.

    python train.py --config=configs/m128.py --workdir=/tmp/lf_m128
"""

from configs import base


def get_config(arg=None):
  config = base.get_config()
  config.model.num_latents = 128   # M: latents per block
  return base.apply_arg(config, arg)
