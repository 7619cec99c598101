"""Defaults for every experiment; the other configs are thin overrides of these.

    python train.py --config=configs/base.py --workdir=/tmp/lf_base
"""

import ml_collections

from latent_flax import config_lib
from latent_flax import model as model_lib


def model_config() -> ml_collections.ConfigDict:
  """config.model: every field at its default, defined once in latent_flax/model.py
  (ModelConfig, with a comment per field)."""
  return model_lib.default_model_config()


def data_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.name = 'stdlib'              # 'stdlib' (built in), 'text_files', or 'tfds:<catalog name>'
  d.path = ''                    # file, folder or glob for name='text_files' (a folder with
                                 # train/, validation/, test/ subfolders: its own splits)
  d.text_key = 'text'            # feature holding the text for 'tfds:' datasets
  d.seq_len = 512                # tokens (bytes) per training window
  d.data_dir = ''                # tfds data dir ('' = for 'tfds:' catalogs the tfds default,
                                 # ~/tensorflow_datasets; for the built-in stdlib and listops
                                 # builders tfds/ in the cache dir below)
  d.cache_dir = ''               # corpora: where splits are prepared into byte files ('' =
                                 # $LATENT_FLAX_CACHE, else ~/.cache/latent_flax)
  d.min_document_bytes = 0       # corpora: leave out shorter documents (32768: long files only)
  d.eval_windows = 'stream'      # corpora: 'stream' (windows over the joined split) or
                                 # 'documents' (each document's first seq_len bytes)
  d.document_bytes = 0           # corpora read as documents (carry_state, eval documents):
                                 # longer ones are read as consecutive pieces of this many
                                 # predictions each (0 = whole documents; books: 65536)
  d.probe_document_bytes = 0     # carry_state: probe documents mixed in are this long at most
                                 # (log-uniform from seq_len + 1; 0 = seq_len + 1)
  d.passkey_rate = 0.0           # corpora: fraction of training windows (carry_state: of
                                 # documents) that are passkey documents on the corpus's
                                 # text (latent_flax/tasks/passkey.py)
  d.probe_weights = 'all'        # probe documents in training: 'all' bytes weighted, or
                                 # 'answer': only the answer's, as much as a window's text
  d.babi_rate = 0.0              # corpora: fraction that are bAbI qa1 fact documents (babi.py)
  d.passkey_digits = 5           # passkey documents: digits of the key
  d.babi_facts = 4               # bAbI documents: facts per document
  return d


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """arg: comma-separated overrides, e.g. 'heads=8,m=32,layers=2' (see apply_arg)."""
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
  config.parallelism = 'jit'            # 'jit' (over config.mesh) or 'pmap' (data only)
  config.carry_state = False            # train past the window: each batch row reads a document's
                                        # windows in turn and carries the attention state across
                                        # steps (full/mla: config.model.memory tokens)
  config.carry_windows = 1              # with carry_state: consecutive windows per row and step,
                                        # the gradient flowing through the state carried across
                                        # them (truncated backpropagation through time); 1: none
  config.mesh = ml_collections.ConfigDict(dict(  # jit's device mesh (latent_flax/system/sharding.py)
      data=-1,                            # batch rows; -1 = the devices left
      fsdp=1,                             # batch rows, and parameters/optimizer state split
      seq=1))                             # positions of each row (sequence parallelism)
  config.model = model_config()
  config.data = data_config()
  apply_arg(config, arg)
  return config


def apply_arg(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies 'key=value,...' overrides: short names (latent_flax/config_lib.SHORT_NAMES)
  or dotted field names, each value typed as its field (m=abc is an error)."""
  return config_lib.apply_overrides(config, arg)
