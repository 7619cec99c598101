"""Defaults for every experiment; the other configs are thin overrides of these.

    python train.py --config=configs/base.py --workdir=/tmp/lf_base
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.attention = 'causal_latent'  # 'causal_latent' (LM), 'full' (baseline), 'latent' (bidirectional)
  m.num_latents = 64             # M: learnable latents per block
  m.num_heads = 4                # H: heads in every attention (emb_dim must divide by it)
  m.chunk_size = 128             # C: tokens per chunk in causal_latent
  m.emb_dim = 128                # D: model width
  m.mlp_dim = 512                # hidden width of the MLP
  m.num_layers = 4               # number of blocks
  m.dropout_rate = 0.0           # dropout on every residual branch while training
  m.remat = False                # recompute each block in the backward pass (saves memory)
  m.dtype = 'float32'            # compute dtype: 'float32' or 'bfloat16' (params stay float32)
  m.input_positions = 'none'     # 'sinusoidal': absolute positions added to the embeddings
                                 # (classification; the latent block is otherwise order-blind)
  m.pooling = 'mean'             # classifier pooling: 'mean' over real tokens, or 'first'
                                 # (the output at position 0)
  return m


def data_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.name = 'stdlib'              # 'stdlib' (built in), 'text_files', or 'tfds:<catalog name>'
  d.path = ''                    # file, folder or glob for name='text_files'
  d.text_key = 'text'            # feature holding the text for 'tfds:' datasets
  d.seq_len = 512                # tokens (bytes) per training window
  d.data_dir = ''                # tfds data dir ('' = the tfds default, ~/tensorflow_datasets)
  return d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: comma-separated overrides of model fields, e.g. 'heads=8,m=32,layers=2'."""
  config = ml_collections.ConfigDict()
  config.seed = 0                       # params, dropout and data order
  config.num_train_steps = 600          # optimizer steps
  config.per_device_batch_size = 8      # windows per device per step
  config.learning_rate = 3e-3           # peak learning rate (AdamW)
  config.warmup_steps = 60              # linear warm-up, then cosine decay to 10%
  config.weight_decay = 0.01            # AdamW decay on kernels and embeddings
  config.grad_clip_norm = 1.0           # global-norm clipping (0 = off)
  config.log_every_steps = 20           # train metrics to console, TensorBoard, metrics.jsonl
  config.eval_every_steps = 200         # validation loss (and at the end)
  config.num_eval_steps = 20            # validation batches per evaluation (0 = whole split)
  config.checkpoint_every_steps = 200   # checkpoints (and at the end)
  config.keep_checkpoints = 2           # latest checkpoints kept, besides the best by eval loss
  config.parallelism = 'pmap'           # 'pmap' (pmapped step) or 'jit' (1-D data mesh)
  config.model = model_config()
  config.data = data_config()
  apply_arg(config, arg)
  return config


_ARG_FIELDS = {'m': 'num_latents', 'heads': 'num_heads', 'layers': 'num_layers',
               'chunk': 'chunk_size', 'dim': 'emb_dim', 'attention': 'attention'}


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies 'key=value,...' overrides of model fields (short names above or full names)."""
  if not arg:
    return config
  for item in arg.split(','):
    key, sep, value = item.partition('=')
    field = _ARG_FIELDS.get(key.strip(), key.strip())
    if not sep or field not in config.model:
      raise ValueError(f"config argument {item!r}: expected key=value with key in "
                       f"{sorted(_ARG_FIELDS) + sorted(config.model.keys())}.")
    current = config.model[field]
    config.model[field] = type(current)(value) if not isinstance(current, str) else value
  return config
