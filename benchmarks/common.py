"""Helpers shared by the benchmark scripts: subprocess isolation, timing, output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable

import jax

from latent_flax.system import io_utils

peak_rss_mb = io_utils.peak_rss_mb
device_peak_mb = io_utils.device_peak_mb
write_json = io_utils.write_json

def peak_mb(record: dict) -> float:
  """The memory figure a plot shows: device peak on an accelerator, else peak RSS."""
  return record.get('device_peak_mb') or record['peak_rss_mb']

def memory_label(records: list[dict]) -> str:
  on_device = any(r.get('device_peak_mb') for r in records)
  return 'peak device memory (GiB)' if on_device else 'peak process memory (GiB)'

def time_fn(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
  """(compile+first-run seconds, median seconds of `repeats` further runs)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  times.sort()
  return first, times[len(times) // 2]

def add_layer_args(ap, *, one_point: bool) -> None:
  """The one-layer shape flags: --width, --heads, --chunk, and with `one_point` also
  --n and --num_latents (scripts that sweep them take lists instead)."""
  if one_point:
    ap.add_argument('--n', type=int, default=4096)
    ap.add_argument('--num_latents', type=int, default=64)
  ap.add_argument('--width', type=int, default=256)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--chunk', type=int, default=128)

def add_model_args(ap, *, width: int, mlp: int) -> None:
  """The LM shape flags of the whole-model benchmarks: --width, --heads, --mlp,
  --layers, --chunk."""
  ap.add_argument('--width', type=int, default=width)
  ap.add_argument('--heads', type=int, default=4)
  ap.add_argument('--mlp', type=int, default=mlp)
  ap.add_argument('--layers', type=int, default=4)
  ap.add_argument('--chunk', type=int, default=128)


def layer_fwd_bwd(kind: str, n: int, *, width: int, heads: int, chunk: int, num_latents: int,
                  dtype: str = 'float32'):
  """One causal attention layer of `kind` (any causal kind of the registry), batch 1:
  the jitted gradient of mean(y**2) with respect to params and input, params, and input."""
  import jax.numpy as jnp
  from latent_flax import model as model_lib
  cfg = model_lib.ModelConfig(attention=kind, num_latents=num_latents, num_heads=heads,
                              chunk_size=chunk, emb_dim=width, dtype=dtype)
  cfg = model_lib.validate_model_config(cfg, task='lm')  # refuses a non-causal kind
  layer = model_lib.make_attention(cfg, causal=True)
  x = jax.random.normal(jax.random.key(0), (1, n, width), jnp.float32)
  params = layer.init(jax.random.key(1), x[:, :min(n, 256)])
  loss = lambda p, x: jnp.mean(layer.apply(p, x).astype(jnp.float32) ** 2)
  return jax.jit(jax.grad(loss, argnums=(0, 1))), params, x

def variant_label(kind: str, num_latents: int) -> str:
  """'causal_latent M=64' for a kind with latents, else the kind's name."""
  from latent_flax.attention import registry
  return f'{kind} M={num_latents}' if registry.get(kind).has_latents else kind


def lm_train_step(config, n: int, batch_size: int = 1):
  """(jitted train step, initial state, one batch) of config's model at n tokens;
  call step(state, batch, rng). The state argument is donated."""
  import numpy as np
  from latent_flax import model as model_lib
  from latent_flax.training import optim, steps
  config.data.seq_len = n
  model = model_lib.build_model(config.model)
  schedule = optim.learning_rate_schedule(config)
  state = jax.jit(steps.make_init_fn(model, config))(jax.random.key(0))
  step = jax.jit(lambda s, b, r: steps.train_step(s, b, r, axis_name=None, schedule=schedule),
                 donate_argnums=(0,))
  tokens = np.random.default_rng(0).integers(0, 256, (batch_size, n + 1)).astype(np.int32)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
           'weights': np.ones((batch_size, n), np.float32)}
  return step, state, batch


def make_oom_killable() -> None:
  """In a child process: be the first the kernel's OOM killer picks."""
  try:
    with open('/proc/self/oom_score_adj', 'w') as f:
      f.write('1000')
  except OSError:
    pass

def run_isolated(argv: list[str], timeout_s: float, python: str = sys.executable) -> dict:
  """Runs one measurement in a fresh process (of `python`); OOM and timeouts become records."""
  t0 = time.perf_counter()
  try:
    proc = subprocess.run([python] + argv, capture_output=True, text=True,
                          timeout=timeout_s, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
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

def machine_info() -> dict:
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpu_count': os.cpu_count(), 'jax': jax.__version__,
          'devices': [str(d) for d in jax.devices()],
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
          'transparent_hugepage': _read_first_line('/sys/kernel/mm/transparent_hugepage/enabled')}

def _read_first_line(path: str) -> str:
  try:
    with open(path) as f:
      return f.readline().strip()
  except OSError:
    return ''

def write_records(args, records: list[dict], **extra) -> None:
  """<args.out>.json: the script's arguments and command line, the date, this machine,
  the records so far and `extra`."""
  write_json(args.out + '.json',
             {'config': vars(args), 'command': ' '.join(sys.argv),
              'date': time.strftime('%Y-%m-%d'), 'machine': machine_info(), 'records': records,
              **extra})

def style_log_axes(ax, xlabel: str, ylabel: str, *, log_y: bool = True) -> None:
  """Log2 x axis (lengths), optionally log y, grid and legend: every benchmark plot."""
  ax.set_xscale('log', base=2)
  if log_y:
    ax.set_yscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=8)

def save_figure(fig, title: str, path: str) -> None:
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
