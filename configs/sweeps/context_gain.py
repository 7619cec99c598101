"""What does the latent summary buy, by position, and does a longer past help? (issue 35)

    python sweep.py --sweep=configs/sweeps/context_gain.py:stdlib_long --workdir=runs/context_gain/stdlib_long
    python sweep.py --sweep=configs/sweeps/context_gain.py:vim --workdir=runs/context_gain/vim
    python benchmarks/step_time.py --sweep=configs/sweeps/context_gain.py:stdlib_long \
        --out docs/results/context_gain/step_time                    # the equal-time budgets
    python sweep.py --sweep=configs/sweeps/context_gain.py:stdlib_long_time --workdir=...
    python benchmarks/context_use.py --workdir=runs/context_gain/stdlib_long \
        --lengths 4096 --restart_every 128 --out docs/results/context_gain/stdlib_long

The runs of configs/sweeps/long_context.py (base.py: D=128, 4 layers, 4 heads; 4,096-byte
windows, 2 per step, 150 steps), on two corpora of long documents: 'stdlib_long' (Python
source files of at least 32 KB) and 'vim' (Vim's help files of at least 32 KB, English
prose and tables: 36 training documents, 7.1 MB; 6 validation documents, 0.97 MB; read
from /usr/share/vim/vim90/doc, which this machine image has). Points: today's causal
latent block (M=64, C=128), the same with learned multi-timescale decays
(`model.latent_decay='multiscale'`), full attention and MLA with m64's parameter count;
on stdlib_long also M=16 and 256 (the long-context sweep's other points).

Presets `<corpus>_time` give every point the wall-clock of m64's 150 steps: its steps
come from the paired step times in docs/results/context_gain/step_time.json.
"""

import json
import os

BASE = 'configs/base.py'
COMMON = {'data.seq_len': 4096, 'per_device_batch_size': 2, 'num_train_steps': 150,
          'warmup_steps': 15, 'eval_every_steps': 75, 'checkpoint_every_steps': 75,
          'num_eval_steps': 5}
CORPORA = {
    'stdlib_long': {'data.name': 'stdlib_long'},
    'vim': {'data.name': 'text_files', 'data.path': '/usr/share/vim/vim90/doc/*.txt',
            'data.min_document_bytes': 32768},
}
PRESETS = tuple(CORPORA) + tuple(f'{c}_time' for c in CORPORA)
POINTS = [
    {'model.attention': 'causal_latent', 'model.num_latents': 64},
    {'model.attention': 'causal_latent', 'model.num_latents': 64,
     'model.latent_decay': 'multiscale'},
    {'model.attention': 'full', 'model.mlp_dim': 1062},
    {'model.attention': 'mla', 'model.mlp_dim': 1056},
]
MORE_LATENTS = [{'model.attention': 'causal_latent', 'model.num_latents': m} for m in (16, 256)]
STEP_TIMES = os.path.join(os.path.dirname(__file__), '..', '..', 'docs', 'results', 'context_gain',
                          'step_time.json')


def _equal_time(points):
  if not os.path.exists(STEP_TIMES):
    raise ValueError(f"{os.path.normpath(STEP_TIMES)} does not exist: run "
                     "benchmarks/step_time.py first (see configs/sweeps/context_gain.py).")
  with open(STEP_TIMES) as f:
    steps = {r['point']: r['equal_time_steps'] for r in json.load(f)['records']}
  from latent_flax.experiments import sweep as sweep_lib
  return [{**p, 'num_train_steps': steps[sweep_lib.point_name(p)]} for p in points]


def get_sweep(preset):
  corpus = preset.removesuffix('_time')
  points = POINTS + (MORE_LATENTS if corpus == 'stdlib_long' else [])
  return {'common': CORPORA[corpus],
          'points': _equal_time(points) if preset.endswith('_time') else points}
