"""What every benchmark shares: paired alternating rounds and their ratios, a measurement in
a fresh process, the float32 matmul peak, the LM train step exactly as the trainer runs it,
and JSON + PNG stamped with the machine, the date and the command.

Paired rounds: this host is shared and its speed drifts minute to minute, so variants are
timed back to back within a round, in the reverse order every other round (ABBA), and a
comparison is the median (and range) of the per-round ratios, never a ratio of medians
taken minutes apart.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from latent_flax import config_lib, tasks
from latent_flax import model as model_lib
from latent_flax.system import io_utils
from latent_flax.training import checkpoint, steps
from latent_flax.training.parallel import Parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
peak_rss_mb = io_utils.peak_rss_mb
device_peak_mb = io_utils.device_peak_mb


# --------------------------------------------------------------------------- #
# Timing and paired rounds.
# --------------------------------------------------------------------------- #

def time_fn(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
  """(seconds of the first call, compilation included; median seconds of `repeats` more)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def paired_rounds(variants: Sequence[str], measure: Callable[[str], dict], rounds: int, *,
                  on_record: Callable[[str, dict], None] | None = None) -> dict[str, list[dict]]:
  """measure(variant) for every variant, `rounds` times: back to back within a round, the
  order reversed every other round. Each record gets 'round' and 'status' ('ok' unless
  measure says otherwise); a variant whose record is not ok is not measured again.
  Returns each variant's records in round order."""
  if rounds < 1:
    raise ValueError(f"--rounds={rounds} must be >= 1.")
  out = {v: [] for v in variants}
  for r in range(rounds):
    for v in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
      if out[v] and out[v][-1]['status'] != 'ok':
        continue
      record = {'status': 'ok', **measure(v), 'round': r}
      out[v].append(record)
      if on_record:
        on_record(v, record)
  return out


def ratio_stats(numerator: list[dict], denominator: list[dict], key: str = 'seconds'
                ) -> dict | None:
  """numerator[key] / denominator[key] within each round both measured ok: the median, the
  range ('low', 'high') and every round's ratio; None if no round has both."""
  den = {r['round']: r[key] for r in denominator if r['status'] == 'ok'}
  rounds = [r[key] / den[r['round']] for r in numerator
            if r['status'] == 'ok' and r['round'] in den]
  if not rounds:
    return None
  return {'median': statistics.median(rounds), 'low': min(rounds), 'high': max(rounds),
          'rounds': rounds}


def merge_rounds(records: list[dict], key: str = 'seconds') -> dict:
  """One record for a variant's rounds: `key` the median over the ok rounds and
  `<key>_rounds` each of them, peak memory the highest, the status the first failure's."""
  ok = [r for r in records if r['status'] == 'ok']
  merged = dict(records[-1])
  merged.pop('round', None)
  if len(ok) < len(records):
    merged.update(next(r for r in records if r['status'] != 'ok'))
    merged.pop('round', None)
  if ok:
    merged[key] = statistics.median(r[key] for r in ok)
    merged[f'{key}_rounds'] = [r[key] for r in ok]
    for peak in ('peak_rss_mb', 'device_peak_mb'):
      values = [r[peak] for r in ok if r.get(peak) is not None]
      if values:
        merged[peak] = max(values)
  return merged


def format_ratio(stats: dict | None) -> str:
  """'1.62x (1.51 to 1.73)' from ratio_stats, or 'n/a'."""
  if not stats:
    return 'n/a'
  if len(stats['rounds']) == 1:
    return f"{stats['median']:.2f}x"
  return f"{stats['median']:.2f}x ({stats['low']:.2f} to {stats['high']:.2f})"


# --------------------------------------------------------------------------- #
# A measurement in a fresh process.
# --------------------------------------------------------------------------- #

def make_oom_killable() -> None:
  """In a child process: be the first the kernel's OOM killer picks."""
  try:
    with open('/proc/self/oom_score_adj', 'w') as f:
      f.write('1000')
  except OSError:
    pass


def emit(record: dict) -> None:
  """A child's result: one JSON line on stdout, which run_isolated reads."""
  print(json.dumps(record), flush=True)


def run_isolated(argv: list[str], timeout_s: float, python: str = sys.executable) -> dict:
  """Runs `python argv` (a child that ends with emit(record)) and returns its record; a
  timeout, an out-of-memory or another failure becomes a record with that status."""
  t0 = time.perf_counter()
  try:
    proc = subprocess.run([python] + argv, capture_output=True, text=True, timeout=timeout_s,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  except subprocess.TimeoutExpired:
    return {'status': 'timeout', 'timeout_s': timeout_s}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  err = proc.stderr[-2000:]
  oom = (proc.returncode in (-9, 137) or 'RESOURCE_EXHAUSTED' in err or 'MemoryError' in err
         or 'Out of memory' in err or 'bad_alloc' in err)
  return {'status': 'oom' if oom else 'error', 'returncode': proc.returncode,
          'stderr_tail': err[-500:], 'wall_s': time.perf_counter() - t0}


# --------------------------------------------------------------------------- #
# The machine's matmul peak, and the LM train step as the trainer runs it.
# --------------------------------------------------------------------------- #

def matmul_peak_gflops(size: int | None = None, dtype: str = 'float32',
                       repeats: int = 5) -> float:
  """GFLOP/s of a jitted size x size matmul on the first device, best of `repeats`
  (size: 2,048 on CPU, 8,192 on an accelerator)."""
  import jax.numpy as jnp
  size = size or (2048 if jax.devices()[0].platform == 'cpu' else 8192)
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * size ** 3 / best / 1e9


class LMStep:
  """The trainer's own train step for `config` (training/parallel.Parallel over
  training/steps.train_step: forward, backward, AdamW, the state donated) on `devices`
  (default: the first device) as config.mesh lays them out, fed one fixed batch of
  random bytes of config.data.seq_len tokens, config.per_device_batch_size rows per
  device of the data and fsdp axes. With config.carry_state, the step that carries each
  row's attention state to the next (training/steps.carry_train_step), no row starting a
  document: the steady state of training past the window; with config.carry_windows = K,
  each row's K windows a step (the gradient through the state between them)."""

  def __init__(self, config, devices: Sequence[Any] | None = None, seed: int = 0):
    config_lib.validate_config(config)
    task = tasks.get(config.data.name)
    if task.kind != 'lm':
      raise ValueError(f"data set {config.data.name!r} is a {task.kind} task; the benchmark "
                       "step feeds random bytes to a language model (config.data.name='stdlib').")
    self.config = config
    self.devices = list(devices or jax.devices()[:1])
    _, _, seq = config_lib.validate_layout(config, len(self.devices))
    self.rows = config.per_device_batch_size * len(self.devices) // seq
    self.carries = bool(config.get('carry_state'))
    self.windows = config.get('carry_windows', 1) if self.carries else 1
    self.tokens = self.rows * config.data.seq_len * self.windows
    self.model = config_lib.build_model(config)
    self.parallel = Parallel('jit', self.model, config, devices=self.devices,
                             carry_batch=self.rows if self.carries else 0)
    self.abstract_state = checkpoint.abstract_state(self.model, config,
                                                    self.parallel.shard_state_like)
    n = config.data.seq_len * self.windows
    data = np.random.default_rng(seed).integers(0, model_lib.VOCAB_SIZE, (self.rows, n + 1))
    self.batch = {'inputs': data[:, :-1].astype(np.int32),
                  'targets': data[:, 1:].astype(np.int32),
                  'weights': np.ones((self.rows, n), np.float32)}
    if self.carries:
      self.batch['start'] = np.zeros((self.rows, self.windows) if self.windows > 1
                                     else self.rows, bool)
    self.seed = seed
    self.state = self.metrics = None

  def compile(self):
    """(the step compiled for shapes alone: its memory analysis, HLO and FLOP count;
    seconds that took). Nothing is allocated."""
    shapes = {k: (v.shape, v.dtype) for k, v in self.batch.items()}
    t0 = time.perf_counter()
    compiled = self.parallel.lower_train_step(self.abstract_state, shapes).compile()
    return compiled, time.perf_counter() - t0

  def run(self, num_steps: int = 1) -> float:
    """Seconds per step of `num_steps` steps, each from the state the last one left. The
    first call initialises the state as the trainer does and compiles the step."""
    if self.state is None:
      init = steps.make_init_fn(self.model, self.config)
      state = jax.jit(lambda r: self.parallel.lay_out(init(r)))(jax.random.key(self.seed))
      self.state = self.parallel.put_state(state)
      self.rng = self.parallel.put_rng(jax.random.key(self.seed + 1))
      self.carry = self.parallel.fresh_carry() if self.carries else None
    t0 = time.perf_counter()
    for _ in range(num_steps):
      if self.carries:
        self.state, self.carry, self.metrics = self.parallel.carry_train_step(
            self.state, self.carry, self.batch, self.rng)
      else:
        self.state, self.metrics = self.parallel.train_step(self.state, self.batch, self.rng)
    jax.block_until_ready((self.state, self.metrics))
    return (time.perf_counter() - t0) / num_steps


# --------------------------------------------------------------------------- #
# Output: JSON and PNG, stamped.
# --------------------------------------------------------------------------- #

_MACHINE: dict | None = None


def machine() -> dict:
  """This process's machine, as every result records it (asked once)."""
  global _MACHINE
  if _MACHINE is None:
    device = jax.devices()[0]
    _MACHINE = {'platform': platform.platform(), 'processor': platform.processor(),
                'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                'jax': jax.__version__, 'device_kind': device.device_kind,
                'devices': [str(d) for d in jax.devices()],
                'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
                'transparent_hugepage': _first_line(
                    '/sys/kernel/mm/transparent_hugepage/enabled')}
  return _MACHINE


def machine_from_child() -> dict:
  """machine() as a fresh process sees it, kept for this one: a parent of isolated
  measurements never starts the accelerator, whose memory belongs to its children."""
  global _MACHINE
  _MACHINE = run_isolated(['-c', 'from benchmarks import harness; '
                           'harness.emit(harness.machine())'], timeout_s=300)
  return _MACHINE


def _first_line(path: str) -> str:
  try:
    with open(path) as f:
      return f.readline().strip()
  except OSError:
    return ''


def command() -> str:
  """The command line that runs this script, its path relative to the repository."""
  script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO) if sys.argv[0] else ''
  return ' '.join(['python', script] + sys.argv[1:])


def write_results(path: str, args, **payload) -> None:
  """JSON at `path` (atomic): the script's arguments, command line, date and machine,
  then `payload` (records, ratios, ...)."""
  io_utils.write_json(path, {'config': vars(args), 'command': command(),
                             'date': time.strftime('%Y-%m-%d'), 'machine': machine(),
                             **payload})


def _machine_line() -> str:
  m = machine()
  count = len(m.get('devices', []))
  huge = ', huge pages' if 'hugetlb=1' in m.get('glibc_tunables', '') else ''
  return (f"{m.get('device_kind', 'unknown device')}{f' x{count}' if count > 1 else ''}, "
          f"{m.get('cpu_count')} CPUs{huge}, jax {m.get('jax')}, Python {m.get('python')}")


def save_figure(fig, title: str, path: str) -> None:
  """Titles `fig`, stamps the date, machine and command under it, writes `path`, closes it."""
  stamp = textwrap.wrap(f"{time.strftime('%Y-%m-%d')} · {_machine_line()} · {command()}",
                        width=int(fig.get_figwidth() * 22))
  height = fig.get_figheight()
  fig.suptitle(title)
  fig.text(0.005, 0.005, '\n'.join(stamp), fontsize=6, color='0.4', ha='left', va='bottom')
  fig.tight_layout(rect=(0, min(0.3, (0.12 * len(stamp) + 0.05) / height), 1, 1))
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.savefig(path, dpi=120)
  import matplotlib.pyplot as plt
  plt.close(fig)


def log_axes(ax, xlabel: str, ylabel: str, *, log_y: bool = True, legend: bool = True) -> None:
  """Log2 x axis (lengths), optionally log y, grid and legend: the plots of lengths."""
  ax.set_xscale('log', base=2)
  if log_y:
    ax.set_yscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, which='both', alpha=0.3)
  if legend:
    ax.legend(fontsize=7)


def peak_mb(record: dict) -> float:
  """The memory a plot shows: the accelerator's peak where there is one, else peak RSS."""
  return record.get('device_peak_mb') or record['peak_rss_mb']


def memory_label(records: list[dict]) -> str:
  on_device = any(r.get('device_peak_mb') for r in records)
  return 'peak device memory (GiB)' if on_device else 'peak process memory (GiB)'
