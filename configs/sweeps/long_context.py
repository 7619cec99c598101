"""Does a model use its context? Every kind trained at 4,096 bytes of long documents.

    python sweep.py --sweep=configs/sweeps/long_context.py --workdir=runs/long_context
    python benchmarks/context_use.py --workdir=runs/long_context   # the evaluation

configs/base.py (D=128, 4 layers, 4 heads) on 'stdlib_long' (stdlib files of at least
32 KB, one document each; nothing of its validation split is trained on), windows of
4,096 bytes, 2 per step, the same 150 steps for every point: causal_latent M 16, 64,
256 (C=128), full and MLA with their parameters matched to m64's by MLP width (see
configs/full.py, configs/mla.py). The evaluation reads each validation document from
its first byte at 4,096, 16,384 and 65,536 bytes; its report is in docs/results/long_context/.
"""

BASE = 'configs/base.py'
COMMON = {'data.name': 'stdlib_long', 'data.seq_len': 4096, 'per_device_batch_size': 2,
          'num_train_steps': 150, 'warmup_steps': 15, 'eval_every_steps': 75,
          'checkpoint_every_steps': 75, 'num_eval_steps': 5}


def get_sweep():
  points = [{'model.attention': 'causal_latent', 'model.num_latents': m} for m in (16, 64, 256)]
  points += [{'model.attention': 'full', 'model.mlp_dim': 1062},
             {'model.attention': 'mla', 'model.mlp_dim': 1056}]
  return points
