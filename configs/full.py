"""Full causal attention at the same width and depth as the latent configs: the baseline.

    python train.py --config=configs/full.py --workdir=/tmp/lf_full
"""

from configs import base


def get_config(arg=None):
  config = base.get_config()
  config.model.attention = 'full'   # quadratic attention through jax.nn.dot_product_attention
  return base.apply_arg(config, arg)
