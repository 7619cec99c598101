"""MQAR at 256 tokens: does the fall-off of configs/sweep_mqar_seeds.py move with length?

    python sweep.py --sweep=configs/sweep_mqar_len256.py --workdir=runs/sweep_mqar_len256
    python sweep.py --sweep=configs/sweep_mqar_len256.py --workdir=runs/sweep_mqar_len256 --report

The same data recipe and training as sweep_mqar_seeds.py (vocabulary 32; 2, 4, 8
and 12 pairs) at four times the length, chunk 32 (8 chunks, as the issue's 256-token
set-up), M in {4, 16} from two seeds each, full attention as the reference. The
pairs sit at the start, so most queries now read the facts through latents
summarising up to 7 chunks. About 12 minutes per latent run here.
"""

from configs import sweep_mqar_seeds as _seeds

BASE = _seeds.BASE
COMMON = {**_seeds.COMMON, 'data.seq_len': 256, 'model.chunk_size': 32}
REPORT = _seeds.REPORT


def get_sweep():
  points = [{'model.attention': 'full', 'seed': 0}]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': m, 'seed': s}
             for s in (0, 1) for m in (16, 4)]
  return points
