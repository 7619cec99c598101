"""Byte-level input pipelines: corpora through tensorflow-datasets, packed into windows.

Text becomes UTF-8 bytes (vocab 256); documents are joined with SEPARATOR.
A split is held in memory as one uint8 array and cut into windows of seq_len + 1
bytes at stride seq_len, giving inputs = window[:-1] and targets = window[1:].

Corpora, chosen by `config.data.name`:
  'stdlib'      the Python standard library sources of the running interpreter,
                a local tfds builder (no download), 95/5 train/validation by path hash.
  'text_files'  `config.data.path`: a file, folder or glob. One file: first 90% of
                bytes train, last 10% validation; several files: split by path hash.
  'tfds:NAME'   any tfds catalog text dataset already in `config.data.data_dir`,
                text taken from feature `config.data.text_key`.

Task data sets (fixed examples, not windows of a corpus; see configs/mqar.py and
configs/listops_m64.py):
  'mqar'        multi-query associative recall (mqar.py), loss only at answers.
  'listops'     ListOps classification (listops.py), a local tfds builder; each
                example is padded to seq_len and carries a padding `mask`.
Both give batches with the same keys as the windows (plus `mask` for listops),
so the trainer and eval.py need nothing else.

Training order: global sample s of the stream is window perm_e[s mod W] with
e = s // W and perm_e a permutation seeded by (seed, e). Batch b holds samples
b*G .. b*G+G-1 (G the global batch); process p materialises only its rows. So the
iterator position is one integer (batches consumed), resuming is exact, and the
stream is the same for any number of processes.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import sys
import sysconfig
from typing import Iterator

import ml_collections
import numpy as np

SEPARATOR = 0  # byte between documents
VALIDATION_PERCENT_STDLIB = 5
VALIDATION_PERCENT_FILES = 10


def encode(text: str) -> np.ndarray:
  return np.frombuffer(text.encode('utf-8'), dtype=np.uint8)


def decode(tokens) -> str:
  return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode('utf-8', errors='replace')


def join_documents(docs: list[bytes]) -> np.ndarray:
  """Concatenates byte documents with SEPARATOR between them."""
  sep = bytes([SEPARATOR])
  return np.frombuffer(sep.join(docs), dtype=np.uint8)


def _path_in_validation(path: str, percent: int) -> bool:
  return int(hashlib.md5(path.encode('utf-8')).hexdigest(), 16) % 100 < percent


# --------------------------------------------------------------------------- #
# The built-in corpus: the Python standard library, as a local tfds builder.
# --------------------------------------------------------------------------- #

def stdlib_files() -> list[str]:
  """The .py files of this interpreter's stdlib, without site-packages or test folders."""
  root = sysconfig.get_paths()['stdlib']
  skip = {'site-packages', 'dist-packages', 'test', 'tests', 'idle_test', '__pycache__'}
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in skip)
    files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith('.py'))
  return files


@functools.cache
def stdlib_builder_class():
  """The tfds builder class, defined (and registered with tfds) once per process."""
  import tensorflow_datasets as tfds

  version_tag = 'cpython_' + '_'.join(map(str, sys.version_info[:3]))

  class PythonStdlib(tfds.core.GeneratorBasedBuilder):
    """Python standard library sources of the running interpreter, one example per file."""

    VERSION = tfds.core.Version('1.0.0')
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name=version_tag, description=f'Python {sys.version.split()[0]} stdlib sources')]

    def _info(self):
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict({'text': tfds.features.Text(),
                                               'path': tfds.features.Text()}),
          description='Python standard library .py files (site-packages and tests left out).')

    def _split_generators(self, dl_manager):
      del dl_manager
      root = sysconfig.get_paths()['stdlib']
      rel = [os.path.relpath(f, root) for f in stdlib_files()]
      val = [r for r in rel if _path_in_validation(r, VALIDATION_PERCENT_STDLIB)]
      train = [r for r in rel if not _path_in_validation(r, VALIDATION_PERCENT_STDLIB)]
      return {'train': self._generate_examples(root, train),
              'validation': self._generate_examples(root, val)}

    def _generate_examples(self, root, rel_paths):
      for rel_path in rel_paths:
        with open(os.path.join(root, rel_path), 'rb') as f:
          text = f.read().decode('utf-8', errors='replace')
        yield rel_path, {'text': text, 'path': rel_path}

  return PythonStdlib


def _tfds_data_dir(data_config) -> str | None:
  return os.path.expanduser(data_config.data_dir) if data_config.get('data_dir') else None


def _docs_from_tfds(dataset, text_key: str) -> list[bytes]:
  docs = []
  for example in dataset:
    value = example[text_key]
    docs.append(value if isinstance(value, bytes) else str(value).encode('utf-8'))
  return docs


def _load_stdlib(data_config, split: str) -> np.ndarray:
  builder = stdlib_builder_class()(data_dir=_tfds_data_dir(data_config))
  if not builder.is_prepared():
    print(f"Preparing the built-in corpus (Python stdlib sources) into {builder.data_dir} "
          "once; later runs reuse it.", flush=True)
    builder.download_and_prepare()
  ds = builder.as_dataset(split=split)
  import tensorflow_datasets as tfds
  return join_documents(_docs_from_tfds(tfds.as_numpy(ds), 'text'))


def _load_text_files(data_config, split: str) -> np.ndarray:
  path = data_config.get('path') or ''
  if not path:
    raise ValueError("config.data.name='text_files' needs config.data.path "
                     "(a file, a folder or a glob).")
  pattern = os.path.expanduser(path)
  if os.path.isdir(pattern):
    files = sorted(f for f in glob.glob(os.path.join(pattern, '**', '*'), recursive=True)
                   if os.path.isfile(f))
  else:
    files = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
  if not files:
    raise ValueError(f"config.data.path={path!r} matches no file; give an existing file, "
                     "folder or glob.")
  if len(files) == 1:
    with open(files[0], 'rb') as f:
      data = f.read()
    cut = len(data) * (100 - VALIDATION_PERCENT_FILES) // 100
    return np.frombuffer(data[:cut] if split == 'train' else data[cut:], dtype=np.uint8)
  docs = []
  for name in files:
    if _path_in_validation(os.path.relpath(name, os.path.dirname(pattern) or '.'),
                           VALIDATION_PERCENT_FILES) == (split == 'validation'):
      with open(name, 'rb') as f:
        docs.append(f.read())
  return join_documents(docs)


def _load_catalog(data_config, split: str) -> np.ndarray:
  import tensorflow_datasets as tfds
  name = data_config.name[len('tfds:'):]
  if name not in tfds.list_builders(with_community_datasets=False):
    raise ValueError(f"config.data.name={data_config.name!r}: no tfds dataset named {name!r}; "
                     "see `tfds.list_builders()` (e.g. 'tfds:tiny_shakespeare').")
  builder = tfds.builder(name, data_dir=_tfds_data_dir(data_config))
  splits = builder.info.splits
  tfds_split = split
  if split == 'validation' and 'validation' not in splits and 'test' in splits:
    tfds_split = 'test'
  try:
    ds = tfds.load(name, split=tfds_split, data_dir=_tfds_data_dir(data_config), download=False)
  except Exception as e:  # tfds raises several types for "not prepared here".
    raise ValueError(
        f"tfds dataset {name!r} split {tfds_split!r} is not prepared in "
        f"{builder.data_dir!r} and this machine cannot download: build it with "
        f"`tfds build {name} --data_dir=...` where there is network, then set "
        f"config.data.data_dir. ({type(e).__name__})") from None
  key = data_config.get('text_key') or 'text'
  spec = builder.info.features
  if key not in spec:
    raise ValueError(f"config.data.text_key={key!r} is not a feature of {name!r}; "
                     f"it has {sorted(spec.keys())}.")
  return join_documents(_docs_from_tfds(tfds.as_numpy(ds), key))


DATASETS = ('stdlib', 'text_files', 'tfds:<name>', 'mqar', 'listops')
# Fields each task data set needs in config.data (configs/mqar.py, configs/listops_*.py).
TASK_FIELDS = {'mqar': ('vocab_size', 'num_kv_pairs', 'num_train_examples',
                        'num_test_examples', 'seed'),
               'listops': ('num_train_examples', 'num_validation_examples',
                           'num_test_examples', 'min_length', 'max_length', 'seed')}


CLASSIFY_DATASETS = ('listops',)  # one label per example; the rest have a target per position


def task_of(data_config) -> str:
  """'classify' (one label per example) for listops, else 'lm' (a target per position)."""
  return 'classify' if data_config.name in CLASSIFY_DATASETS else 'lm'


def accuracy_label(name: str) -> str:
  """What accuracy means for data set `name`, as printed by train.py and eval.py."""
  return 'recall accuracy' if name == 'mqar' else 'accuracy'


def validate_data_config(data_config) -> None:
  name = data_config.name
  if not (name in ('stdlib', 'text_files', 'mqar', 'listops')
          or (isinstance(name, str) and name.startswith('tfds:') and len(name) > 5)):
    raise ValueError(f"config.data.name={name!r} is unknown; use one of {list(DATASETS)}.")
  seq_len = data_config.seq_len
  if not isinstance(seq_len, int) or seq_len < 1:
    raise ValueError(f"config.data.seq_len={seq_len!r} must be an integer >= 1.")
  for field in TASK_FIELDS.get(name, ()):
    value = data_config.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if field == 'seed'
                                                                         else 1):
      raise ValueError(f"config.data.{field}={value!r} must be an integer >= "
                       f"{0 if field == 'seed' else 1} for data set {name!r} "
                       f"(see configs/{'mqar' if name == 'mqar' else 'listops_m64'}.py).")
  if name == 'mqar':
    from latent_flax import mqar
    mqar.check_params(data_config.vocab_size, seq_len, data_config.num_kv_pairs)
    for field in ('train_pairs_mix', 'eval_pairs'):
      for pairs in mqar.parse_mix(data_config.get(field) or '', data_config.num_kv_pairs,
                                  field):
        mqar.check_params(data_config.vocab_size, seq_len, pairs)
    if data_config.vocab_size > 256:
      raise ValueError(f"config.data.vocab_size={data_config.vocab_size} exceeds the model's "
                       "256-token vocabulary; use vocab_size <= 256.")
  if name == 'listops':
    from latent_flax import listops
    listops.check_params(data_config.min_length, data_config.max_length, seq_len)


SPLITS = ('train', 'validation', 'test')


@functools.lru_cache(maxsize=8)
def _load_split_cached(name, path, text_key, data_dir, split) -> np.ndarray:
  cfg = ml_collections.ConfigDict(dict(name=name, path=path, text_key=text_key,
                                       data_dir=data_dir))
  if name == 'stdlib':
    return _load_stdlib(cfg, split)
  if name == 'text_files':
    return _load_text_files(cfg, split)
  return _load_catalog(cfg, split)


def load_split(data_config, split: str) -> np.ndarray:
  """All bytes of `split` ('train' or 'validation') as one uint8 array."""
  validate_data_config(data_config)
  return _load_split_cached(data_config.name, data_config.get('path') or '',
                            data_config.get('text_key') or 'text',
                            data_config.get('data_dir') or '', split)


# --------------------------------------------------------------------------- #
# Windows and iterators.
# --------------------------------------------------------------------------- #

class Windows:
  """Windows of seq_len + 1 bytes at stride seq_len over one split."""

  def __init__(self, data: np.ndarray, seq_len: int, what: str = 'corpus'):
    if len(data) < seq_len + 1:
      raise ValueError(f"the {what} has {len(data):,} bytes, fewer than one window of "
                       f"seq_len + 1 = {seq_len + 1:,}; lower config.data.seq_len or use "
                       "more text.")
    self.data, self.seq_len = data, seq_len
    self.num_windows = (len(data) - 1) // seq_len

  def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    offsets = np.asarray(ids, np.int64)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
    win = self.data[offsets].astype(np.int32)
    return {'inputs': win[:, :-1], 'targets': win[:, 1:],
            'weights': np.ones(win[:, 1:].shape, np.float32)}


class Examples:
  """Fixed examples of equal length: the same interface as Windows (`num_windows`, `get`)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays
    self.num_windows = len(arrays['inputs'])
    self.seq_len = arrays['inputs'].shape[1]

  def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    ids = np.asarray(ids, np.int64)
    return {k: v[ids] for k, v in self.arrays.items()}


def _load_task(data_config, split: str) -> Examples:
  if data_config.name == 'mqar':
    from latent_flax import mqar
    if split != 'train':  # MQAR has a train and a test set; the test set has num_kv_pairs
      return _mqar_test_set(data_config, data_config.num_kv_pairs)
    mix = mqar.parse_mix(data_config.get('train_pairs_mix') or '', data_config.num_kv_pairs,
                         'train_pairs_mix')
    count = data_config.num_train_examples
    parts = [mqar.generate(count // len(mix) + (i < count % len(mix)), data_config.seq_len, p,
                           data_config.vocab_size, data_config.seed, 'train')
             for i, p in enumerate(mix)]
    return Examples({k: np.concatenate([part[k] for part in parts]) for k in parts[0]})
  from latent_flax import listops
  return Examples(listops.load(data_config, split))


def recall_probe_sets(data_config) -> dict[int, Examples]:
  """MQAR test sets with other pair counts ({pairs: Examples}), from data.eval_pairs.

  Each is a fixed test set like the main one (num_test_examples examples), so one
  trained model is measured against 8, 16, 32 ... facts. Empty for other data sets.
  """
  if data_config.name != 'mqar' or not data_config.get('eval_pairs'):
    return {}
  from latent_flax import mqar
  return {p: _mqar_test_set(data_config, p)
          for p in mqar.parse_mix(data_config.eval_pairs, data_config.num_kv_pairs)}


def with_across_chunk_weights(probes: dict[int, Examples],
                              chunk_size: int) -> dict[int, Examples]:
  """The probe sets with 'weights_across' (mqar.across_chunks), scored in the same pass.

  Sets where no answer crosses a chunk boundary (chunk_size >= the length) stay as they are.
  """
  from latent_flax import mqar
  sets = {p: mqar.across_chunks(ex.arrays, chunk_size) for p, ex in probes.items()}
  return {p: Examples(a) if a['weights_across'].any() else probes[p] for p, a in sets.items()}


def _mqar_test_set(data_config, pairs: int) -> Examples:
  """The fixed MQAR test set with `pairs` pairs (generate() caches it: one array per set)."""
  from latent_flax import mqar
  return Examples(mqar.generate(data_config.num_test_examples, data_config.seq_len, pairs,
                                data_config.vocab_size, data_config.seed, 'test'))


def load_windows(data_config, split: str) -> Windows | Examples:
  """The batches source of one split ('train', 'validation' or 'test') of the data set."""
  validate_data_config(data_config)
  if split not in SPLITS:
    raise ValueError(f"split {split!r} is unknown; use one of {list(SPLITS)}.")
  if data_config.name in TASK_FIELDS:
    return _load_task(data_config, split)
  if split == 'test':
    raise ValueError(f"data set {data_config.name!r} has train and validation splits only; "
                     "evaluate on 'validation'.")
  return Windows(load_split(data_config, split), data_config.seq_len,
                 f"{split} split of {data_config.name!r}")


class TrainIterator(Iterator[dict]):
  """Endless shuffled batches; `position` (batches consumed) is the whole state."""

  def __init__(self, windows: Windows | Examples, global_batch: int, seed: int, *,
               process_index: int = 0, process_count: int = 1, position: int = 0):
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} does not split over {process_count} processes.")
    self.windows, self.global_batch, self.seed = windows, global_batch, seed
    self.local_batch = global_batch // process_count
    self.row0 = process_index * self.local_batch
    self.position = position
    self._perms: dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
          self.windows.num_windows)}
    return self._perms[epoch]

  def sample_ids(self, position: int) -> np.ndarray:
    first = position * self.global_batch + self.row0
    samples = np.arange(first, first + self.local_batch)
    w = self.windows.num_windows
    ids = np.empty_like(samples)
    for epoch in np.unique(samples // w):
      sel = samples // w == epoch
      ids[sel] = self._perm(int(epoch))[samples[sel] % w]
    return ids

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.windows.get(self.sample_ids(self.position))
    self.position += 1
    return batch

  def get_state(self) -> dict:
    return {'position': int(self.position), 'seed': int(self.seed)}

  def set_state(self, state: dict) -> None:
    self.position = int(state['position'])


def eval_batches(windows: Windows | Examples, global_batch: int, num_batches: int | None, *,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
  """Validation windows in order; the last batch is padded with zero-weight rows.

  num_batches None or <= 0: the whole split.
  """
  local = global_batch // process_count
  total = -(-windows.num_windows // global_batch)
  if num_batches and num_batches > 0:
    total = min(total, num_batches)
  for b in range(total):
    ids = np.arange(b * global_batch + process_index * local,
                    b * global_batch + (process_index + 1) * local)
    real = ids < windows.num_windows
    batch = windows.get(np.where(real, ids, 0))
    for key in [k for k in batch if k.startswith('weights')]:  # 'weights', 'weights_across'
      w = batch[key]
      batch[key] = w * real.reshape(real.shape + (1,) * (w.ndim - 1))
    yield batch
