"""Sweep points as scheduler jobs through submitit: one task of a job array per point.

`sweep.py --launcher=slurm` submits every unfinished point as a task of one Slurm job
array; `--launcher=submitit_local` does the same with submitit's local executor (jobs
as processes of this machine: the scheduler path without a cluster). A task runs
`train.py` for its point in the point's workdir, so a task that is preempted or times
out (submitit's signal) lets train.py save its step (SIGTERM: it checkpoints and exits
0) and is requeued, and the requeued task resumes from that workdir. A finished point
(its summary.json) is skipped on submission and by a task that starts late.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHERS = ('local', 'slurm', 'submitit_local')


class PointTask:
  """One point: `python ARGV` (train.py ... --workdir=WORKDIR) until WORKDIR is finished.
  A submitit Checkpointable: `checkpoint()` is what submitit calls before a requeue."""

  def __init__(self, argv: list[str], workdir: str, python: str = sys.executable):
    self.argv, self.workdir, self.python = list(argv), workdir, python
    self._proc = None

  def __getstate__(self):  # pickled for the job: without the running child
    return {k: v for k, v in self.__dict__.items() if k != '_proc'}

  def __setstate__(self, state):
    self.__dict__.update(state, _proc=None)

  def summary_path(self) -> str:
    return os.path.join(self.workdir, 'summary.json')

  def __call__(self) -> dict:
    if not os.path.exists(self.summary_path()):
      self._proc = subprocess.Popen([self.python] + self.argv, cwd=REPO)
      rc = self._proc.wait()
      if rc != 0 or not os.path.exists(self.summary_path()):
        raise RuntimeError(f"train.py for {self.workdir} exited {rc} without finishing; its "
                           "log is this job's stdout.")
    with open(self.summary_path()) as f:
      return json.load(f)

  def checkpoint(self):
    """Preempted or timed out: train.py saves its step and exits, then the same point is
    resubmitted (it resumes from its workdir)."""
    import submitit
    proc = self._proc
    if proc is not None and proc.returncode is None:
      proc.send_signal(signal.SIGTERM)
      # Not proc.wait(): this runs in a signal handler that may have interrupted
      # __call__'s wait, which holds Popen's lock.
      try:
        os.waitpid(proc.pid, 0)
      except ChildProcessError:  # reaped already
        pass
    return submitit.helpers.DelayedSubmission(PointTask(self.argv, self.workdir, self.python))


def executor(launcher: str, folder: str, *, timeout_min: int, partition: str | None = None,
             gpus_per_node: int = 0, cpus_per_task: int | None = None, nodes: int = 1,
             array_parallelism: int | None = None, extra: dict | None = None):
  """A submitit executor for `launcher` ('slurm' or 'submitit_local'), logs in `folder`."""
  import submitit
  if launcher not in ('slurm', 'submitit_local'):
    raise ValueError(f"--launcher={launcher!r} does not submit jobs; use 'slurm' or "
                     "'submitit_local'.")
  ex = submitit.AutoExecutor(folder=folder, cluster='slurm' if launcher == 'slurm' else 'local')
  params = dict(timeout_min=timeout_min, nodes=nodes, tasks_per_node=1,
                gpus_per_node=gpus_per_node)
  if cpus_per_task:
    params['cpus_per_task'] = cpus_per_task
  if launcher == 'slurm':
    params.update({f'slurm_{k}': v for k, v in (extra or {}).items()})
    if partition:
      params['slurm_partition'] = partition
    if array_parallelism:
      params['slurm_array_parallelism'] = array_parallelism
  ex.update_parameters(**params)
  return ex


def submit(ex, tasks: list[PointTask]) -> list:
  """Every task as one job array (one task per point); the submitit jobs."""
  with ex.batch():
    jobs = [ex.submit(task) for task in tasks]
  return jobs
