"""Small helpers every entry point uses: atomic JSON, peak memory, matplotlib off-screen."""

from __future__ import annotations

import json
import os
import resource
import textwrap

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


def figure(title: str, panels: int = 1, size: tuple[float, float] = (6.4, 4.2), **kwargs):
  """(fig, axes[panels]) with `title` on top, each of its lines wrapped to the figure's
  width (constrained layout: nothing is clipped)."""
  fig, axes = pyplot().subplots(1, panels, figsize=size, squeeze=False, layout='constrained',
                                **kwargs)
  text = fig.suptitle(title, fontsize=10)
  renderer = fig.canvas.get_renderer()
  width = max(map(len, title.split('\n')))
  while width > 16 and text.get_window_extent(renderer).width > 0.96 * fig.bbox.width:
    width = int(width * 0.85)
    text.set_text('\n'.join(textwrap.fill(line, width) for line in title.split('\n')))
  return fig, list(axes[0])
