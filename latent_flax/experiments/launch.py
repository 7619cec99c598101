"""Sweep points as scheduler jobs through submitit: one task of a job array per point.

`sweep.py --launcher=slurm` submits every unfinished point as a task of one Slurm job
array; `--launcher=submitit_local` does the same with submitit's local executor (jobs
as processes of this machine: the scheduler path without a cluster). A task runs
`train.py` for its point in the point's workdir, so a task that is preempted or times
out (submitit's signal) lets train.py save its step (SIGTERM: it checkpoints and exits
0) and is requeued, and the requeued task resumes from that workdir. A finished point
(its summary.json) is skipped on submission and by a task that starts late.

SIGTERM or SIGINT to a sweep waiting on its submitit_local jobs (`wait`) cancels them:
each task's train.py gets SIGTERM (it dies with its task), saves its step and exits,
and the sweep says so in one line once their workdirs are free, so that the same
command resumes them (the local controllers' own output, such as the traceback a
cancelled one prints, goes to submitit/controllers.log). `--launcher=slurm` where Slurm
is not installed is one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from latent_flax.training import workdir_lock

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
      self._proc = subprocess.Popen([self.python] + self.argv, cwd=REPO,
                                    preexec_fn=_dies_with(os.getpid()))
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


def _dies_with(parent: int):
  """For Popen's preexec_fn: the child gets SIGTERM when `parent` dies (Linux; elsewhere
  nothing), so a cancelled or killed task leaves no train.py behind: it saves its step
  and exits."""
  def arm():
    try:
      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      return
    if os.getppid() != parent:  # the parent died before the line above
      os.kill(os.getpid(), signal.SIGTERM)
  return arm if sys.platform.startswith('linux') else None


def executor(launcher: str, folder: str, *, timeout_min: int, partition: str | None = None,
             gpus_per_node: int = 0, cpus_per_task: int | None = None, nodes: int = 1,
             array_parallelism: int | None = None, extra: dict | None = None):
  """A submitit executor for `launcher` ('slurm' or 'submitit_local'), logs in `folder`."""
  import submitit
  if launcher not in ('slurm', 'submitit_local'):
    raise ValueError(f"--launcher={launcher!r} does not submit jobs; use 'slurm' or "
                     "'submitit_local'.")
  missing = [c for c in ('sbatch', 'srun') if shutil.which(c) is None]
  if launcher == 'slurm' and missing:
    raise ValueError(f"--launcher=slurm: Slurm is not available here ({' and '.join(missing)} "
                     "not on PATH); run the sweep where Slurm is (a cluster's login node), or "
                     "use --launcher=submitit_local (jobs on this machine) or local.")
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


def submit(ex, tasks: list[PointTask], controller_log: str | None = None) -> list:
  """Every task as one job array (one task per point); the submitit jobs. The local
  executor's controller processes (one per job) write to `controller_log`, not to this
  process's terminal (a cancelled one prints a traceback)."""
  local = getattr(ex, 'cluster', None) == 'local'
  with _output_to(controller_log if local else None), _sigint_not_ignored(local):
    with ex.batch():
      jobs = [ex.submit(task) for task in tasks]
  return jobs


@contextlib.contextmanager
def _sigint_not_ignored(active: bool):
  """Processes started inside do not inherit an ignored SIGINT. submitit cancels a local
  job by SIGINT to its controller, which passes SIGINT on to its task; a sweep started
  as a shell's background job (`sweep.py ... &`, nohup, CI) has SIGINT ignored, and its
  controllers would inherit that and never stop their train.py."""
  if not active or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    yield
    return
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _output_to(path: str | None):
  """The stdout and stderr (fds 1 and 2) of the processes started inside go to `path`."""
  if path is None:
    yield
    return
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(path, 'a') as f:
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
  try:
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved):
      os.dup2(copy, fd)
      os.close(copy)


class _Stop(BaseException):
  """SIGTERM or SIGINT while waiting for jobs (a BaseException: nothing swallows it)."""


def wait(jobs: list, workdirs: list[str], *, stop_timeout_s: float = 300.0) -> None:
  """Waits for every job (submitit_local). SIGTERM or SIGINT cancels them all, waits
  (up to stop_timeout_s) until their train.py processes have saved and let go of the
  points' `workdirs`, says so in one line and exits 128 + the signal. A failed job: one
  line naming its log."""
  def stop(signum, frame):
    del frame
    raise _Stop(signum)

  old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    for job in jobs:
      try:
        job.result()
      except Exception as e:  # submitit's error carries the job's traceback
        raise ValueError(f"job {job.job_id} failed ({type(e).__name__}); its log: "
                         f"{job.paths.stdout} and {job.paths.stderr}") from None
  except _Stop as e:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signum = e.args[0]
    running = [job for job in jobs if not job.done()]
    for job in running:
      job.cancel(check=False)
    deadline = time.monotonic() + stop_timeout_s
    busy = [w for w in workdirs
            if not workdir_lock.wait_released(w, deadline - time.monotonic())]
    print(f"Stopped by {signal.Signals(signum).name}: cancelled {len(running)} running job(s) "
          "of the sweep; their train.py saved their steps"
          + (f" (still running in {', '.join(busy)})" if busy else '')
          + "; rerun the same command to resume.", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum) from None
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)
