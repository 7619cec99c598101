"""Full causal attention at the same width and depth as the latent configs: the baseline.

    python train.py --config=configs/full.py --workdir=/tmp/lf_full
"""

from configs import base


def get_config(arg=None):
  config = base.get_config()
  config.model.attention = 'full'   # softmax attention; blockwise (flash-style) core by default
  return base.apply_arg(config, arg)
