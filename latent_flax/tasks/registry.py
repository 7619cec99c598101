"""Tasks by data set name, and what the trainer, eval.py, sweeps and reports ask of each.

    task = registry.get(config.data.name)       # one-line ValueError if unknown
    source = task.load(config.data, 'train')     # data.Windows or data.Examples
    sets, main = task.eval_sets(config.data, config.model, 'validation')

A task owns its data (loading, validation of its config fields), its metric and
which direction is better, and any extra evaluation (MQAR's recall by pairs).
Nothing outside this package names a task. Adding one: a module with a `Task`
subclass and one `register(...)`, imported by tasks/__init__.py.
"""

from __future__ import annotations

from typing import Any

from latent_flax.system.checks import need_int

LN2 = 0.6931471805599453
# The metrics tasks rank runs by: {name: (label, lower is better)}.
METRICS = {'eval_bits_per_byte': ('eval bits per byte (lower is better)', True),
           'eval_accuracy': ('eval accuracy (higher is better)', False)}


def lower_is_better(metric: str) -> bool:
  return METRICS[metric][1]


class Task:
  """Defaults are those of a byte language model; subclasses override what differs."""

  name = ''                    # config.data.name
  kind = 'lm'                  # 'lm': a target per position; 'classify': a label per example
  metric = 'eval_bits_per_byte'  # what reports rank runs by, a key of METRICS
  accuracy_label = 'accuracy'  # what accuracy means here, as train.py and eval.py print it
  target_unit = 'bytes'        # what the evaluated targets are, as eval.py prints them
  splits = ('train', 'validation')
  num_classes: int | None = None  # classify: the classifier's outputs
  # Integer fields of config.data this task needs, with their minimum value.
  int_fields: dict[str, int] = {}
  config_example = 'configs/base.py'  # where a user finds a working config
  # Dict-valued eval results logged beside the loss: {key: (console label, the title
  # suffix of a sweep report drawn by it)}, and what their keys are.
  eval_extras: dict[str, tuple[str, str]] = {}
  extras_line_name = ""

  def matches(self, name: str) -> bool:
    return name == self.name

  @property
  def display_names(self) -> tuple[str, ...]:
    return (self.name,)

  def validate(self, data_config) -> None:
    """One-line ValueError for a bad config.data; called before anything is built."""
    for field, low in self.int_fields.items():
      need_int(f'config.data.{field}', data_config.get(field), low,
               f" for data set {self.name!r} (see {self.config_example})")

  def load(self, data_config, split: str):
    """data.Windows or data.Examples of `split`."""
    raise NotImplementedError

  def eval_sets(self, data_config, model_config, split: str) -> tuple[dict[str, Any], str]:
    """({name: source} evaluated in one pass each, the name of the main one)."""
    return {'main': self.load(data_config, split)}, 'main'

  def summarize(self, results: dict[str, dict], main: str) -> dict:
    """The evaluation result from each set's: by default the main set's."""
    return dict(results[main])

  @property
  def lower_is_better(self) -> bool:
    return lower_is_better(self.metric)

  @property
  def loss_unit(self) -> str:
    """What a loss is measured in: nats per target ('nats/byte', 'nats/example')."""
    return 'nats/' + self.target_unit.removesuffix('s')

  def describe(self, r: dict) -> list[str]:
    """eval.py's printed lines for a result."""
    if self.metric == 'eval_bits_per_byte':
      lines = [f"step {r['step']}  loss {r['loss']:.4f} nats/byte  bits/byte "
               f"{r['bits_per_byte']:.4f}  over {r['tokens']:,} bytes of {r['dataset']}"]
      lines += [f"  positions {bucket:>12s}: {loss / LN2:.4f} bits/byte"
                for bucket, loss in r.get('loss_by_position', {}).items()]
      if r.get('bits_by_context'):
        lines.append('  by bytes of context: ' + '  '.join(
            f"{k} {v:.3f}" for k, v in r['bits_by_context'].items()))
      return lines
    return [f"step {r['step']}  loss {r['loss']:.4f} {self.loss_unit}  {self.accuracy_label} "
            f"{r['accuracy']:.4f}"
            f"  over {r['tokens']:,} {self.target_unit} of the {r['split']} split of "
            f"{r['dataset']}"]


_TASKS: list[Task] = []


def register(task: Task) -> Task:
  if any(t.name == task.name for t in _TASKS):
    raise ValueError(f"task {task.name!r} is already registered.")
  _TASKS.append(task)
  return task


def unregister(name: str) -> None:
  _TASKS[:] = [t for t in _TASKS if t.name != name]


def names() -> list[str]:
  return [n for t in _TASKS for n in t.display_names]


def get(name: str) -> Task:
  for task in _TASKS:
    if isinstance(name, str) and task.matches(name):
      return task
  raise ValueError(f"config.data.name={name!r} is unknown; use one of {names()}.")
