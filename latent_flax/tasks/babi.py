"""bAbI-style fact retrieval (task qa1 of Weston et al. 2015, hidden in long text as in
BABILong, Kuratov et al. 2024): facts about where people went, scattered through a
haystack, and a question about one person at the end.

    ...Mary went to the garden. ...haystack... Mary travelled to the kitchen. ...
    John moved to the office. ...
    Where is Mary? Mary is in the kitchen

The answer is a place, the document's last bytes, decided by the latest fact about the
person asked: that fact sits at the chosen depth; the facts before it (about anyone, those
about the person asked naming other places) at random depths before it, those after it
(about others only) at random depths after it. With F facts and depth d, round(d x (F-1))
come before it. A guess is right 1 time in len(PLACES). Same uses as tasks/passkey.py:
`probe.py --probe=babi`, config.data.babi_rate of a corpus's training windows, and
config.data.name='babi'; config.data.babi_facts sets F (default FACTS).
"""

from __future__ import annotations

import numpy as np

from latent_flax.tasks import haystack, registry

PEOPLE = ('Mary', 'John', 'Daniel', 'Sandra')
PLACES = ('bathroom', 'bedroom', 'garden', 'hallway', 'kitchen', 'office')
VERBS = ('went to', 'moved to', 'travelled to', 'journeyed to', 'went back to')
FACTS = 4
MAX_FACTS = 64


def fact(person: str, verb: str, place: str) -> bytes:
  return f"{person} {verb} the {place}. ".encode()


def question(person: str) -> bytes:
  return f"\nWhere is {person}? {person} is in the ".encode()


def document(rng: np.random.Generator, length: int, hay: haystack.Haystack = haystack.filler,
             depth: float | None = None, *, facts: int = FACTS) -> haystack.Document:
  """A qa1 document of `length` bytes with `facts` facts, the deciding one at `depth`
  (drawn in [0, 1] if None)."""
  depth = float(rng.uniform()) if depth is None else depth
  before = round(depth * (facts - 1))
  asked, answer = rng.choice(PEOPLE), rng.choice(PLACES)
  others = [p for p in PEOPLE if p != asked]
  needles = []
  for d in np.sort(rng.uniform(0.0, depth, before)):
    person = rng.choice(PEOPLE)
    place = rng.choice([p for p in PLACES if p != answer] if person == asked else PLACES)
    needles.append((float(d), fact(person, rng.choice(VERBS), place)))
  needles.append((depth, fact(asked, rng.choice(VERBS), answer)))
  for d in np.sort(rng.uniform(depth, 1.0, facts - 1 - before)):
    needles.append((float(d), fact(rng.choice(others), rng.choice(VERBS), rng.choice(PLACES))))
  return haystack.compose(length, hay, needles, question(asked), answer.encode(), before)


def options(data_config) -> dict:
  """{'facts': config.data.babi_facts}, checked in one line."""
  facts = data_config.get('babi_facts', FACTS)
  if isinstance(facts, bool) or not isinstance(facts, int) or not 1 <= facts <= MAX_FACTS:
    raise ValueError(f"config.data.babi_facts={facts!r} must be an integer in [1, {MAX_FACTS}].")
  return {'facts': facts}


def longest(o: dict) -> int:
  """Most bytes of the facts, the question and the answer."""
  word = lambda words: max(map(len, words))
  return (o['facts'] * len(fact(max(PEOPLE, key=len), max(VERBS, key=len),
                                max(PLACES, key=len)))
          + len(question(max(PEOPLE, key=len))) + word(PLACES))


PROBE = haystack.register_probe(haystack.Probe(
    'babi', document, options, longest=longest, chance=lambda o: 1.0 / len(PLACES),
    title='bAbI qa1 (where is the person?)'))
registry.register(haystack.ProbeTask(PROBE))
