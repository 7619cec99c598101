"""Passkey retrieval (Mohtashami & Jaggi 2023): a random k-digit key stated once at a chosen
depth of a haystack, asked for at the end.

    ...haystack... The pass key is 71432. Remember it. ...haystack...
    What is the pass key? The pass key is 71432

The answer is the key's k bytes, the document's last. Nothing is downloaded: documents are
drawn from a seed (tasks/haystack.py). Uses:
  - evaluation of any LM checkpoint: `python probe.py --workdir=W --probe=passkey`
    (evaluation/retrieval.py: exact greedy retrieval and the key's log-probability on a
    grid of lengths x depths);
  - training, mixed into a corpus: config.data.passkey_rate of its training windows are
    passkey documents whose haystack is the corpus's text (every byte weighted);
  - a task of its own, config.data.name='passkey': documents of seq_len + 1 bytes on the
    filler, only the key's bytes weighted (accuracy = digits right).
config.data.passkey_digits sets k (default DIGITS).
"""

from __future__ import annotations

import numpy as np

from latent_flax.tasks import haystack, registry

DIGITS = 5
MAX_DIGITS = 18  # keys are drawn as int64
QUESTION = b"\nWhat is the pass key? The pass key is "


def needle(key: bytes) -> bytes:
  return b"The pass key is " + key + b". Remember it. "


def document(rng: np.random.Generator, length: int, hay: haystack.Haystack = haystack.filler,
             depth: float | None = None, *, digits: int = DIGITS) -> haystack.Document:
  """A passkey document of `length` bytes, the key at `depth` (drawn in [0, 1] if None)."""
  key = str(rng.integers(10 ** (digits - 1), 10 ** digits)).encode()
  depth = float(rng.uniform()) if depth is None else depth
  return haystack.compose(length, hay, [(depth, needle(key))], QUESTION, key, 0)


def options(data_config) -> dict:
  """{'digits': config.data.passkey_digits}, checked in one line."""
  digits = data_config.get('passkey_digits', DIGITS)
  if isinstance(digits, bool) or not isinstance(digits, int) or not 1 <= digits <= MAX_DIGITS:
    raise ValueError(f"config.data.passkey_digits={digits!r} must be an integer in "
                     f"[1, {MAX_DIGITS}].")
  return {'digits': digits}


PROBE = haystack.register_probe(haystack.Probe(
    'passkey', document, options,
    longest=lambda o: len(needle(b'0' * o['digits'])) + len(QUESTION) + o['digits'],
    chance=lambda o: 10.0 ** -o['digits'], title='passkey retrieval'))
registry.register(haystack.ProbeTask(PROBE))
