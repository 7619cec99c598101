"""The seams are real: a new attention kind, defined and registered here alone, trains,
evaluates and is reported; nothing outside the registries compares kind or task names."""

import math
import os
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import pytest

from latent_flax.experiments import report as report_lib
from latent_flax.evaluation import runs
from latent_flax import tasks, trainer
from latent_flax.attention import registry
from tests.helpers import REPO, tiny_config


class PrefixMean(nn.Module):
  """A toy causal mixer: every position adds a projection of the mean of its prefix."""

  num_heads: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BND, mask_BN=None, *, deterministic=True, decode=None, cache_len=None):
    del mask_BN, deterministic, decode, cache_len
    h = nn.LayerNorm(dtype=self.dtype)(x_BND)
    counts_1N1 = jnp.arange(1, x_BND.shape[1] + 1, dtype=jnp.float32)[None, :, None]
    return x_BND + nn.Dense(x_BND.shape[-1], dtype=self.dtype)(jnp.cumsum(h, axis=1) / counts_1N1)


@pytest.fixture
def prefix_mean_kind():
  kind = registry.register(registry.AttentionKind(
      name='prefix_mean', causal=True, bidirectional=False,
      build=lambda cfg, causal, **common: PrefixMean(**common)))
  yield kind
  registry.unregister(kind.name)


@pytest.mark.slow  # trains
def test_a_kind_registered_in_a_test_trains_evaluates_and_is_reported(tmp_path,
                                                                      prefix_mean_kind):
  sweep_dir = tmp_path / 'sweep'
  workdir = str(sweep_dir / 'attn=prefix_mean')
  config = tiny_config(tmp_path, 'prefix_mean', num_train_steps=2, warmup_steps=1,
                       log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=2)
  final = trainer.train_and_evaluate(config, workdir)
  assert final['step'] == 2 and math.isfinite(final['eval_bits_per_byte'])
  params = runs.restore_checkpoint(workdir, config).state.params
  assert 'latents' not in params['block_0']['attention']  # really the toy block
  result = runs.evaluate_checkpoint(workdir)
  assert result['bits_per_byte'] == pytest.approx(final['eval_bits_per_byte'], rel=1e-5)
  # A kind that does not say how it decodes is refused by generate, in one line.
  with pytest.raises(ValueError, match="'prefix_mean' cannot decode token by token"):
    runs.sample_from_checkpoint(workdir, 'alpha', 4)

  rows = report_lib.collect(str(sweep_dir))
  assert [(r['run'], r['label'], r['num_latents']) for r in rows] == [
      ('attn=prefix_mean', 'prefix_mean', '')]
  paths = report_lib.write_report(rows, str(tmp_path / 'report'))
  assert '| prefix_mean |' in open(paths[0]).read()
  summary = report_lib.summarize(workdir)
  assert summary['label'] == 'prefix_mean' and summary['eval'] == pytest.approx(
      final['eval_bits_per_byte'])


def test_registry_answers_and_refuses_in_one_line():
  assert registry.names(causal=True) == ['causal_latent', 'full', 'mla']
  assert registry.names(bidirectional=True) == ['latent', 'full', 'mla']
  causal = registry.get('causal_latent')
  assert causal.has_latents and causal.decode == 'state' and causal.function_fields == (
      'chunk_size', 'latent_decay') and causal.shape_fields == ('latent_decay',)
  assert causal.label({'num_latents': 64, 'chunk_size': 128}) == 'causal_latent M=64 C=128'
  assert causal.label({'num_latents': 64, 'chunk_size': 128, 'latent_decay': 'multiscale'}) == (
      'causal_latent M=64 C=128 decay=multiscale')  # today's block ('none') is not named
  assert not registry.get('full').has_latents and registry.get('full').decode == 'cache'
  mla = registry.get('mla')
  assert not mla.has_latents and mla.decode == 'cache' and 'kv_lora_rank' in mla.shape_fields
  assert mla.label({'kv_lora_rank': 32, 'q_lora_rank': 0, 'rope_head_dim': 16, 'head_dim': 32,
                    'v_head_dim': 32, 'attention_impl': 'auto', 'mla_decode': 'naive'}) == (
      "mla d_c=32 d_c'=0 d_R=16 d_h=32 d_v=32")
  with pytest.raises(ValueError, match=r"attention='nope' is unknown; use one of \["):
    registry.get('nope')
  with pytest.raises(ValueError, match='already registered'):
    registry.register(registry.get('full'))
  with pytest.raises(ValueError, match=r"data.name='nope' is unknown; use one of \['stdlib'"):
    tasks.get('nope')
  assert tasks.get('tfds:lm1b') is tasks.get('stdlib')  # one corpus task, several sources


_KINDS_AND_TASKS = '|'.join(registry.names() + ['mqar', 'listops', 'stdlib', 'text_files'])
_COMPARISON = re.compile(rf"""(==|!=)\s*['"]({_KINDS_AND_TASKS})['"]"""
                         rf"""|\bif\b[^:\n]*\bin \(['"]({_KINDS_AND_TASKS})['"]""")


def test_no_kind_or_task_name_is_compared_outside_the_registries():
  offenders = []
  for root in ('latent_flax', 'benchmarks', 'configs', '.'):
    folder = os.path.join(REPO, root)
    for name in sorted(os.listdir(folder)):
      path = os.path.join(folder, name)
      if not name.endswith('.py') or not os.path.isfile(path):
        continue
      with open(path) as f:
        for i, line in enumerate(f, 1):
          if _COMPARISON.search(line):
            offenders.append(f'{os.path.relpath(path, REPO)}:{i}: {line.strip()}')
  # latent_flax/attention/ and latent_flax/tasks/ are packages, not listed above.
  assert not offenders, '\n'.join(offenders)
