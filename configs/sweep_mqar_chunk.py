"""Chunk size at the fall-off: M=4 with 15 keys at 64 tokens, chunk 8 and 32.

    python sweep.py --sweep=configs/sweep_mqar_chunk.py --workdir=runs/sweep_mqar_chunk
    python sweep.py --sweep=configs/sweep_mqar_chunk.py --workdir=runs/sweep_mqar_chunk --report \\
        --report_lines=recall_across_chunks_by_pairs

The short probe's set-up (vocabulary 32, 64 tokens, a mix of 2, 4 and 8 pairs, 2,000
steps) at M=4, seed 1, where recall at 8 pairs is limited by the latents (67-72% with
chunk 16; configs/sweep_mqar_short.py, configs/sweep_mqar_vocab.py), with chunk 8
(8 pairs span two chunks) and chunk 32 (the pairs and the first queries share a
chunk, so more answers come from exact local attention). Compare
`recall_across_chunks_by_pairs`, the answers that must come through the latents.
About 3 minutes a run alone on the 2-core CPU.
"""

BASE = 'configs/mqar.py'
COMMON = {'data.vocab_size': 32, 'data.seq_len': 64, 'data.num_kv_pairs': 8,
          'data.train_pairs_mix': '2,4,8', 'data.eval_pairs': '2,4,8',
          'num_train_steps': 2000, 'eval_every_steps': 250}
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}


def get_sweep():
  return [{'model.attention': 'causal_latent', 'model.num_latents': 4, 'model.chunk_size': c,
           'seed': 1} for c in (8, 32)]
