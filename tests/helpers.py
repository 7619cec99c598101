"""Shrinking real configs for fast tests; child processes with awaitable output."""

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from configs import base
from latent_flax import config_lib


def tiny_config(tmp_path, attention='causal_latent', **overrides):
  """configs/base.py shrunk to a few-second run on a toy corpus in tmp_path."""
  corpus = tmp_path / 'corpus.txt'
  if not corpus.exists():
    rng = np.random.default_rng(0)
    words = ['alpha', 'beta', 'gamma', 'delta', 'kappa', 'omega']
    corpus.write_text(' '.join(rng.choice(words, 6000)) + '\n')
  config = base.get_config()
  config.model.update(attention=attention, num_latents=4, num_heads=2, chunk_size=8, emb_dim=16,
                      mlp_dim=32, num_layers=2)
  config.data.update(name='text_files', path=str(corpus), seq_len=32,
                     data_dir=str(tmp_path / 'tfds'))
  config.update(num_train_steps=6, per_device_batch_size=2, warmup_steps=2, learning_rate=1e-2,
                log_every_steps=2, eval_every_steps=3, num_eval_steps=2,
                checkpoint_every_steps=3, keep_checkpoints=2)
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  return config


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config_module(tmp_path, attention='causal_latent', **overrides) -> str:
  """A config file for train.py --config=... holding tiny_config(tmp_path, ...)."""
  path = tmp_path / f'config_{attention}.py'
  path.write_text(
      'import pathlib\nfrom tests.helpers import tiny_config\n\n\ndef get_config():\n'
      f'  return tiny_config(pathlib.Path({str(tmp_path)!r}), {attention!r}, '
      f'**{overrides!r})\n')
  tiny_config(tmp_path, attention, **overrides)  # writes the corpus once, before any process
  return str(path)


# The suite compiles hundreds of small programs, and LLVM's optimization of their CPU
# kernels costs more than running them: tests compile without it (XLA's HLO passes,
# fusion and buffer assignment included, are unchanged). About 20% of the suite's time.
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'


def xla_flags(devices: int = 4) -> str:
  """XLA_FLAGS of a test process: `devices` fake CPU devices, FAST_COMPILE."""
  return f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}'


def subprocess_env(devices: int = 4) -> dict:
  """Environment for a child python: repo importable, `devices` CPU devices, the logging
  defaults a user has (no TF_CPP_MIN_LOG_LEVEL)."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', XLA_FLAGS=xla_flags(devices))
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  return env


@contextlib.contextmanager
def _children_sigint(ignored: bool):
  """Processes started inside get SIGINT ignored, or at its default (a Python handler here
  is reset to the default by exec; only an ignored signal is inherited). Set here, not in
  a preexec_fn, which would make Popen fork a multithreaded process."""
  try:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
  except ValueError:  # not the main thread: as inherited
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, old)


class Child:
  """A child `python ARGV` in the repo whose output lines can be awaited with a deadline."""

  def __init__(self, argv, devices=4, extra_env=None, new_session=False, ignore_sigint=False):
    env = subprocess_env(devices)
    env.update(extra_env or {})
    # SIGINT as a terminal's command has it (Ctrl-C stops it), however the suite was
    # started (CI or `make test &` ignore it, and children inherit that); ignore_sigint:
    # as a shell's background job (`cmd &`, nohup) has it.
    with _children_sigint(ignored=ignore_sigint):
      self.proc = subprocess.Popen([sys.executable] + argv, cwd=REPO, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=new_session)
    self.lines = []
    self._queue = queue.Queue()
    threading.Thread(target=self._pump, daemon=True).start()

  def _pump(self):
    for line in self.proc.stdout:
      self._queue.put(line.rstrip('\n'))
    self._queue.put(None)

  def wait_for(self, pattern, timeout=600.0):  # generous: CI machines may be loaded
    """The first output line matching `pattern`; fails on exit or timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
      try:
        line = self._queue.get(timeout=max(deadline - time.time(), 0.01))
      except queue.Empty:
        break
      if line is None:
        raise AssertionError(f"exited ({self.proc.wait()}) before {pattern!r}:\n" +
                             '\n'.join(self.lines[-20:]))
      self.lines.append(line)
      if re.search(pattern, line):
        return line
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + '\n'.join(self.lines[-20:]))

  def finish(self, timeout=600.0) -> int:
    rc = self.proc.wait(timeout=timeout)
    while (line := self._queue.get(timeout=10)) is not None:
      self.lines.append(line)
    return rc

  def kill(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait(timeout=30)


def free_port() -> int:
  """A TCP port free on localhost now (for a jax.distributed coordinator)."""
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def train_argv(config_path, workdir, *extra) -> list[str]:
  """`train.py` arguments for a child process."""
  return ['train.py', f'--config={config_path}', f'--workdir={workdir}', *extra]


def read_metrics(workdir) -> list[dict]:
  """A workdir's metrics.jsonl, one dict per logged step."""
  import json
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f]


def restored_params(workdir, config, step=None):
  """(params as numpy, data position) of a checkpoint, through evaluation/runs.py's restore path."""
  import jax
  from latent_flax.evaluation import runs
  restored = runs.restore_checkpoint(workdir, config, step)
  return jax.tree.map(np.asarray, restored.state.params), restored.data_state
