"""The issue's MQAR grid (vocabulary 128, 256 tokens) at a budget one GPU affords.

    python sweep.py --sweep=configs/sweep_mqar_gpu.py --workdir=runs/sweep_mqar_gpu
    python sweep.py --sweep=configs/sweep_mqar_gpu.py --workdir=runs/sweep_mqar_gpu --print_commands \
        | XLA_PYTHON_CLIENT_MEM_FRACTION=0.1 xargs -P 8 -I{} sh -c '{}'

configs/sweep_mqar.py is the same grid at the 2-core CPU's budget (1,500 steps), where
every latent run stayed at chance. Here each run gets 12,000 steps of 32 examples
(384,000 examples from a fixed train set of 40,000, mixed 4, 8, 16 and 32 pairs) and
is tested on 8, 16 and 32 pairs: M in {4, ..., 128} from two seeds, chunk 8 and 128
at M=16, full attention as the reference. On one H100, eight runs at a time (the
second command), the 15 runs took 7.5 minutes; on the 2-core CPU about 15 hours.
Result (docs/mqar_gpu): full attention 100% at 8, 16 and 32 pairs; every latent run,
M=4 to 128, chunk 8 to 128, at chance.
"""

BASE = 'configs/mqar.py'
COMMON = {'num_train_steps': 12000, 'eval_every_steps': 1000, 'checkpoint_every_steps': 4000,
          'log_every_steps': 500, 'data.num_train_examples': 40000}
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}


def get_sweep():
  points = [{'model.attention': 'full', 'seed': 0}]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': m, 'seed': s}
             for s in (0, 1) for m in (4, 8, 16, 32, 64, 128)]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': 16,
              'model.chunk_size': c, 'seed': 0} for c in (8, 128)]
  return points
