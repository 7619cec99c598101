"""A short sweep that shows what M buys in about 20 minutes on a 2-core CPU.

    python sweep.py --sweep=configs/sweeps/quick.py --workdir=runs/sweep_quick

Small models (2 layers, D=128) for 300 steps of 8 x 512 bytes with chunk size 32,
so that everything further back than 32 bytes reaches a token only through the
latents: M in {4, 16, 64} at 2 and 8 heads, and full attention at each head count.
Its report is committed in docs/results/sweep_quick/.
"""

BASE = 'configs/base.py'
COMMON = {'model.num_layers': 2, 'model.chunk_size': 32, 'num_train_steps': 300,
          'warmup_steps': 30, 'eval_every_steps': 300, 'checkpoint_every_steps': 100,
          'num_eval_steps': 20}


def get_sweep():
  points = [{'model.attention': 'causal_latent', 'model.num_latents': m, 'model.num_heads': h}
            for h in (2, 8) for m in (4, 16, 64)]
  points += [{'model.attention': 'full', 'model.num_heads': h} for h in (2, 8)]
  return points
