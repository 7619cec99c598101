"""Byte language modelling on a corpus: the built-in stdlib corpus, text files, tfds catalogs.

Text becomes UTF-8 bytes (vocab 256); documents are joined with data.SEPARATOR.
A split is prepared once into a flat byte file and memory-mapped (tasks/byte_cache.py),
then cut into data.Windows of seq_len + 1 bytes at stride seq_len.

  'stdlib'      the Python standard library sources of the running interpreter,
                a local tfds builder (no download), 95/5 train/validation by path hash.
  'stdlib_long' the stdlib files of at least 32 KB, one document each, split 70/30 by
                path hash (long-context evaluation: --windows=documents).
  'text_files'  `config.data.path`: a file, folder or glob. A folder holding train/ and
                validation/ (and test/) subfolders: those are the splits (PG-19's
                layout; tasks/books.py lays the shared books out so). Else one file:
                first 90% of bytes train, last 10% validation; several files: split by
                path hash.
  'tfds:NAME'   any tfds catalog text dataset already in `config.data.data_dir`,
                text taken from feature `config.data.text_key`.

Metric: bits per byte (lower is better). A 'test' split exists for split folders and
tfds catalogs that have one. config.data.<probe>_rate (passkey_rate, babi_rate) mixes
retrieval probe documents into the training windows (tasks/haystack.py).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import itertools
import os
import sys
import sysconfig

import numpy as np

from latent_flax.tasks import data as data_lib
from latent_flax.system.checks import need_int
from latent_flax.tasks import byte_cache, haystack, registry, tfds_source

# How evaluation cuts a split: 'stream', windows at stride seq_len over the documents
# joined (a window may hold the end of one and the start of the next); 'documents', the
# first seq_len + 1 bytes of every document at least that long (no foreign context).
EVAL_WINDOWS = ('stream', 'documents')
VALIDATION_PERCENT_STDLIB = 5
LONG_DOCUMENT_BYTES = 32768   # 'stdlib_long': the stdlib files at least this long
VALIDATION_PERCENT_LONG = 30
VALIDATION_PERCENT_FILES = 10
SPLIT_FOLDERS = ('train', 'validation', 'test')  # a text_files folder's own splits


def _path_hash(path: str) -> int:
  return int(hashlib.md5(path.encode('utf-8')).hexdigest(), 16)


def _path_in_validation(path: str, percent: int) -> bool:
  return _path_hash(path) % 100 < percent


def split_files(rel_paths: list[str], percent: int) -> tuple[list[str], list[str]]:
  """(train, validation) by path hash; neither is empty when there are two or more files
  (the file with the lowest hash goes to validation, or the highest to train)."""
  val = [p for p in rel_paths if _path_in_validation(p, percent)]
  train = [p for p in rel_paths if not _path_in_validation(p, percent)]
  if len(rel_paths) >= 2 and not val:
    val = [min(train, key=lambda p: (_path_hash(p) % 100, p))]
    train = [p for p in train if p not in val]
  if len(rel_paths) >= 2 and not train:
    train = [max(val, key=lambda p: (_path_hash(p) % 100, p))]
    val = [p for p in val if p not in train]
  return train, val


def _glob_root(pattern: str) -> str:
  """The folder a file pattern is rooted at: the pattern up to its first wildcard part."""
  parts = pattern.split(os.sep)
  fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
  if len(fixed) == len(parts):  # no wildcard at all: the path of a file
    fixed = fixed[:-1]
  return os.path.realpath(os.sep.join(fixed) or '.')


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

    VERSION = tfds.core.Version('1.1.0')  # 1.1.0: written as ArrayRecord
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
      train, val = split_files(rel, VALIDATION_PERCENT_STDLIB)
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


def _text(value) -> bytes:
  return value if isinstance(value, bytes) else str(value).encode('utf-8')


def _stdlib_examples(data_config, split: str) -> list[tuple[str, bytes]]:
  """(path, text) of the stdlib split, sorted by path: the order does not depend on how
  tfds shuffled the files on write."""
  builder = tfds_source.prepared(stdlib_builder_class(), 'the built-in corpus (Python stdlib '
                                 'sources)', data_dir=tfds_source.builtin_data_dir(data_config))
  return sorted((e['path'].decode('utf-8'), _text(e['text']))
                for e in tfds_source.examples(builder, split))


def _stdlib_long(data_config, split: str) -> list[bytes]:
  """The stdlib files of at least LONG_DOCUMENT_BYTES, split anew by path hash
  (VALIDATION_PERCENT_LONG), so that validation holds enough long documents."""
  docs = {path: text for part in ('train', 'validation')
          for path, text in _stdlib_examples(data_config, part)
          if len(text) >= LONG_DOCUMENT_BYTES}
  train, val = split_files(sorted(docs), VALIDATION_PERCENT_LONG)
  return [docs[p] for p in (val if split == 'validation' else train)]


def _files_under(folder: str) -> list[str]:
  return sorted(f for f in glob.glob(os.path.join(folder, '**', '*'), recursive=True)
                if os.path.isfile(f))


def _split_folder_parts(path: str, split: str) -> list[byte_cache.FilePart]:
  """The files of `path`/`split`/ (a folder with its own splits), one document each."""
  folder = os.path.join(path, split)
  if not os.path.isdir(folder):
    given = [s for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(path, s))]
    raise ValueError(f"config.data.path={path!r} has split folders {given} but no {split}/; "
                     f"add {folder} or evaluate another split.")
  files = _files_under(folder)
  if not files:
    raise ValueError(f"{folder} holds no file; put the {split} split's text files there.")
  return [byte_cache.FilePart(os.path.realpath(f), 0, os.path.getsize(f)) for f in files]


def _text_file_parts(data_config, split: str) -> list[byte_cache.FilePart]:
  """The split's documents as file parts (nothing read yet)."""
  path = data_config.get('path') or ''
  if not path:
    raise ValueError("config.data.name='text_files' needs config.data.path "
                     "(a file, a folder or a glob).")
  pattern = os.path.expanduser(path)
  if os.path.isdir(os.path.join(pattern, 'train')):
    return _split_folder_parts(pattern, split)
  if split not in ('train', 'validation'):
    raise ValueError(f"config.data.path={path!r} has no {split} split: only a folder with "
                     "train/, validation/ and test/ subfolders has one.")
  if os.path.isdir(pattern):
    files = _files_under(pattern)
  else:
    files = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
  if not files:
    raise ValueError(f"config.data.path={path!r} matches no file; give an existing file, "
                     "folder or glob.")
  if len(files) == 1:
    size = os.path.getsize(files[0])
    cut = size * (100 - VALIDATION_PERCENT_FILES) // 100
    return [byte_cache.FilePart(os.path.realpath(files[0]), *((0, cut) if split == 'train'
                                                              else (cut, size)))]
  # Files are named relative to the folder (or the pattern's fixed prefix), so the split
  # does not depend on how the path is spelled ('DIR', 'DIR/', './DIR') or on renaming it.
  root = os.path.realpath(pattern) if os.path.isdir(pattern) else _glob_root(pattern)
  rel = {os.path.relpath(os.path.realpath(f), root): os.path.realpath(f) for f in files}
  train, val = split_files(sorted(rel), VALIDATION_PERCENT_FILES)
  return [byte_cache.FilePart(rel[name], 0, os.path.getsize(rel[name]))
          for name in (val if split == 'validation' else train)]


def _catalog(data_config, split: str):
  """(key, documents) of a tfds catalog split; the documents are read lazily."""
  name = data_config.name[len('tfds:'):]
  builder = tfds_source.catalog_builder(name, _tfds_data_dir(data_config))
  splits = builder.info.splits
  tfds_split = split
  if split == 'validation' and 'validation' not in splits and 'test' in splits:
    tfds_split = 'test'
  if splits and tfds_split not in splits:  # (tfds's mock data lists no splits)
    raise ValueError(f"tfds dataset {name!r} has splits {sorted(splits)}, no {split!r}.")
  key = data_config.get('text_key') or 'text'
  spec = builder.info.features
  if key not in spec:
    raise ValueError(f"config.data.text_key={key!r} is not a feature of {name!r}; "
                     f"it has {sorted(spec.keys())}.")
  source = tfds_source.catalog_source(builder, tfds_split)
  return ({'tfds': builder.info.full_name, 'data_dir': builder.data_dir, 'text_key': key,
           'tfds_split': tfds_split, 'examples': len(source)},
          (_text(source[i][key]) for i in range(len(source))))


def prepared_split(data_config, split: str) -> byte_cache.PreparedSplit:
  """`split` ('train', 'validation', or 'test' where there is one) prepared once into a
  byte file and mapped."""
  name = data_config.name
  key = {'name': name, 'split': split}
  if name in ('stdlib', 'stdlib_long'):
    if split not in ('train', 'validation'):
      raise ValueError(f"data set {name!r} has no {split} split; use 'validation'.")
    builder_cls = stdlib_builder_class()
    key.update(stdlib=builder_cls.BUILDER_CONFIGS[0].name, version=str(builder_cls.VERSION),
               data_dir=_tfds_data_dir(data_config) or '')
    if name == 'stdlib':
      docs = (text for _, text in _stdlib_examples(data_config, split))
    else:
      key.update(least=LONG_DOCUMENT_BYTES, percent=VALIDATION_PERCENT_LONG)
      docs = (d for d in _stdlib_long(data_config, split))
  elif name == 'text_files':
    parts = _text_file_parts(data_config, split)
    key['files'] = [(p.path, p.start, p.stop, os.stat(p.path).st_mtime_ns) for p in parts]
    docs = parts
  else:
    source_key, docs = _catalog(data_config, split)
    key.update(source_key)
  return byte_cache.prepare(key, docs, byte_cache.cache_dir(data_config),
                            f"the {split} split of {name!r}",
                            least=data_config.get('min_document_bytes') or 0)


def _kept(data_config, split: str) -> byte_cache.PreparedSplit:
  prepared = prepared_split(data_config, split)
  if not len(prepared.docs):
    raise ValueError(f"the {split} split of {data_config.name!r} has no document of at least "
                     f"config.data.min_document_bytes={data_config.get('min_document_bytes'):,}"
                     f" bytes (the longest has {prepared.longest_dropped:,}); lower it.")
  piece = data_config.get('document_bytes') or 0
  return dataclasses.replace(prepared, docs=pieces(prepared.docs, piece)) if piece else prepared


def pieces(docs_D2: np.ndarray, predictions: int) -> np.ndarray:
  """(start, length) of documents cut into consecutive pieces of `predictions` + 1 bytes
  (the last shorter): piece i reads bytes i*P .. (i+1)*P of its document, so each byte of
  it is predicted once, in the piece that ends with it."""
  out = [(s + k, min(predictions + 1, n - k)) for s, n in np.asarray(docs_D2).tolist()
         for k in range(0, max(n - 1, 1), predictions)]
  return np.asarray(out, np.int64).reshape(-1, 2)


def load_documents(data_config, split: str) -> list[np.ndarray]:
  """The documents of `split` (views of its map), those shorter than
  config.data.min_document_bytes left out."""
  return _kept(data_config, split).documents()


def load_split(data_config, split: str) -> np.ndarray:
  """All bytes of `split` ('train' or 'validation'), documents joined: a read-only map."""
  return _kept(data_config, split).data


class Corpus(registry.Task):
  """Next-byte prediction on windows of a corpus."""

  name = 'corpus'
  splits = ('train', 'validation', 'test')  # test: split folders and tfds catalogs with one

  def matches(self, name: str) -> bool:
    return name in ('stdlib', 'stdlib_long', 'text_files') or (
        name.startswith('tfds:') and len(name) > 5)

  @property
  def display_names(self) -> tuple[str, ...]:
    return ('stdlib', 'stdlib_long', 'text_files', 'tfds:<name>')

  def validate(self, data_config) -> None:
    least = data_config.get('min_document_bytes') or 0
    need_int('config.data.min_document_bytes', least, 0, ' (0 = every document)')
    windows = data_config.get('eval_windows') or 'stream'
    if windows not in EVAL_WINDOWS:
      raise ValueError(f"config.data.eval_windows={windows!r} is unknown; use one of "
                       f"{list(EVAL_WINDOWS)}.")
    need_int('config.data.document_bytes', data_config.get('document_bytes') or 0, 0,
             ' (0 = whole documents)')
    need_int('config.data.probe_document_bytes', data_config.get('probe_document_bytes') or 0,
             0, ' (0: seq_len + 1, one window)')
    weights = data_config.get('probe_weights') or 'all'
    if weights not in ('all', 'answer'):
      raise ValueError(f"config.data.probe_weights={weights!r} is unknown; use 'all' (every "
                       "byte of a probe document) or 'answer' (its answer's bytes only).")
    haystack.validate_rates(data_config)
    for probe, _ in haystack.rates(data_config):
      probe.check_length(data_config.seq_len + 1, data_config, 'config.data.seq_len + 1')

  def documents(self, data_config, split: str) -> data_lib.Documents:
    """`split` as its documents, for reading each in order (config.carry_state)."""
    prepared = _kept(data_config, split)
    documents = data_lib.Documents(prepared.data, prepared.docs, data_config.seq_len,
                                   f"{split} split of {data_config.name!r}")
    return haystack.mixed_documents(documents, data_config) if split == 'train' else documents

  def load(self, data_config, split: str) -> data_lib.Windows | data_lib.DocumentWindows:
    what = f"{split} split of {data_config.name!r}"
    if split != 'train' and (data_config.get('eval_windows') or 'stream') == 'documents':
      return data_lib.DocumentWindows(load_documents(data_config, split), data_config.seq_len,
                                      what)
    windows = data_lib.Windows(load_split(data_config, split), data_config.seq_len, what)
    return haystack.mixed(windows, data_config) if split == 'train' else windows


registry.register(Corpus())
