"""The fall-off at 256 tokens: M against facts through 8 chunks of latents.

    python sweep.py --sweep=configs/sweep_mqar_len256.py --workdir=runs/sweep_mqar_len256
    python sweep.py --sweep=configs/sweep_mqar_len256.py --workdir=runs/sweep_mqar_len256 --report

Vocabulary 18 (8 keys, 9 values), 256 tokens, chunk 32 (8 chunks), a mix of 2, 4 and 8
pairs, tested on each; 2 layers, D=64, 4 heads. At 8 pairs the pairs fill the first 16
tokens, so most answers (`recall_across_chunks_by_pairs`) come through the latents.
With vocabulary 32 the small-M runs stayed on the loss plateau at this length on the
CPU (docs/mqar/README.md); with 9 values M=4 learned 8 pairs at 64 tokens within
1,000 steps (configs/sweep_mqar_vocab.py). M in {1, 2, 4, 8}, seed 1, 2,000 steps of
32, about 8 minutes a run alone on the 2-core CPU.
"""

BASE = 'configs/mqar.py'
COMMON = {'data.vocab_size': 18, 'data.seq_len': 256, 'data.num_kv_pairs': 8,
          'data.train_pairs_mix': '2,4,8', 'data.eval_pairs': '2,4,8',
          'num_train_steps': 2000, 'eval_every_steps': 250}
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}


def get_sweep():
  return [{'model.attention': 'causal_latent', 'model.num_latents': m, 'seed': 1}
          for m in (4, 1, 2, 8)]
