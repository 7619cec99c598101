"""DeepSeek's multi-head latent attention at the width, depth and parameter count of
configs/m64.py and configs/full.py.

    python train.py --config=configs/mla.py --workdir=/tmp/lf_mla

Per head: d_h = 32 (= D / H, as for full attention) plus a d_R = 16 rotary part; the
keys and values are rebuilt from a d_c = 64 latent, so decoding caches 64 + 16 = 80
numbers per token and layer against full attention's 2 x 4 x 32 = 256. No query
compression (q_lora_rank = 0), as DeepSeek-V2-Lite. Parameters matched by widening the
MLP: the MLA layer holds a few more parameters than full attention's and far fewer than
the latent block's, and mlp_dim is the width that brings the total closest to m64's,
within 0.05% (tests/test_configs.py).
"""

from configs import base


def get_config(arg=None):
  config = base.get_config()
  config.model.attention = 'mla'
  config.model.kv_lora_rank = 64    # d_c: cached latent per token and layer
  config.model.q_lora_rank = 0      # d_c': no query compression
  config.model.rope_head_dim = 16   # d_R: the decoupled rotary part (one shared key)
  config.model.head_dim = 32        # d_h
  config.model.v_head_dim = 32      # d_v
  config.model.mlp_dim = 1056       # parameters matched to m64.py (see above)
  return base.apply_arg(config, arg)
