"""The evidence run (docs/results/books): does a model trained past its window use a long
past of book text, and retrieve a pass key from far back? On the shared books laid out by
`python -m latent_flax.tasks.books --src ../shared/data/books --out data/books` (18 train,
2 validation, 2 test books).

    python sweep.py --sweep=configs/sweeps/books.py:bytes --workdir=runs/books
    python sweep.py --sweep=configs/sweeps/books.py:clock --workdir=runs/books_clock
    python benchmarks/context_use.py --workdir=runs/books --lengths 4096,65536 \\
        --restart_every 4096 --out docs/results/books
    python probe.py --workdir=runs/books/<run> --probe=passkey --lengths=4096,16384,65536 \\
        --depths=0,0.25,0.5,0.75,1

configs/base.py's model (D=128, 4 layers, 4 heads; full and mla with the wider MLP of
configs/full.py and configs/mla.py, parameters matched to m64 within 0.05%) on windows of 4,096 bytes, 2
per step; passkey documents mixed in at 10% (blank windows: 10% of the windows, each a
4,097-byte document; carried: 10% of the documents, 4,097 to 65,536 bytes, log-uniform,
so that the key is asked for windows after it was stated). Carried runs read the books as
documents of 64 KB (document_bytes), each row its own, the state reset between them.

  bytes  every kind for the same 250 steps (2,048,000 training bytes): causal_latent M=64
         blank and carried, multiscale carried; full attention blank and with a
         Transformer-XL memory of 2,048 tokens; mla with the same memory.
  clock  carried m64 for 250 steps (the bytes preset's point) against full attention
         blank and with memory, and mla with memory, each trained for the same wall-clock
         (steps from the paired step times of benchmarks/results/carry_cost*.json); the
         peer's steps from its own step time (benchmarks/xl_peer.py train --steps).
  retrieval  m64 blank and carried, 400 steps, half the documents passkeys weighted on
         their answers only (config.data.probe_weights='answer'), carried ones up to 16 KB:
         does a loss that asks for retrieval teach the state to keep a key?
  ladder  where retrieval stops being learned, m64 at windows of 1,024 x 8 (the same bytes
         per step), 300 steps, keys weighted on their answers: (1) passkey documents on
         filler within one window (config.data.name='passkey'); (2) on book text within one
         window (blank windows, 90% passkey); (3) on book text across windows through the
         carried state (documents of at most 4,096 bytes: the key asked 0-3 windows after it
         was stated).
"""

BASE = 'configs/base.py'
COMMON = {'data.name': 'text_files', 'data.path': 'data/books', 'data.seq_len': 4096,
          'data.document_bytes': 65536, 'data.passkey_rate': 0.1,
          'per_device_batch_size': 2, 'num_train_steps': 250, 'warmup_steps': 25,
          'eval_every_steps': 125, 'checkpoint_every_steps': 125, 'num_eval_steps': 5}
LATENT = {'model.attention': 'causal_latent', 'model.num_latents': 64}
CARRIED = {'carry_state': True, 'data.probe_document_bytes': 65536}
PRESETS = ('bytes', 'clock', 'retrieval', 'ladder')
# The design change the bytes preset points to: a loss that asks for retrieval. Half the
# documents (windows) are passkey documents weighted on their answers only; carried ones
# 4,097 to 16,384 bytes long, so that most keys are asked for one to three windows later.
RETRIEVAL = {'data.passkey_rate': 0.5, 'data.probe_weights': 'answer',
             'num_train_steps': 400, 'warmup_steps': 40, 'eval_every_steps': 200,
             'checkpoint_every_steps': 200}

LADDER = {'data.seq_len': 1024, 'per_device_batch_size': 8, 'num_train_steps': 300,
          'warmup_steps': 30, 'eval_every_steps': 150, 'checkpoint_every_steps': 150,
          'data.passkey_rate': 0.9, 'data.probe_weights': 'answer'}


# Parameters matched to m64 as configs/full.py and configs/mla.py do (a wider MLP).
FULL = {'model.attention': 'full', 'model.mlp_dim': 1062}
MLA = {'model.attention': 'mla', 'model.kv_lora_rank': 64, 'model.q_lora_rank': 0,
       'model.rope_head_dim': 16, 'model.head_dim': 32, 'model.v_head_dim': 32,
       'model.mlp_dim': 1056}


def get_sweep(preset: str):
  if preset == 'bytes':
    return [{**LATENT, 'carry_state': False},
            {**LATENT, **CARRIED},
            {**LATENT, 'model.latent_decay': 'multiscale', **CARRIED},
            {**FULL, 'carry_state': False},
            {**FULL, 'model.memory': 2048, **CARRIED},
            {**MLA, 'model.memory': 2048, **CARRIED}]
  if preset == 'retrieval':
    return [{**LATENT, 'carry_state': False, **RETRIEVAL},
            {**LATENT, 'carry_state': True, **RETRIEVAL, 'data.probe_document_bytes': 16384}]
  if preset == 'ladder':
    return [{**LATENT, **LADDER, 'data.name': 'passkey', 'data.passkey_rate': 0.0,
             'data.document_bytes': 0},
            {**LATENT, **LADDER, 'carry_state': False},
            {**LATENT, **LADDER, 'carry_state': True, 'data.document_bytes': 4096,
             'data.probe_document_bytes': 4096}]
  # clock: each kind's steps = 250 x (carried causal_latent's step time / its own), from
  # paired step times at 4,096 x 2 (benchmarks/results/carry_cost*.json, one run each).
  steps = clock_steps()
  return [{**LATENT, **CARRIED},
          *({**point, 'num_train_steps': n, 'warmup_steps': n // 10}
            for point, n in ((dict(FULL, carry_state=False), steps['full']),
                             ({**FULL, 'model.memory': 2048, **CARRIED}, steps['full_memory']),
                             ({**MLA, 'model.memory': 2048, **CARRIED}, steps['mla_memory'])))]


CLOCK_TIMES = ('benchmarks/results/carry_cost.json',          # blank full (memory 4,096)
               'benchmarks/results/carry_cost_mem2048.json')  # full and mla, memory 2,048


def clock_steps(steps: int = 250) -> dict:
  """{'full', 'full_memory', 'mla_memory'}: the steps of blank full attention and of full
  and mla with a memory of 2,048 that take carried m64's `steps` steps' time, each against
  causal_latent's carried step timed in the same run."""
  import json
  import os
  root = os.path.join(os.path.dirname(__file__), '..', '..')
  blank, memory = ({r['kind']: r for r in json.load(open(os.path.join(root, p)))['records']}
                   for p in CLOCK_TIMES)
  budget = lambda records: steps * records['causal_latent']['seconds_carry']
  return {'full': round(budget(blank) / blank['full']['seconds_blank']),
          'full_memory': round(budget(memory) / memory['full']['seconds_carry']),
          'mla_memory': round(budget(memory) / memory['mla']['seconds_carry'])}
