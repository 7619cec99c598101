"""The 256-token fall-off at 16 and 32 pairs, with every key present at the most pairs.

    python sweep.py --sweep=configs/sweep_mqar_len256_pairs.py --workdir=runs/sweep_mqar_len256_pairs
    python sweep.py --sweep=configs/sweep_mqar_len256_pairs.py --workdir=runs/sweep_mqar_len256_pairs --report

configs/sweep_mqar_len256.py located the fall-off at 8 pairs (vocabulary 18, 8 keys):
between M=4 and M=2, i.e. 16 and 8 slots (latents x heads). Here the same set-up with
16 pairs (vocabulary 34: 16 keys; mix 2, 4, 8, 16) at M=8 and 4, and with 32 pairs
(vocabulary 66: 32 keys; mix 2, 8, 16, 32) at M=16 and 8: if the fall-off tracks slots
against facts, it moves to M=8-4 and M=16-8. The report draws one line per vocabulary
(recall on the main test set: 16 or 32 pairs). Seed 1, 2,000 steps, 6 to 8 minutes a run
alone on the 2-core CPU. The train mixes include 2 pairs: with the mix 4, 8, 16, M=8
stayed at chance for all 2,000 steps (24.6 / 12.5 / 6.1% at 4 / 8 / 16 pairs).
"""

BASE = 'configs/mqar.py'
COMMON = {'data.seq_len': 256, 'num_train_steps': 2000, 'eval_every_steps': 250}
REPORT = {'metric': 'eval_accuracy', 'lines': 'data.vocab_size'}

_SETS = {
    16: {'data.vocab_size': 34, 'data.num_kv_pairs': 16, 'data.train_pairs_mix': '2,4,8,16',
         'data.eval_pairs': '4,8,16'},
    32: {'data.vocab_size': 66, 'data.num_kv_pairs': 32, 'data.train_pairs_mix': '2,8,16,32',
         'data.eval_pairs': '8,16,32'}}


def get_sweep():
  return [{'model.attention': 'causal_latent', 'model.num_latents': m, 'seed': 1, **_SETS[pairs]}
          for pairs, m in ((16, 8), (16, 4), (32, 16), (32, 8))]
