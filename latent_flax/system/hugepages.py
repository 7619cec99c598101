"""Transparent huge pages for XLA:CPU's buffers, for a plain `python train.py` too.

XLA:CPU allocates its large buffers with malloc, and glibc serves them with fresh mmaps,
so every step first-touches every page 4 KiB at a time (docs/notes/2026-11-23-page-faults-
and-rotary.md). `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` lets the kernel back them with
2 MiB pages, but glibc reads it only when a process starts. So `ensure()`, called first
thing by the entry points, re-executes the same command once with it set, unless the
variable is already set (yours wins), LF_NO_HUGEPAGES=1, not Linux, or the kernel's THP
mode is `never`. It imports nothing heavy: call it before jax is imported.
"""

from __future__ import annotations

import os
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


def thp_available() -> bool:
  """Whether the kernel hands out transparent huge pages on request ([always] or [madvise])."""
  try:
    with open(THP_MODE) as f:
      mode = f.read()
  except OSError:
    return False
  return '[always]' in mode or '[madvise]' in mode


def ensure() -> None:
  """Re-executes this process with GLIBC_TUNABLES set, where that helps and is allowed."""
  if ('GLIBC_TUNABLES' in os.environ or os.environ.get('LF_NO_HUGEPAGES') == '1'
      or not sys.platform.startswith('linux') or not thp_available()):
    return
  env = dict(os.environ, GLIBC_TUNABLES=TUNABLE)
  os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
