"""ListOps (Long Range Arena, Tay et al. 2021; Nangia & Bowman 2018), generated here.

An example is a bracketed expression such as `[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`
whose value, a digit 0-9, is the label (10 classes). Operators: MAX, MIN, MED
(median, rounded down) and SM (sum modulo 10), each over 2 to MAX_ARGS arguments
that are digits or nested expressions, nested at most MAX_DEPTH deep. Lengths are
min_length..max_length tokens (the published set: 500..2,000; 96,000 train, 2,000
validation and 2,000 test examples).

Generation aims at a length drawn uniformly from [min_length, max_length]: a node
splits its token budget among its arguments at random, and an argument whose share
is too small to hold an expression becomes a digit; expressions that land outside
the range are drawn again. Each split has its own random stream of the seed
(Python's `random.Random`, seeded by a string), so a split is the same everywhere.

Tokens: 0 padding, 1-10 digits 0-9, 11-14 `[MAX` `[MIN` `[MED` `[SM`, 15 `]`.
The data set is a local tfds builder (`ListOps`, one builder config per parameter
set), prepared once under config.data.data_dir (else tfds/ in the cache directory);
examples are padded to seq_len.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from latent_flax.tasks import data
from latent_flax.tasks import registry, tfds_source

NUM_CLASSES = 10
MAX_DEPTH = 10
MAX_ARGS = 10
PAD = 0
OPERATORS = ('MAX', 'MIN', 'MED', 'SM')
VOCAB = ['<pad>'] + [str(d) for d in range(10)] + ['[' + op for op in OPERATORS] + [']']
TOKEN = {t: i for i, t in enumerate(VOCAB)}
SPLITS = ('train', 'validation', 'test')


def apply_operator(op: str, args: list[int]) -> int:
  if op == 'MAX':
    return max(args)
  if op == 'MIN':
    return min(args)
  if op == 'MED':
    ordered, n = sorted(args), len(args)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) // 2
  return sum(args) % 10


def evaluate(tokens: list[str]) -> int:
  """Value of an expression given as text tokens (reference evaluator, used in tests)."""
  stack: list[tuple[str, list[int]]] = []
  value = None
  for t in tokens:
    if t.startswith('['):
      stack.append((t[1:], []))
    elif t == ']':
      op, args = stack.pop()
      value = apply_operator(op, args)
      if stack:
        stack[-1][1].append(value)
    else:
      if stack:
        stack[-1][1].append(int(t))
      else:
        value = int(t)
  if stack:
    raise ValueError(f"unclosed expression: {' '.join(tokens)[:80]}")
  return value


def _expression(rng: random.Random, budget: int, depth: int, out: list[int]) -> int:
  """Appends an expression of about `budget` tokens to out; returns its value."""
  if budget < 4 or depth >= MAX_DEPTH:  # '[OP d d ]' needs 4 tokens
    digit = rng.randrange(10)
    out.append(digit + 1)
    return digit
  op = rng.randrange(len(OPERATORS))
  out.append(TOKEN['[' + OPERATORS[op]])
  nargs = rng.randint(2, min(MAX_ARGS, budget - 2))
  cuts = sorted(rng.random() for _ in range(nargs - 1))  # a uniform split of the budget
  shares = [b - a for a, b in zip([0.0] + cuts, cuts + [1.0])]
  args = [_expression(rng, round(s * (budget - 2)), depth + 1, out) for s in shares]
  out.append(TOKEN[']'])
  return apply_operator(OPERATORS[op], args)


def generate_examples(count: int, min_length: int, max_length: int, seed: int, split: str):
  """Yields (tokens int32 [L], label) for `count` expressions with L in [min, max]."""
  rng = random.Random(f'listops/{seed}/{split}/{min_length}/{max_length}')
  made = 0
  while made < count:
    out: list[int] = []
    label = _expression(rng, rng.randint(min_length, max_length), 1, out)
    if min_length <= len(out) <= max_length:
      made += 1
      yield np.asarray(out, np.int32), label


def to_text(tokens) -> str:
  return ' '.join(VOCAB[t] for t in tokens if t != PAD)


def rule_predictions(train_keys: np.ndarray, train_labels: np.ndarray, keys: np.ndarray,
                     num_classes: int = NUM_CLASSES) -> np.ndarray:
  """For each key, the commonest train label among the train examples with that key (the
  smallest label on a tie). Keys all zero give the majority class; token 0 (the outermost
  operator) gives the baseline a model must beat before its accuracy means much."""
  counts = np.zeros((int(max(train_keys.max(), keys.max())) + 1, num_classes), np.int64)
  np.add.at(counts, (train_keys, train_labels), 1)
  return counts.argmax(axis=1)[keys]


def check_params(min_length: int, max_length: int, seq_len: int) -> None:
  if not 1 <= min_length <= max_length:
    raise ValueError(f"config.data.min_length={min_length} and max_length={max_length} must "
                     "satisfy 1 <= min_length <= max_length.")
  if max_length > seq_len:
    raise ValueError(f"config.data.max_length={max_length} does not fit in config.data.seq_len="
                     f"{seq_len}; set seq_len >= {max_length} (examples are padded to seq_len).")


@functools.cache
def builder_class():
  """The tfds builder, defined (and registered with tfds) once per process."""
  import tensorflow_datasets as tfds

  class ListOps(tfds.core.GeneratorBasedBuilder):
    """ListOps expressions generated from a seed (no download)."""

    VERSION = tfds.core.Version('1.1.0')  # 1.1.0: written as ArrayRecord

    def __init__(self, *, params: dict, **kwargs):
      self._params = params
      name = ('n{num_train_examples}_{num_validation_examples}_{num_test_examples}'
              '_len{min_length}_{max_length}_seed{seed}').format(**params)
      kwargs['config'] = tfds.core.BuilderConfig(name=name, description=str(params))
      super().__init__(**kwargs)

    def _info(self):
      return self.dataset_info_from_configs(
          features=tfds.features.FeaturesDict({
              'index': np.int64,  # position in the generated order (tfds shuffles on write)
              'tokens': tfds.features.Tensor(shape=(None,), dtype=np.int32),
              'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES)}),
          description='ListOps (MAX, MIN, MED, SM over digits), generated locally.')

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
      p = self._params
      count = p[f'num_{split}_examples']
      for i, (tokens, label) in enumerate(generate_examples(
          count, p['min_length'], p['max_length'], p['seed'], split)):
        yield i, {'index': i, 'tokens': tokens, 'label': label}

  return ListOps


def _params(data_config) -> dict:
  return {k: int(data_config[k]) for k in ('num_train_examples', 'num_validation_examples',
                                           'num_test_examples', 'min_length', 'max_length',
                                           'seed')}


def load(data_config, split: str) -> dict[str, np.ndarray]:
  """{'inputs' [E, seq_len], 'mask', 'targets' [E], 'weights' [E]} of one split."""
  return _load(tuple(sorted(_params(data_config).items())), data_config.seq_len,
               tfds_source.builtin_data_dir(data_config), split)


@functools.lru_cache(maxsize=6)
def _load(params: tuple, seq_len: int, data_dir: str, split: str):
  builder = tfds_source.prepared(builder_class(), 'ListOps', params=dict(params),
                                 data_dir=data_dir)
  examples = sorted(tfds_source.examples(builder, split), key=lambda e: e['index'])
  inputs = np.zeros((len(examples), seq_len), np.int32)
  for i, e in enumerate(examples):
    inputs[i, :len(e['tokens'])] = e['tokens']
  return {'inputs': inputs, 'mask': inputs != PAD,
          'targets': np.array([e['label'] for e in examples], np.int32),
          'weights': np.ones(len(examples), np.float32)}


class ListOps(registry.Task):
  """Classify an expression by its value (10 classes); padding masked everywhere."""

  name = 'listops'
  kind = 'classify'
  metric = 'eval_accuracy'
  target_unit = 'examples'
  splits = SPLITS
  num_classes = NUM_CLASSES
  int_fields = {'num_train_examples': 1, 'num_validation_examples': 1, 'num_test_examples': 1,
                'min_length': 1, 'max_length': 1, 'seed': 0}
  config_example = 'configs/listops_m64.py'

  def validate(self, data_config) -> None:
    super().validate(data_config)
    check_params(data_config.min_length, data_config.max_length, data_config.seq_len)

  def load(self, data_config, split: str) -> data.Examples:
    return data.Examples(load(data_config, split))


registry.register(ListOps())
