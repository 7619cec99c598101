"""Causal latent attention LM with M=16 latents per block, on the built-in corpus.

    python train.py --config=configs/m16.py --workdir=/tmp/lf_m16
"""

from configs import base


def get_config(arg=None):
  config = base.get_config()
  config.model.num_latents = 16   # M: latents per block
  return base.apply_arg(config, arg)
