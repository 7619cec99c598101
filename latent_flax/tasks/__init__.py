"""Tasks: byte corpora, MQAR and ListOps, each owning its data, metric and evaluations.

  registry.py  Task (what the trainer and reports ask), register(), get(name)
  corpus.py    byte language modelling on 'stdlib', 'text_files', 'tfds:<name>'
  mqar.py      multi-query associative recall; recall by pairs and across chunks
  listops.py   ListOps classification (Long Range Arena)
  passkey.py, babi.py  retrieval probes (a pass key, bAbI facts) hidden in a haystack:
               tasks of their own, and mixed into a corpus's windows (haystack.py)
  books.py     lays the shared books out as a corpus with its own splits
  data.py      batching that knows no task by name: bytes, windows, examples, the order
  byte_cache.py, tfds_source.py  corpus splits prepared once on disk; local tfds datasets
"""

from latent_flax.system.checks import need_int
from latent_flax.tasks import registry
from latent_flax.tasks.registry import Task, get, names, register

from latent_flax.tasks import corpus, listops, mqar  # noqa: E402,F401  (they register)
from latent_flax.tasks import babi, passkey  # noqa: E402,F401  (tasks and probes: they register)


def load(data_config, split: str):
  """The batches source (data.Windows or data.Examples) of one split of config.data."""
  task = get(data_config.name)
  validate(data_config)
  if split not in task.splits:
    raise ValueError(f"data set {data_config.name!r} has splits {list(task.splits)}; "
                     f"got {split!r}.")
  return task.load(data_config, split)


def validate(data_config) -> None:
  """One-line ValueError for a bad config.data (unknown name, bad seq_len or task fields)."""
  task = get(data_config.name)
  seq_len = data_config.get('seq_len')
  need_int('config.data.seq_len', seq_len)
  task.validate(data_config)
