"""Haystacks with things hidden in them: what the retrieval probes share (tasks/passkey.py,
tasks/babi.py), the sources that serve their documents, and their mixing into a corpus.

A probe document is `length` bytes: haystack text with needles (a pass key, facts) spliced
in at chosen depths, then a question, then the answer as its last bytes. The haystack is
the classic filler (five sentences repeated) or any text (a corpus split, read from a
seeded start and wrapped around). A needle at depth d starts at the sentence boundary
nearest d x H, H the bytes of haystack: the end of a sentence ('. ' or a newline) within
SNAP_BYTES, else of a word, else exactly there. Cost: O(length) bytes per document.

Registered probes (register_probe) are what evaluation/retrieval.py grids and what a
corpus mixes into its training windows (Mixed): a fraction config.data.<probe>_rate of
them are probe documents of seq_len + 1 bytes whose haystack is the corpus's own text,
every byte weighted as in any window (the answer's bytes are a few of them). A run that
carries state (config.carry_state) reads documents in order instead (MixedDocuments): that
fraction of its documents are probe documents up to config.data.probe_document_bytes
long, read window by window, the key asked for windows after it was stated.
config.data.probe_weights='answer' weights only the answers' bytes of probe documents,
each by seq_len / its answer's length, so that an answer counts as a window of text
(default 'all': every byte, as any text). Documents are
drawn from (seed, stream, index): the same id gives the same document in every process.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from latent_flax.tasks import data as data_lib, registry

FILLER = (b"The grass is green. The sky is blue. The sun is yellow. Here we go. "
          b"There and back again. ")
SNAP_BYTES = 256   # a needle moves at most this far to the end of a sentence (else a word)
MIX_SEED = 20260  # probe documents mixed into a corpus: seed of their stream


@dataclasses.dataclass(frozen=True)
class Document:
  """One probe document: `tokens` (uint8 [length]), the answer its bytes from
  `answer_start` on; `needles` the byte offset of each spliced needle, `target` the index
  of the one at `depth` (the key, or the fact that decides the answer)."""
  tokens: np.ndarray
  answer_start: int
  needles: tuple[int, ...]
  target: int
  depth: float

  @property
  def answer(self) -> bytes:
    return self.tokens[self.answer_start:].tobytes()

  @property
  def text(self) -> str:
    return data_lib.decode(self.tokens)


Haystack = Callable[[int], bytes]  # n -> n bytes of haystack text


def filler(n: int) -> bytes:
  """n bytes of FILLER repeated (the last sentence cut where n ends)."""
  return (FILLER * (n // len(FILLER) + 1))[:n]


def text_haystack(text: np.ndarray, start: int) -> Haystack:
  """Haystacks read from `text` (uint8) at `start`, wrapping around its end."""
  if not len(text):
    raise ValueError("the haystack text is empty; use filler or a non-empty split.")

  def take(n: int) -> bytes:
    return np.take(text, np.arange(start, start + n), mode='wrap').astype(np.uint8).tobytes()
  return take


def boundary(hay: bytes, at: int) -> int:
  """The sentence end nearest `at` (after '. ' or a newline) within SNAP_BYTES, else the
  nearest word end (after a space) there, else `at`; 0 and len(hay) count as ends."""
  lo, hi = max(0, at - SNAP_BYTES), min(len(hay), at + SNAP_BYTES)
  for ends in (lambda p: p in (0, len(hay)) or hay[p - 1:p] == b'\n' or hay[p - 2:p] == b'. ',
               lambda p: hay[p - 1:p] == b' '):
    found = [p for p in range(lo, hi + 1) if ends(p)]
    if found:
      return min(found, key=lambda p: (abs(p - at), p))
  return at


def compose(length: int, hay: Haystack, needles: list[tuple[float, bytes]], question: bytes,
            answer: bytes, target: int) -> Document:
  """`length` bytes: haystack with `needles` ((depth, text), depths non-decreasing)
  spliced in, then `question` and `answer`. One-line ValueError if they do not fit."""
  fixed = sum(len(t) for _, t in needles) + len(question) + len(answer)
  if length < fixed:
    raise ValueError(f"a probe document of {length:,} bytes cannot hold its needles, question "
                     f"and answer ({fixed:,} bytes); use lengths of at least {fixed:,}.")
  text = hay(length - fixed)
  parts, offsets, cut, placed = [], [], 0, 0
  for depth, needle in needles:
    at = max(boundary(text, round(depth * len(text))), cut)
    parts.append(text[cut:at])
    placed += at - cut
    offsets.append(placed)
    parts.append(needle)
    placed += len(needle)
    cut = at
  parts += [text[cut:], question, answer]
  tokens = np.frombuffer(b''.join(parts), np.uint8)
  return Document(tokens, length - len(answer), tuple(offsets), target, needles[target][0])


# --------------------------------------------------------------------------- #
# The probes, by name.
# --------------------------------------------------------------------------- #

@dataclasses.dataclass(frozen=True)
class Probe:
  """A retrieval probe: `make(rng, length, hay, depth, **options(data_config))` -> Document."""
  name: str
  make: Callable[..., Document]
  options: Callable[[Any], dict]   # its keyword options from a config.data (checked)
  longest: Callable[[dict], int]   # most bytes its needles, question and answer take
  chance: Callable[[dict], float]  # exact-retrieval accuracy of guessing, for its options
  title: str                       # how plots and tables name it

  @property
  def rate_field(self) -> str:
    return f'{self.name}_rate'  # config.data field: fraction of training windows

  def document(self, rng: np.random.Generator, length: int, hay: Haystack = filler,
               depth: float | None = None, data_config=None) -> Document:
    return self.make(rng, length, hay, depth, **self.options(data_config or {}))

  def check_length(self, length: int, data_config=None, where: str = 'length') -> None:
    """One-line ValueError if documents of `length` bytes cannot hold the probe."""
    least = self.longest(self.options(data_config or {})) + 1
    if length < least:
      raise ValueError(f"{where}={length:,} is too short for {self.name} documents: they "
                       f"need at least {least:,} bytes (needles, question and answer).")


_PROBES: dict[str, Probe] = {}


def register_probe(probe: Probe) -> Probe:
  if probe.name in _PROBES:
    raise ValueError(f"probe {probe.name!r} is already registered.")
  _PROBES[probe.name] = probe
  return probe


def probe_names() -> list[str]:
  return list(_PROBES)


def get_probe(name: str) -> Probe:
  if name not in _PROBES:
    raise ValueError(f"--probe={name!r} is unknown; use one of {probe_names()}.")
  return _PROBES[name]


def rng_for(seed: int, *stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, *stream])


# --------------------------------------------------------------------------- #
# Sources: probe documents on their own, and mixed into a corpus's windows.
# --------------------------------------------------------------------------- #

class Generated:
  """`num_windows` probe documents of seq_len + 1 bytes on filler, made on demand (one
  per id), with the Windows interface; only the answer's bytes are weighted."""

  def __init__(self, probe: Probe, data_config, num: int, seed: int, stream: int):
    self.probe, self.data_config = probe, data_config
    self.num_windows, self.seq_len = num, data_config.seq_len
    self.seed, self.stream = seed, stream

  def document(self, i: int) -> Document:
    return self.probe.document(rng_for(self.seed, self.stream, i), self.seq_len + 1,
                               data_config=self.data_config)

  def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    docs = [self.document(int(i)) for i in np.asarray(ids)]
    tokens = np.stack([d.tokens for d in docs]).astype(np.int32)
    # Target t is tokens[t + 1]: the answer's targets are t >= answer_start - 1.
    weights = (np.arange(self.seq_len)[None] >= np.array([d.answer_start - 1 for d in docs])[:, None])
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
            'weights': weights.astype(np.float32)}


class Mixed:
  """A corpus's training windows (data.Windows) with probe documents added: ids below the
  corpus's W windows are its windows; the P_i ids after them documents of probe i, P_i =
  round(W x rate_i / (1 - the rates' sum)), so that rate_i of all ids are probe i's. A
  probe document's haystack is the corpus's text from a start drawn with it."""

  def __init__(self, base: data_lib.Windows, rates: list[tuple[Probe, float]], data_config):
    self.base, self.data_config, self.seq_len = base, data_config, base.seq_len
    total = sum(r for _, r in rates)
    self.counts = [(p, round(base.num_windows * r / (1 - total))) for p, r in rates]
    self.num_windows = base.num_windows + sum(n for _, n in self.counts)

  def document(self, i: int) -> Document:
    """The probe document of id i (>= the corpus's windows)."""
    first = self.base.num_windows
    for stream, (probe, n) in enumerate(self.counts):
      if i < first + n:
        rng = rng_for(MIX_SEED, stream, i)
        hay = text_haystack(self.base.data, int(rng.integers(len(self.base.data))))
        return probe.document(rng, self.seq_len + 1, hay, data_config=self.data_config)
      first += n
    raise IndexError(f"id {i} is past the {self.num_windows} windows.")

  def get(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    ids = np.asarray(ids, np.int64)
    own = ids < self.base.num_windows
    batch = self.base.get(np.where(own, ids, 0))
    for row in np.nonzero(~own)[0]:
      doc = self.document(int(ids[row]))
      tokens = doc.tokens.astype(np.int32)
      batch['inputs'][row], batch['targets'][row] = tokens[:-1], tokens[1:]
      if answers_only(self.data_config):
        batch['weights'][row] = answer_weights(doc, 0, self.seq_len)
    return batch


def answers_only(data_config) -> bool:
  """config.data.probe_weights == 'answer': probe documents mixed into training weight
  only their answer's bytes, each by n / len(answer), so that an answer counts in the
  loss as much as a window of n text bytes (the loss asks for retrieval there)."""
  return (data_config.get('probe_weights') or 'all') == 'answer'


def answer_weights(doc: Document, offset: int, n: int) -> np.ndarray:
  """float32 [n]: n / len(answer) where the window at `offset` predicts an answer byte
  (input position p predicts byte offset + p + 1), else 0."""
  predicted = offset + np.arange(n) + 1
  hit = (predicted >= doc.answer_start) & (predicted < len(doc.tokens))
  return hit.astype(np.float32) * np.float32(n / len(doc.answer))


class MixedDocuments:
  """A corpus's documents (data.Documents, read in order with config.carry_state) with
  probe documents added: numbers below the corpus's D documents are its documents, the
  P_i after them documents of probe i, P_i = round(D x rate_i / (1 - the rates' sum)).
  A probe document is L bytes, L log-uniform in [seq_len + 1,
  config.data.probe_document_bytes] (drawn with it), so that a key stated in one window
  is asked for windows later, through the carried state; its haystack is the corpus's
  text from a start drawn with it, every byte weighted."""

  CACHED = 64  # probe documents kept made (a row reads one over several steps)

  def __init__(self, base: data_lib.Documents, rates: list[tuple[Probe, float]], data_config):
    self.base, self.data_config, self.seq_len = base, data_config, base.seq_len
    self.longest = max(data_config.get('probe_document_bytes') or 0, base.seq_len + 1)
    total = sum(r for _, r in rates)
    self.counts = [(p, round(base.num_documents * r / (1 - total))) for p, r in rates]
    self.num_documents = base.num_documents + sum(n for _, n in self.counts)
    self._made: dict[int, data_lib.Documents] = {}

  def probe_document(self, i: int) -> Document:
    """The probe document numbered i (>= the corpus's documents)."""
    first = self.base.num_documents
    for stream, (probe, n) in enumerate(self.counts):
      if i < first + n:
        rng = rng_for(MIX_SEED + 1, stream, i)
        lo, hi = np.log(self.seq_len + 1), np.log(self.longest)
        length = int(round(np.exp(rng.uniform(lo, hi))))
        hay = text_haystack(self.base.data, int(rng.integers(len(self.base.data))))
        return probe.document(rng, length, hay, data_config=self.data_config)
      first += n
    raise IndexError(f"document {i} is past the {self.num_documents} documents.")

  def _probe(self, i: int) -> tuple[Document, data_lib.Documents]:
    if i not in self._made:
      if len(self._made) >= self.CACHED:
        self._made.pop(next(iter(self._made)))
      doc = self.probe_document(i)
      self._made[i] = doc, data_lib.Documents(doc.tokens, [(0, len(doc.tokens))], self.seq_len)
    return self._made[i]

  def length(self, doc: int) -> int:
    return self.base.length(doc) if doc < self.base.num_documents else self._probe(doc)[1].length(0)

  def window(self, doc: int, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if doc < self.base.num_documents:
      return self.base.window(doc, offset)
    made, source = self._probe(doc)
    inputs, targets, weights = source.window(0, offset)
    if answers_only(self.data_config):
      weights = answer_weights(made, offset, self.seq_len)
    return inputs, targets, weights


def mixed_documents(base: data_lib.Documents, data_config) -> data_lib.Documents | MixedDocuments:
  """`base` with config.data's probe rates mixed in as documents (itself when none)."""
  chosen = rates(data_config)
  return MixedDocuments(base, chosen, data_config) if chosen else base


def rates(data_config) -> list[tuple[Probe, float]]:
  """(probe, rate) of the probes config.data mixes into training windows (rate > 0)."""
  return [(p, float(data_config.get(p.rate_field) or 0.0)) for p in _PROBES.values()
          if data_config.get(p.rate_field)]


def validate_rates(data_config) -> None:
  """One-line ValueError for a rate outside [0, 1) or rates summing to 1 or more."""
  chosen = []
  for p in _PROBES.values():
    rate = data_config.get(p.rate_field) or 0.0
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
      raise ValueError(f"config.data.{p.rate_field}={rate!r} must be a fraction in [0, 1) "
                       "(0 = no probe documents in training).")
    chosen.append(rate)
  if sum(chosen) >= 1:
    raise ValueError(f"the probe rates ({', '.join(p.rate_field for p in _PROBES.values())}) "
                     f"sum to {sum(chosen):g}; keep their sum below 1.")


class ProbeTask(registry.Task):
  """A probe as a task of its own: documents of seq_len + 1 bytes on filler, made from
  config.data.seed (default 0); loss and accuracy at the answer's bytes only."""

  metric = 'eval_accuracy'
  target_unit = 'answer bytes'
  splits = ('train', 'validation', 'test')
  train_documents = 1 << 30  # made on demand from their id
  eval_documents = 256       # validation and test

  def __init__(self, probe: Probe):
    self.probe, self.name = probe, probe.name
    self.accuracy_label = f'{probe.title} byte accuracy'

  def validate(self, data_config) -> None:
    self.probe.check_length(data_config.seq_len + 1, data_config, 'config.data.seq_len + 1')

  def load(self, data_config, split: str) -> Generated:
    num = self.train_documents if split == 'train' else self.eval_documents
    return Generated(self.probe, data_config, num, data_config.get('seed') or 0,
                     self.splits.index(split))


def mixed(base: data_lib.Windows, data_config) -> data_lib.Windows | Mixed:
  """`base` with config.data's probe rates mixed in (itself when there are none)."""
  chosen = rates(data_config)
  return Mixed(base, chosen, data_config) if chosen else base
