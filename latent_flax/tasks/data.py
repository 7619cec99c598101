"""Batching, knowing no task by name: byte encoding, windows of a corpus, fixed examples,
the resumable training order and the evaluation batches.

Tasks (latent_flax/tasks/) load their splits into one of two sources with the same
interface (`num_windows`, `get(ids)` -> a batch dict of 'inputs', 'targets',
'weights' and, for some, 'mask' or further 'weights_<name>'):
  Windows   windows of seq_len + 1 bytes at stride seq_len over one uint8 array,
            giving inputs = window[:-1] and targets = window[1:];
  Examples  fixed examples of equal length.
Documents (a split as its documents) feed DocumentStream, the training order that reads
each document's windows in turn across steps (config.carry_state).

Training order: global sample s of the stream is window perm_e[s mod W] with
e = s // W and perm_e a permutation seeded by (seed, e). Batch b holds samples
b*G .. b*G+G-1 (G the global batch); process p materialises only its rows. So the
iterator position is one integer (batches consumed), resuming is exact, and the
stream is the same for any number of processes. perm_e(i) is computed per sample by
grain's index_shuffle (a block cipher over [0, W)): no memory grows with W. Runs begun
before 2026-12-02 drew perm_e whole with numpy (`shuffle='numpy'`, kept so they resume
on the same stream; their saved data state has no 'shuffle').
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

SEPARATOR = 0  # byte between documents


def encode(text: str) -> np.ndarray:
  return np.frombuffer(text.encode('utf-8'), dtype=np.uint8)


def decode(tokens) -> str:
  return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode('utf-8', errors='replace')


def join_documents(docs: list[bytes]) -> np.ndarray:
  """Concatenates byte documents with SEPARATOR between them."""
  sep = bytes([SEPARATOR])
  return np.frombuffer(sep.join(docs), dtype=np.uint8)


class Windows:
  """Windows of seq_len + 1 bytes at stride seq_len (or `stride`) over one split."""

  def __init__(self, data: np.ndarray, seq_len: int, what: str = 'corpus',
               stride: int | None = None):
    if len(data) < seq_len + 1:
      raise ValueError(f"the {what} has {len(data):,} bytes, fewer than one window of "
                       f"seq_len + 1 = {seq_len + 1:,}; lower config.data.seq_len or use "
                       "more text.")
    self.data, self.seq_len = data, seq_len
    self.stride = seq_len if stride is None else stride
    self.num_windows = (len(data) - seq_len - 1) // self.stride + 1

  def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    offsets = np.asarray(ids, np.int64)[:, None] * self.stride + np.arange(self.seq_len + 1)
    win = self.data[offsets].astype(np.int32)
    return {'inputs': win[:, :-1], 'targets': win[:, 1:],
            'weights': np.ones(win[:, 1:].shape, np.float32)}


class DocumentWindows(Windows):
  """One window per document, from its first byte: the document's first seq_len + 1
  bytes, for every document at least that long (document-aligned evaluation)."""

  def __init__(self, docs: list[bytes], seq_len: int, what: str = 'corpus'):
    long_enough = [d[:seq_len + 1] for d in docs if len(d) >= seq_len + 1]
    if not long_enough:
      raise ValueError(f"no document of the {what} has seq_len + 1 = {seq_len + 1:,} bytes "
                       f"(the longest has {max(map(len, docs), default=0):,}); lower the "
                       "evaluation length or use longer documents.")
    self.num_documents = len(long_enough)
    super().__init__(np.frombuffer(b''.join(long_enough), np.uint8), seq_len, what,
                     stride=seq_len + 1)


class Examples:
  """Fixed examples of equal length: the same interface as Windows (`num_windows`, `get`)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    self.arrays = arrays
    self.num_windows = len(arrays['inputs'])
    self.seq_len = arrays['inputs'].shape[1]

  def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    ids = np.asarray(ids, np.int64)
    return {k: v[ids] for k, v in self.arrays.items()}


SHUFFLES = ('index_shuffle', 'numpy')
SHUFFLE_ROUNDS = 8  # of index_shuffle's cipher (an even number >= 4)


def epoch_seed(seed: int, epoch: int) -> int:
  """A 32-bit seed per (seed, epoch), as index_shuffle takes."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class TrainIterator(Iterator[dict]):
  """Endless shuffled batches; `position` (batches consumed) is the whole state."""

  def __init__(self, windows: Windows | Examples, global_batch: int, seed: int, *,
               process_index: int = 0, process_count: int = 1, position: int = 0,
               shuffle: str = 'index_shuffle'):
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} does not split over {process_count} processes.")
    if shuffle not in SHUFFLES:
      raise ValueError(f"shuffle={shuffle!r} is unknown; use one of {list(SHUFFLES)}.")
    self.windows, self.global_batch, self.seed = windows, global_batch, seed
    self.local_batch = global_batch // process_count
    self.row0 = process_index * self.local_batch
    self.position, self.shuffle = position, shuffle
    self._perms: dict[int, np.ndarray] = {}

  def _permuted(self, epoch: int, indices: np.ndarray) -> np.ndarray:
    w = self.windows.num_windows
    if self.shuffle == 'numpy':
      if epoch not in self._perms:
        self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(w)}
      return self._perms[epoch][indices]
    if w == 1:
      return np.zeros_like(indices)
    from grain.experimental import index_shuffle  # imported on first use: it is slow
    seed = epoch_seed(self.seed, epoch)
    return np.array([index_shuffle(i, max_index=w - 1, seed=seed, rounds=SHUFFLE_ROUNDS)
                     for i in indices.tolist()], np.int64)

  def sample_ids(self, position: int) -> np.ndarray:
    first = position * self.global_batch + self.row0
    samples = np.arange(first, first + self.local_batch)
    w = self.windows.num_windows
    ids = np.empty_like(samples)
    for epoch in np.unique(samples // w):
      sel = samples // w == epoch
      ids[sel] = self._permuted(int(epoch), samples[sel] % w)
    return ids

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.windows.get(self.sample_ids(self.position))
    self.position += 1
    return batch

  def get_state(self) -> dict:
    return {'position': int(self.position), 'seed': int(self.seed), 'shuffle': self.shuffle}

  def set_state(self, state: dict) -> None:
    self.position = int(state['position'])
    self.shuffle = state.get('shuffle', 'numpy')


class Documents:
  """A split as its documents: `data` (every byte, documents joined) and `docs_D2`
  ((start, length) of each), for reading each document in order (DocumentStream)."""

  def __init__(self, data: np.ndarray, docs_D2: np.ndarray, seq_len: int, what: str = 'corpus'):
    if not len(docs_D2):
      raise ValueError(f"the {what} has no documents.")
    self.data, self.docs, self.seq_len = data, np.asarray(docs_D2, np.int64), seq_len
    self.num_documents = len(self.docs)

  def length(self, doc: int) -> int:
    return int(self.docs[doc, 1])

  def window(self, doc: int, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets and weights of the window at `offset` bytes into document `doc`:
    inputs are its bytes offset .. offset + seq_len - 1, targets the next byte of each,
    the byte after the document's last being SEPARATOR; past that, weight 0."""
    start, length = self.docs[doc]
    n = self.seq_len
    ext = np.zeros(n + 1, np.int32)  # SEPARATOR == 0 after the document, then padding
    got = self.data[start + offset:start + min(length, offset + n + 1)]
    ext[:len(got)] = got
    weights = (np.arange(n) < length - offset).astype(np.float32)
    return ext[:-1], ext[1:], weights


class DocumentStream(Iterator[dict]):
  """Batches that read documents in order: row r of the global batch reads one document's
  consecutive windows on consecutive steps; when it ends, the row takes the next document
  of the stream and its first window is flagged `start` (the attention state it carries
  is reset there). Documents are handed out in a per-epoch order drawn from the seed
  (grain's index_shuffle: no memory grows with the corpus).

  The state is small and global: the next document's number in the stream and each row's
  (document number, byte offset). Every process keeps all of it and materialises only its
  rows, so the stream is the same for any number of processes and any mesh; a saved state
  resumes exactly. Batches hold 'inputs', 'targets', 'weights' and 'start' ([rows] bool).
  """

  def __init__(self, source: Documents, global_batch: int, seed: int, *,
               process_index: int = 0, process_count: int = 1, state: dict | None = None):
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} does not split over {process_count} processes.")
    self.source, self.global_batch, self.seed = source, global_batch, seed
    self.local_batch = global_batch // process_count
    self.row0 = process_index * self.local_batch
    self.next_doc = global_batch
    self.row_doc = np.arange(global_batch, dtype=np.int64)
    self.row_offset = np.zeros(global_batch, np.int64)
    self.position = 0
    if state is not None:
      self.set_state(state)

  def document(self, number: int) -> int:
    """The document that is `number`-th in the stream (epoch number // D reshuffled)."""
    d = self.source.num_documents
    epoch, i = divmod(int(number), d)
    if d == 1:
      return 0
    from grain.experimental import index_shuffle  # imported on first use: it is slow
    return int(index_shuffle(i, max_index=d - 1, seed=epoch_seed(self.seed, epoch),
                             rounds=SHUFFLE_ROUNDS))

  def __next__(self) -> dict[str, np.ndarray]:
    rows = range(self.row0, self.row0 + self.local_batch)
    parts = [self.source.window(self.document(self.row_doc[r]), int(self.row_offset[r]))
             for r in rows]
    batch = {'inputs': np.stack([p[0] for p in parts]),
             'targets': np.stack([p[1] for p in parts]),
             'weights': np.stack([p[2] for p in parts]),
             'start': self.row_offset[self.row0:self.row0 + self.local_batch] == 0}
    self._advance()
    return batch

  def next_windows(self, count: int) -> dict[str, np.ndarray]:
    """`count` consecutive batches joined row by row: each row's windows side by side
    ('inputs', 'targets', 'weights': [rows, count x seq_len]) and their 'start' flags
    ([rows, count]); a row whose document ends starts the next one within them."""
    parts = [next(self) for _ in range(count)]
    joined = {k: np.concatenate([p[k] for p in parts], axis=1)
              for k in ('inputs', 'targets', 'weights')}
    return {**joined, 'start': np.stack([p['start'] for p in parts], axis=1)}

  def _advance(self) -> None:
    """Every row of the global batch moves one window on; rows past their document's end
    take the next documents of the stream, in row order."""
    self.row_offset += self.source.seq_len
    for r in range(self.global_batch):
      length = self.source.length(self.document(self.row_doc[r]))
      if self.row_offset[r] >= length:  # every target of the document has been read
        self.row_doc[r], self.row_offset[r] = self.next_doc, 0
        self.next_doc += 1
    self.position += 1

  def get_state(self) -> dict:
    return {'position': int(self.position), 'seed': int(self.seed), 'order': 'documents',
            'next_doc': int(self.next_doc), 'row_doc': self.row_doc.tolist(),
            'row_offset': self.row_offset.tolist()}

  def set_state(self, state: dict) -> None:
    if len(state['row_doc']) != self.global_batch:
      raise ValueError(f"the saved document stream has {len(state['row_doc'])} rows, this run "
                       f"{self.global_batch}: keep the global batch (per_device_batch_size x "
                       "devices) of the run when it carries state.")
    self.position = int(state['position'])
    self.next_doc = int(state['next_doc'])
    self.row_doc = np.asarray(state['row_doc'], np.int64)
    self.row_offset = np.asarray(state['row_offset'], np.int64)


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
    for key in [k for k in batch if k.startswith('weights')]:  # 'weights', 'weights_<name>'
      w = batch[key]
      batch[key] = w * real.reshape(real.shape + (1,) * (w.ndim - 1))
    yield batch
