"""Full causal attention at the width, depth and parameter count of configs/m64.py.

    python train.py --config=configs/full.py --workdir=/tmp/lf_full

Parameters matched to m64.py by widening the MLP: the latent block holds more parameters
than full attention (the latents, and the compress, refine and expand projections), and
mlp_dim is the width that brings the total closest to m64's, within 0.05%
(tests/test_configs.py). `configs/full.py:mlp=512` is the same model at m64's MLP width
instead.
"""

from configs import base


def get_config(arg=None):
  config = base.get_config()
  config.model.attention = 'full'   # softmax attention; blockwise (flash-style) core by default
  config.model.mlp_dim = 1062       # parameters matched to m64.py (see above)
  return base.apply_arg(config, arg)
