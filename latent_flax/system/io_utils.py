"""Small helpers every entry point uses: atomic JSON, peak memory, matplotlib off-screen."""

from __future__ import annotations

import json
import os
import resource

import jax


def write_json(path: str, payload, *, indent: int = 2) -> None:
  """Writes JSON to path atomically (a temporary file, then a rename)."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  tmp = path + '.tmp'
  try:
    with open(tmp, 'w') as f:
      json.dump(payload, f, indent=indent)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def device_peak_mb() -> float | None:
  """Peak memory the accelerator's allocator has handed out so far, in MiB; None on CPU."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / 2**20


def peak_memory_mb() -> float:
  """Peak device memory where the backend reports it (GPU/TPU), else this process's peak RSS."""
  device = device_peak_mb()
  return device if device is not None else peak_rss_mb()


def pyplot():
  """matplotlib.pyplot with the off-screen backend (no display needed)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt
