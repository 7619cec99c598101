"""Multi-query associative recall (latent_flax/tasks/mqar.py): how many facts M latents hold.

    python train.py --config=configs/mqar.py --workdir=runs/mqar
    python train.py --config=configs/mqar.py:m=16,pairs=32,seq_len=512 --workdir=runs/mqar_m16
    python eval.py --workdir=runs/mqar          # recall accuracy on the fixed test set

Arguments (comma-separated): the short names of latent_flax/config_lib.py, e.g.
`pairs` (key-value pairs), `seq_len`, `vocab`, `m`, `heads`, `chunk`, `dim`, `layers`,
`attn`. Loss and accuracy count only at the answer positions.
"""

from configs import base

def get_config(arg: str | None = None):
  config = base.get_config()
  config.model.update(attention='causal_latent', num_latents=64, num_heads=4, chunk_size=32,
                      emb_dim=64, mlp_dim=128, num_layers=2)
  d = config.data
  d.name = 'mqar'
  d.seq_len = 256                  # tokens per example
  d.vocab_size = 128               # keys from [1, 64), values from [64, 128); 0 fills the rest
  d.num_kv_pairs = 32              # pairs at the start, each queried once later (test set)
  d.train_pairs_mix = '4,8,16,32'  # train set split equally among these pair counts ('' = num_kv_pairs)
  d.eval_pairs = '8,16,32'         # extra test sets: recall against the number of facts
  d.num_train_examples = 20_000    # fixed train set
  d.num_test_examples = 1_000      # fixed test set (eval.py and the periodic eval)
  d.seed = 0                       # the data sets' seed (config.seed orders the batches)
  config.update(num_train_steps=1500, per_device_batch_size=32, learning_rate=3e-3,
                warmup_steps=80, weight_decay=0.1, log_every_steps=100, eval_every_steps=500,
                num_eval_steps=0, checkpoint_every_steps=250)
  return base.apply_arg(config, arg)
