"""MQAR sweeps (configs/mqar.py): how many facts M latents hold, as presets of one grid.

    python sweep.py --sweep=configs/sweeps/mqar.py:short --workdir=runs/sweep_mqar_short
    python sweep.py --sweep=configs/sweeps/mqar.py:short --workdir=runs/sweep_mqar_short --report
    python sweep.py --sweep=configs/sweeps/mqar.py:chunk --workdir=runs/sweep_mqar_chunk --report \\
        --report_lines=recall_across_chunks_by_pairs

Every preset trains on a mix of pair counts and tests on each (recall by pairs; full
attention, where present, is the reference drawn as dashed levels). Results: docs/results/mqar*/.

  cpu           vocabulary 128, 256 tokens, M 4..128, chunk 8/128 at M=16; 1,500 steps.
                Every latent run stayed at chance at this CPU budget (docs/results/mqar).
  gpu           the same grid at 12,000 steps of 32, two seeds; one GPU, 8 runs at a time
                (`--print_commands | XLA_PYTHON_CLIENT_MEM_FRACTION=0.1 xargs -P 8 ...`):
                full 100%, every latent run at chance (docs/results/mqar_gpu).
  short         vocabulary 32, 64 tokens, chunk 16, mix 2/4/8: M 2..32 from seeds 0-2, where
                the block does learn recall (docs/results/mqar_short). ~3 min a run.
  seeds         the short probe with 12 pairs: best and median over three seeds, and chunk 8
                at M=8 (docs/results/mqar_seeds).
  vocab         does capacity track the key vocabulary (M x H buckets)? M=4 at 8, 15, 31
                possible keys, M=16 at 31 (docs/results/mqar_vocab).
  chunk         M=4 at 8 pairs with chunk 8 and 32: answers that must come through the
                latents (docs/results/mqar_chunk).
  len256        vocabulary 18, 256 tokens, chunk 32 (8 chunks): M 1..8 at 8 pairs
                (docs/results/mqar_len256). ~8 min a run.
  len256_pairs  the same at 16 pairs (M 8, 4) and 32 pairs (M 16, 8): does the fall-off
                track slots against facts? One line per vocabulary.
"""

BASE = 'configs/mqar.py'
REPORT = {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}

_SHORT = {'data.vocab_size': 32, 'data.seq_len': 64, 'data.num_kv_pairs': 8,
          'data.train_pairs_mix': '2,4,8', 'data.eval_pairs': '2,4,8',
          'model.chunk_size': 16, 'num_train_steps': 2000, 'eval_every_steps': 250}
_LEN256_SETS = {
    16: {'data.vocab_size': 34, 'data.num_kv_pairs': 16, 'data.train_pairs_mix': '2,4,8,16',
         'data.eval_pairs': '4,8,16'},
    32: {'data.vocab_size': 66, 'data.num_kv_pairs': 32, 'data.train_pairs_mix': '2,8,16,32',
         'data.eval_pairs': '8,16,32'}}


def _latent(m, *more):
  """A causal_latent point; `more` as (key, value) pairs, in the order of its name."""
  return {'model.attention': 'causal_latent', 'model.num_latents': m, **dict(more)}


def _full(**more):
  return {'model.attention': 'full', **more}


def _cpu():
  points = [_full()] + [_latent(m) for m in (4, 8, 16, 32, 64, 128)]
  points += [_latent(16, ('model.chunk_size', c)) for c in (8, 128)]
  points += [_full(num_train_steps=3000)]  # the reference at twice the budget
  return {'common': {}, 'points': points}


def _gpu():
  points = [_full(seed=0)] + [_latent(m, ('seed', s)) for s in (0, 1)
                              for m in (4, 8, 16, 32, 64, 128)]
  points += [_latent(16, ('model.chunk_size', c), ('seed', 0)) for c in (8, 128)]
  return {'common': {'num_train_steps': 12000, 'eval_every_steps': 1000,
                     'checkpoint_every_steps': 4000, 'log_every_steps': 500,
                     'data.num_train_examples': 40000}, 'points': points}


def _short():
  # Seed outermost: a sweep stopped early still has every M at the first seeds.
  points = [_full(seed=0)] + [_latent(m, ('seed', s)) for s in (0, 1, 2)
                              for m in (2, 4, 8, 16, 32)]
  return {'common': _SHORT, 'points': points}


def _seeds():
  points = [_full(seed=0)] + [_latent(m, ('seed', s)) for s in (0, 1, 2) for m in (2, 4, 8, 16)]
  points += [_latent(8, ('model.chunk_size', 8), ('seed', s)) for s in (0, 1, 2)]
  return {'common': {**_SHORT, 'data.num_kv_pairs': 12, 'data.train_pairs_mix': '2,4,8,12',
                     'data.eval_pairs': '2,4,8,12', 'eval_every_steps': 500},
          'points': points}


def _vocab():
  points = [_latent(4, ('data.vocab_size', v), ('seed', s)) for s in (1, 2) for v in (18, 32, 64)]
  points += [_latent(16, ('data.vocab_size', 64), ('seed', s)) for s in (1, 2)]
  common = {k: v for k, v in _SHORT.items() if k != 'data.vocab_size'}
  return {'common': common, 'points': points,
          'report': {'lines': 'data.vocab_size'}}  # recall at 8 pairs


def _chunk():
  common = {k: v for k, v in _SHORT.items() if k != 'model.chunk_size'}
  return {'common': common,
          'points': [_latent(4, ('model.chunk_size', c), ('seed', 1)) for c in (8, 32)]}


def _len256():
  common = {'data.vocab_size': 18, 'data.seq_len': 256, 'data.num_kv_pairs': 8,
            'data.train_pairs_mix': '2,4,8', 'data.eval_pairs': '2,4,8',
            'num_train_steps': 2000, 'eval_every_steps': 250}
  return {'common': common, 'points': [_latent(m, ('seed', 1)) for m in (4, 1, 2, 8)]}


def _len256_pairs():
  points = [_latent(m, ('seed', 1), *_LEN256_SETS[pairs].items())
            for pairs, m in ((16, 8), (16, 4), (32, 16), (32, 8))]
  return {'common': {'data.seq_len': 256, 'num_train_steps': 2000, 'eval_every_steps': 250},
          'points': points, 'report': {'lines': 'data.vocab_size'}}


PRESETS = {'cpu': _cpu, 'gpu': _gpu, 'short': _short, 'seeds': _seeds, 'vocab': _vocab,
           'chunk': _chunk, 'len256': _len256, 'len256_pairs': _len256_pairs}


def get_sweep(preset):
  return PRESETS[preset]()
