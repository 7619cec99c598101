"""Shrinking real configs for fast tests."""

import os

import numpy as np

from configs import base


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
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
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


def subprocess_env(devices: int = 4) -> dict:
  """Environment for a child python: repo importable, `devices` CPU devices, quiet TF."""
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
