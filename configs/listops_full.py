"""ListOps with full bidirectional attention: the quadratic baseline of configs/listops_m64.py.

    python train.py --config=configs/listops_full.py --workdir=runs/listops_full
"""

from configs import base
from configs import listops_m64


def get_config(arg: str | None = None):
  config = listops_m64.get_config()
  config.model.attention = 'full'   # softmax attention over all 2,000 positions, padding masked
  return base.apply_arg(config, arg)
