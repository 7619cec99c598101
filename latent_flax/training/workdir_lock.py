"""One trainer per workdir: an exclusive lock that a killed trainer cannot leave stuck.

The chief process holds `flock` on workdir/.lock for the whole run; the kernel drops it
when the process exits in any way (SIGKILL included), so there is nothing to clean up.
A second train.py on the same workdir is refused in one line before it writes anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

LOCK_NAME = '.lock'


def check_workdir(workdir: str) -> None:
  """One clear line if workdir cannot be a training workdir."""
  if not workdir:
    raise ValueError("--workdir is required: where checkpoints and metrics go.")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is a file; give a directory (new, or a run's).")


@contextlib.contextmanager
def hold(workdir: str):
  """Creates workdir if needed and holds its lock; ValueError if another process has it."""
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise ValueError(f"cannot write to --workdir={workdir} ({e.strerror}); give a writable "
                     "directory.") from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
      raise ValueError(f"{workdir} is in use by another train.py (pid {owner}); wait for it "
                       "to finish or stop it (it saves on SIGTERM), or use another "
                       "--workdir.") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)  # closing drops the lock


def wait_released(workdir: str, timeout_s: float) -> bool:
  """Waits up to timeout_s until no trainer holds workdir's lock; True when none does."""
  path = os.path.join(workdir, LOCK_NAME)
  deadline = time.monotonic() + max(timeout_s, 0.0)
  while True:
    try:
      fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
      return True
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released when fd is closed below
      return True
    except BlockingIOError:
      if time.monotonic() >= deadline:
        return False
    finally:
      os.close(fd)
    time.sleep(0.2)
