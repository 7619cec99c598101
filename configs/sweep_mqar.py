"""MQAR recall sweep: latents M for causal_latent, full attention as the reference.

    python sweep.py --sweep=configs/sweep_mqar.py --workdir=runs/sweep_mqar
    python sweep.py --sweep=configs/sweep_mqar.py --workdir=runs/sweep_mqar --report

Every run trains on the same mixed train set (4, 8, 16 and 32 pairs, as the
published probe trains) and is tested on three fixed test sets with 8, 16 and 32
pairs (configs/mqar.py), so M in {4, ..., 128} x pairs in {8, 16, 32} takes 6
latent runs, not 18. Two more runs vary the chunk size at M=16, and full
attention runs once more at twice the steps. Report: recall
accuracy vs M, one line per number of pairs; full attention as dashed levels.
"""

BASE = 'configs/mqar.py'
COMMON = {}
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}


def get_sweep():
  points = [{'model.attention': 'full'}]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': m}
             for m in (4, 8, 16, 32, 64, 128)]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': 16, 'model.chunk_size': c}
             for c in (8, 128)]
  # Full attention at twice the budget: where the reference's recall ends up.
  points += [{'model.attention': 'full', 'num_train_steps': 3000}]
  return points
