"""Sweep: latents M in {16, ..., 256} x heads in {2, 4, 8}, plus full attention per head count.

    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=runs/sweep_m_heads
    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=DIR --print_commands  # cluster

18 runs of configs/base.py (600 steps each, ~8 min each on a 2-core CPU).
"""

BASE = 'configs/base.py'  # the config every point overrides
COMMON = {}               # overrides shared by all points


def get_sweep():
  points = [{'model.attention': 'causal_latent', 'model.num_latents': m, 'model.num_heads': h}
            for h in (2, 4, 8) for m in (16, 32, 64, 128, 256)]
  points += [{'model.attention': 'full', 'model.num_heads': h} for h in (2, 4, 8)]
  return points
