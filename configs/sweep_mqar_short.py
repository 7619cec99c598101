"""MQAR at a size where the causal latent block does learn recall: M against facts.

    python sweep.py --sweep=configs/sweep_mqar_short.py --workdir=runs/sweep_mqar_short
    python sweep.py --sweep=configs/sweep_mqar_short.py --workdir=runs/sweep_mqar_short --report

configs/sweep_mqar.py (vocabulary 128, length 256) leaves every latent run at chance
within its budget. Here the vocabulary is 32 (15 keys, 16 values) and sequences are
64 tokens, chunk 16: at M=16 recall reached 99.8% at 8 pairs within 1,250 steps.
Every run trains on a mix of 2, 4 and 8 pairs and is tested on each; M in
{2, 4, 8, 16, 32}, each from seeds 0, 1 and 2 (whether a run leaves the loss plateau
within 2,000 steps depends on its initial draw; the report gives the best and the
median over seeds), full attention as the reference. About 3 minutes per latent run
alone, 16 runs.
"""

BASE = 'configs/mqar.py'
COMMON = {'data.vocab_size': 32, 'data.seq_len': 64, 'data.num_kv_pairs': 8,
          'data.train_pairs_mix': '2,4,8', 'data.eval_pairs': '2,4,8',
          'model.chunk_size': 16, 'num_train_steps': 2000, 'eval_every_steps': 250}
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}


def get_sweep():
  points = [{'model.attention': 'full', 'seed': 0}]
  # Seed outermost: a sweep stopped early still has every M at the first seeds.
  points += [{'model.attention': 'causal_latent', 'model.num_latents': m, 'seed': s}
             for s in (0, 1, 2) for m in (2, 4, 8, 16, 32)]
  return points
