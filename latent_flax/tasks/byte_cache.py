"""Corpus splits prepared once into flat byte files and read through np.memmap.

A split is its documents joined with data.SEPARATOR, written once to
`<cache>/<name>-<split>-<digest>.bytes`, with each document's (start, length) in a
`.docs.npy` beside it. The digest covers what the bytes depend on (the source's files or
tfds version, the split rule, min_document_bytes), so a changed source is prepared anew.
Writing goes to temporary names that are renamed into place, the byte file last, so a
file under its final name is complete; a process that finds another one preparing the
same split waits on its lock (on one host or on a shared file system), then maps the
result. Reading maps the file: a process touches only the pages of the windows it reads,
so its memory does not grow with the corpus.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import sys
import time
from typing import Iterable, NamedTuple

import numpy as np

from latent_flax.tasks import data as data_lib

FORMAT = 1            # of the byte and .docs.npy files; part of every digest
COPY_BYTES = 1 << 24  # a file part is copied in pieces of this size
PROGRESS_EVERY_S = 10.0


class FilePart(NamedTuple):
  """Bytes [start, stop) of a file: one document, copied without reading it whole."""
  path: str
  start: int
  stop: int


def cache_dir(data_config) -> str:
  """config.data.cache_dir, else $LATENT_FLAX_CACHE, else ~/.cache/latent_flax (XDG)."""
  chosen = data_config.get('cache_dir') or os.environ.get('LATENT_FLAX_CACHE')
  if not chosen:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
    chosen = os.path.join(base, 'latent_flax')
  return os.path.join(os.path.expanduser(chosen), 'corpora')


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
  """A prepared split: `data` (read-only uint8 map of every byte), `docs` ((start, length)
  of each document in it), `longest_dropped` (the longest document min_document_bytes
  left out, for the error that says to lower it)."""
  path: str
  data: np.ndarray
  docs: np.ndarray
  longest_dropped: int

  def documents(self) -> list[np.ndarray]:
    """Each document as a view of the map (nothing is copied)."""
    return [self.data[s:s + n] for s, n in self.docs.tolist()]


def prepare(key: dict, documents: Iterable[bytes | FilePart], cache: str, what: str, *,
            least: int = 0) -> PreparedSplit:
  """The split named by `key` (a JSON-able dict), written once from `documents` (bytes, or
  FileParts copied piecewise) if it is not in `cache` yet; documents shorter than `least`
  bytes are left out. `documents` is iterated only when this process writes the file."""
  digest = hashlib.sha256(json.dumps({**key, 'format': FORMAT, 'least': least},
                                     sort_keys=True).encode()).hexdigest()[:16]
  stem = os.path.join(cache, f"{key['name'].replace(':', '_').replace('/', '_')}-"
                             f"{key['split']}-{digest}")
  if not os.path.exists(stem + '.bytes'):
    os.makedirs(cache, exist_ok=True)
    with open(stem + '.lock', 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)  # another process preparing it: wait for it
      if not os.path.exists(stem + '.bytes'):
        tmp = f"{stem}.tmp{os.getpid()}"
        try:
          _write(stem, tmp, documents, what, least)
        finally:  # after a failure nothing of it is left; after success nothing is left over
          for suffix in ('.docs.npy', '.json', '.bytes'):
            if os.path.exists(tmp + suffix):
              os.remove(tmp + suffix)
  return _open(stem)


@functools.lru_cache(maxsize=16)
def _open(stem: str) -> PreparedSplit:
  with open(stem + '.json') as f:
    meta = json.load(f)
  size = os.path.getsize(stem + '.bytes')
  # np.memmap cannot map an empty file; an empty split is an empty array.
  data = (np.memmap(stem + '.bytes', dtype=np.uint8, mode='r') if size else
          np.zeros(0, np.uint8))
  return PreparedSplit(stem + '.bytes', data, np.load(stem + '.docs.npy'),
                       meta['longest_dropped'])


def _write(stem: str, tmp: str, documents, what: str, least: int) -> None:
  print(f"Preparing {what} into {stem}.bytes once; later runs map it.", file=sys.stderr,
        flush=True)
  docs, written, longest_dropped = [], 0, 0
  start = last_report = time.time()
  sep = bytes([data_lib.SEPARATOR])
  with open(tmp + '.bytes', 'wb') as out:
    for doc in documents:
      length = doc.stop - doc.start if isinstance(doc, FilePart) else len(doc)
      if length < least:
        longest_dropped = max(longest_dropped, length)
        continue
      if docs:
        out.write(sep)
        written += 1
      docs.append((written, length))
      if isinstance(doc, FilePart):
        _copy(doc, out)
      else:
        out.write(doc)
      written += length
      if time.time() - last_report > PROGRESS_EVERY_S:
        last_report = time.time()
        print(f"  {written / 2**20:,.0f} MiB, {len(docs):,} documents, "
              f"{written / 2**20 / (last_report - start):,.0f} MiB/s", file=sys.stderr,
              flush=True)
    out.flush()
    os.fsync(out.fileno())
  np.save(tmp + '.docs.npy', np.asarray(docs, np.int64).reshape(-1, 2))
  with open(tmp + '.json', 'w') as f:
    json.dump({'bytes': written, 'documents': len(docs), 'longest_dropped': longest_dropped},
              f)
  for suffix in ('.docs.npy', '.json', '.bytes'):  # the byte file last: it marks completion
    os.replace(tmp + suffix, stem + suffix)


def _copy(part: FilePart, out) -> None:
  with open(part.path, 'rb') as f:
    f.seek(part.start)
    left = part.stop - part.start
    while left > 0:
      piece = f.read(min(COPY_BYTES, left))
      if not piece:
        raise ValueError(f"{part.path} ended {left:,} bytes early while being prepared; "
                         "was it changed meanwhile? Run again.")
      out.write(piece)
      left -= len(piece)
