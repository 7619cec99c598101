"""Does latent capacity track the key vocabulary rather than the pairs present?

    python sweep.py --sweep=configs/sweep_mqar_vocab.py --workdir=runs/sweep_mqar_vocab
    python sweep.py --sweep=configs/sweep_mqar_vocab.py --workdir=runs/sweep_mqar_vocab --report

A test of the reading in docs/mqar/README.md: the latent queries are fixed, so which
latent (and head) stores a pair may depend on the key's content alone, like a hash
table with M x H buckets. Then at a fixed number of pairs, recall should fall as the
key vocabulary grows past M x H. The short probe's set-up (64 tokens, chunk 16, a mix
of 2, 4 and 8 pairs, 2,000 steps) at M=4 (16 buckets with 4 heads) with 8, 15 and 31
possible keys (vocabulary 18, 32, 64), seeds 1 and 2 (the seeds where M=4 left the
plateau at vocabulary 32), and M=16 (64 buckets) at 31 keys as the control. About 3
minutes a run alone on the 2-core CPU.
"""

BASE = 'configs/mqar.py'
COMMON = {'data.seq_len': 64, 'data.num_kv_pairs': 8, 'data.train_pairs_mix': '2,4,8',
          'data.eval_pairs': '2,4,8', 'model.chunk_size': 16, 'num_train_steps': 2000,
          'eval_every_steps': 250}
REPORT = {'metric': 'eval_accuracy', 'lines': 'data.vocab_size'}  # recall at 8 pairs


def get_sweep():
  points = [{'model.attention': 'causal_latent', 'model.num_latents': 4,
             'data.vocab_size': v, 'seed': s} for s in (1, 2) for v in (18, 32, 64)]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': 16,
              'data.vocab_size': 64, 'seed': s} for s in (1, 2)]
  return points
