"""MQAR, short probe with seeds: where recall falls off as facts outnumber latents.

    python sweep.py --sweep=configs/sweep_mqar_seeds.py --workdir=runs/sweep_mqar_seeds
    python sweep.py --sweep=configs/sweep_mqar_seeds.py --workdir=runs/sweep_mqar_seeds --report

configs/sweep_mqar_short.py showed that at this size whether a run leaves the loss
plateau within 2,000 steps depends on its initial draw (config.seed), not on M. So
each M trains from three seeds, and the report gives the best and the median recall
over seeds (capacity is what the block can reach; a run still on the plateau shows
where the optimiser did not get). Vocabulary 32 (15 keys, 16 values), 64 tokens,
chunk 16; trained on a mix of 2, 4, 8 and 12 pairs and tested on 1,000 examples of
each. The easy 2-pair quarter is kept from sweep_mqar_short.py: trained on 4, 8 and 12
pairs only, every seed-0 latent run (M=2 to 16, and M=8 at learning rate 1e-2) stayed
at chance for 2,000 steps (runs/mqar_mix_4_8_12).
The data sets are the same for every seed (config.data.seed stays 0); the seed sets
the initial weights, dropout and the batch order. Three more runs at M=8 with chunk 8
show how the chunk size interacts. About 3 minutes per latent run alone, 16 runs.
"""

BASE = 'configs/mqar.py'
COMMON = {'data.vocab_size': 32, 'data.seq_len': 64, 'data.num_kv_pairs': 12,
          'data.train_pairs_mix': '2,4,8,12', 'data.eval_pairs': '2,4,8,12',
          'model.chunk_size': 16, 'num_train_steps': 2000, 'eval_every_steps': 500}
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}
SEEDS = (0, 1, 2)


def get_sweep():
  points = [{'model.attention': 'full', 'seed': 0}]
  # Seed outermost: a sweep stopped early still has every M at the first seeds.
  points += [{'model.attention': 'causal_latent', 'model.num_latents': m, 'seed': s}
             for s in SEEDS for m in (2, 4, 8, 16)]
  points += [{'model.attention': 'causal_latent', 'model.num_latents': 8,
              'model.chunk_size': 8, 'seed': s} for s in SEEDS]
  return points
