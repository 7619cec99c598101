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

Opening checks the files against the `.json` record written with them (the byte file's
size, the document table, and the byte file's sha256 where it is at most
CHECKSUM_MAX_BYTES); a split that does not match, or whose record or table does not
read, is said in one line naming the file and prepared anew. Temporary files left by a
preparation that was killed are removed by the next one; SIGTERM during a preparation
removes its own and says so in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import re
import signal
import sys
import time
from typing import Iterable, NamedTuple

import numpy as np

from latent_flax.tasks import data as data_lib

FORMAT = 1            # of the byte and .docs.npy files; part of every digest
COPY_BYTES = 1 << 24  # a file part is copied in pieces of this size
PROGRESS_EVERY_S = 10.0
CHECKSUM_MAX_BYTES = 1 << 26  # byte files up to this size are checksummed on every open
_TMP_NAME = re.compile(r'^(?P<stem>.+)\.tmp(?P<pid>\d+)\.(bytes|docs\.npy|json)$')


class FilePart(NamedTuple):
  """Bytes [start, stop) of a file: one document, copied without reading it whole."""
  path: str
  start: int
  stop: int


def cache_root(data_config) -> str:
  """config.data.cache_dir, else $LATENT_FLAX_CACHE, else ~/.cache/latent_flax (XDG): the
  one place data is prepared into."""
  chosen = data_config.get('cache_dir') or os.environ.get('LATENT_FLAX_CACHE')
  if not chosen:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join('~', '.cache')
    chosen = os.path.join(base, 'latent_flax')
  return os.path.expanduser(chosen)


def cache_dir(data_config) -> str:
  """Where corpus splits are prepared: corpora/ in cache_root."""
  return os.path.join(cache_root(data_config), 'corpora')


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
  FileParts copied piecewise) if it is not in `cache` yet, or anew if its files there do
  not match their record; documents shorter than `least` bytes are left out. `documents`
  is iterated only when this process writes the file."""
  digest = hashlib.sha256(json.dumps({**key, 'format': FORMAT, 'least': least},
                                     sort_keys=True).encode()).hexdigest()[:16]
  stem = os.path.join(cache, f"{key['name'].replace(':', '_').replace('/', '_')}-"
                             f"{key['split']}-{digest}")
  remove_interrupted(cache)
  try:
    return _open(stem)
  except _Unusable:
    pass
  os.makedirs(cache, exist_ok=True)
  with open(stem + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process preparing it: wait for it
    try:
      return _open(stem)  # prepared by the process we waited for
    except _Unusable as e:
      if e.damage:
        print(f"{e.damage}; preparing it anew.", file=sys.stderr, flush=True)
        for suffix in ('.bytes', '.docs.npy', '.json'):  # the byte file first: it marks
          if os.path.exists(stem + suffix):              # completion for other processes
            os.remove(stem + suffix)
    tmp = f"{stem}.tmp{os.getpid()}"
    try:
      with _stop_said(what):
        _write(stem, tmp, documents, what, least)
    finally:  # after a failure nothing of it is left; after success nothing is left over
      for suffix in ('.docs.npy', '.json', '.bytes'):
        if os.path.exists(tmp + suffix):
          os.remove(tmp + suffix)
  return _open(stem)


class _Unusable(Exception):
  """A split not (completely) in the cache; `damage` says what does not match, '' when it
  was never written."""

  def __init__(self, damage: str = ''):
    super().__init__(damage)
    self.damage = damage


@functools.lru_cache(maxsize=16)
def _open(stem: str) -> PreparedSplit:
  """The prepared split, checked against its record; _Unusable if missing or damaged."""
  if not os.path.exists(stem + '.bytes'):
    raise _Unusable()
  try:
    with open(stem + '.json') as f:
      meta = json.load(f)
    recorded, count, longest_dropped = meta['bytes'], meta['documents'], meta['longest_dropped']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise _Unusable(f"the cache record {stem}.json cannot be read ({type(e).__name__})") from None
  size = os.path.getsize(stem + '.bytes')
  if size != recorded:
    raise _Unusable(f"the cached split {stem}.bytes holds {size:,} bytes but its record "
                    f"says {recorded:,}")
  try:
    docs = np.load(stem + '.docs.npy', allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise _Unusable(f"the cache's document table {stem}.docs.npy cannot be read "
                    f"({type(e).__name__})") from None
  if (docs.shape != (count, 2) or not np.issubdtype(docs.dtype, np.integer)
      or (count and int(docs[-1].sum()) != size)):
    raise _Unusable(f"the cache's document table {stem}.docs.npy does not match its record "
                    f"({count:,} documents over {recorded:,} bytes)")
  if 'sha256' in meta and size <= CHECKSUM_MAX_BYTES:  # records before checksums: size only
    with open(stem + '.bytes', 'rb') as f:
      if hashlib.file_digest(f, 'sha256').hexdigest() != meta['sha256']:
        raise _Unusable(f"the cached split {stem}.bytes differs from the checksum in its record")
  # np.memmap cannot map an empty file; an empty split is an empty array.
  data = (np.memmap(stem + '.bytes', dtype=np.uint8, mode='r') if size else
          np.zeros(0, np.uint8))
  return PreparedSplit(stem + '.bytes', data, docs, longest_dropped)


def remove_interrupted(cache: str) -> list[str]:
  """Removes the temporary files that preparations killed midway (SIGKILL, a lost node)
  left in `cache`; returns their paths. A file `<stem>.tmp<pid>.*` is left over when no
  process holds `<stem>.lock` (a preparer holds it until its files are renamed or
  removed) and no process `pid` runs on this host."""
  try:
    names = sorted(os.listdir(cache))
  except OSError:
    return []
  by_stem: dict[str, list[tuple[str, int]]] = {}
  for name in names:
    m = _TMP_NAME.match(name)
    if m:
      by_stem.setdefault(m['stem'], []).append((name, int(m['pid'])))
  removed = []
  for stem, files in by_stem.items():
    with open(os.path.join(cache, stem + '.lock'), 'a') as lock:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:  # being prepared now
        continue
      for name, pid in files:
        path = os.path.join(cache, name)
        if _process_exists(pid) or not os.path.exists(path):
          continue
        size = os.path.getsize(path)
        os.remove(path)
        removed.append(path)
        print(f"Removed {path} ({size:,} bytes), left by a preparation that was stopped "
              f"(process {pid} is gone).", file=sys.stderr, flush=True)
  return removed


def _process_exists(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


class _Stopped(BaseException):
  """SIGTERM or SIGINT arrived while a split was being written (a BaseException, like
  KeyboardInterrupt, so no `except Exception` in a data source swallows it)."""


@contextlib.contextmanager
def _stop_said(what: str):
  """SIGTERM or SIGINT (Ctrl-C) while writing: stop, let the caller remove the partial
  files, say so in one line and exit 128 + the signal, as the signal's default would, but
  with a word instead of a traceback."""
  def stop(signum, frame):
    del frame
    raise _Stopped(signum)

  stops = (signal.SIGTERM, signal.SIGINT)
  try:
    old = {sig: signal.signal(sig, stop) for sig in stops
           if signal.getsignal(sig) is not signal.SIG_IGN}
  except ValueError:  # not the main thread: signals stay as they are
    yield
    return
  try:
    yield
  except _Stopped as e:
    signum = e.args[0]
    print(f"Stopped by {signal.Signals(signum).name} while preparing {what}; its partial file "
          "was removed and the next run prepares it again.", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum) from None
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)


def _write(stem: str, tmp: str, documents, what: str, least: int) -> None:
  print(f"Preparing {what} into {stem}.bytes once; later runs map it.", file=sys.stderr,
        flush=True)
  docs, written, longest_dropped = [], 0, 0
  start = last_report = time.time()
  sep = bytes([data_lib.SEPARATOR])
  with open(tmp + '.bytes', 'wb') as raw:
    out = _Hashing(raw)
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
    raw.flush()
    os.fsync(raw.fileno())
  np.save(tmp + '.docs.npy', np.asarray(docs, np.int64).reshape(-1, 2))
  with open(tmp + '.json', 'w') as f:
    json.dump({'bytes': written, 'documents': len(docs), 'longest_dropped': longest_dropped,
               'sha256': out.sha256.hexdigest()}, f)
  for suffix in ('.docs.npy', '.json', '.bytes'):  # the byte file last: it marks completion
    os.replace(tmp + suffix, stem + suffix)


class _Hashing:
  """A file being written, and the sha256 of what was written to it."""

  def __init__(self, file):
    self.file, self.sha256 = file, hashlib.sha256()

  def write(self, data: bytes) -> None:
    self.sha256.update(data)
    self.file.write(data)


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
