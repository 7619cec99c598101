"""The attention kinds at one parameter count: full, MLA at two cache sizes, causal latent.

    python sweep.py --sweep=configs/sweeps/mla.py --workdir=runs/sweep_mla

Every point is configs/base.py (D=128, 4 layers, 4 heads, 8 x 512 bytes of the stdlib
corpus) trained for the same 300 steps, with mlp_dim set so that each model holds
m64's 1,424,384 parameters to within 0.03% (257 parameters per unit of mlp_dim; see
configs/full.py and configs/mla.py). MLA at d_c = 32 and 128 caches 48 and 144 numbers
per token and layer, full attention 256, the causal latent block a fixed state.
Its report is committed in docs/results/sweep_mla/.
"""

BASE = 'configs/base.py'
COMMON = {'num_train_steps': 300, 'warmup_steps': 30, 'eval_every_steps': 100,
          'checkpoint_every_steps': 100, 'num_eval_steps': 20}


def get_sweep():
  return [
      {'model.attention': 'full', 'model.mlp_dim': 1062},
      {'model.attention': 'mla', 'model.kv_lora_rank': 32, 'model.mlp_dim': 1104},
      {'model.attention': 'mla', 'model.kv_lora_rank': 128, 'model.mlp_dim': 960},
      {'model.attention': 'causal_latent', 'model.num_latents': 16, 'model.mlp_dim': 536},
      {'model.attention': 'causal_latent', 'model.num_latents': 64, 'model.mlp_dim': 512},
  ]
