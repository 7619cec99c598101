"""TensorBoard scalars and hyperparameters without TensorFlow.

The tensorboard package writes its own event files (EventFileWriter and its protos need no
TensorFlow), so training logs what clu's TF summary writer logged — one event file in the
workdir, scalars by step, the config's hyperparameters for the HParams tab — and a
non-chief process writes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class MetricWriter:
  """write_scalars(step, {name: number}), write_hparams({name: value}), flush(), close()."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._events = EventFileWriter(logdir) if enabled else None

  def _add(self, summary: summary_pb2.Summary, step: int = 0) -> None:
    if self._events is not None:
      self._events.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                                         for k, v in scalars.items()]), step)

  def write_hparams(self, hparams: dict[str, Any]) -> None:
    self._add(hparams_summary.hparams_pb(hparams))

  def flush(self) -> None:
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None
