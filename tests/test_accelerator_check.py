"""benchmarks/accelerator_check.py: its dry run writes every part with numbers (so the GPU
command cannot rot), pytest's log is read per test and per check, the time guard skips
cleanly, and the MFU numerator counts the model's own weights."""

import argparse
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import accelerator_check as check
from latent_flax import model as model_lib
from tests import helpers


@pytest.mark.slow
def test_dry_run_writes_every_part_with_numbers(tmp_path):
  out = tmp_path / 'accelerator'
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.accelerator_check', '--dry_run',
                         f'--out={out}'], cwd=helpers.REPO, env=helpers.subprocess_env(1),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  result = json.loads((out / 'accelerator.json').read_text())
  assert result['skipped'] == [] and (out / 'accelerator.png').stat().st_size > 0

  checks = result['exactness']['checks']
  assert list(checks) == list(check.CHECKS)
  assert all(c['status'] == 'pass' and c['failed'] == 0 for c in checks.values()), checks
  cudnn = {n: o for n, o in checks['flash = naive = cuDNN (bfloat16)']['tests'].items()
           if 'cudnn' in n}
  assert cudnn and set(cudnn.values()) == {'skipped'}  # on CPU: skipped, not missing

  train = {(r['variant'], r['n']): r for r in result['train']['records']}
  torch_ok = result['train']['torch_python'] is not None
  assert result['train']['matmul_peak_tflops'] > 0
  for n in (64, 256):
    assert train['full:cudnn', n]['status'].startswith("skipped: cuDNN")
    if not torch_ok:
      assert train['torch', n]['status'] == 'skipped: torch does not import here'
    for v in ['torch'] * torch_ok + [v for v in check.VARIANTS if v != 'full:cudnn']:
      r = train[v, n]
      assert r['status'] == 'ok', r
      assert r['rows'] == 512 // n and r['tokens_per_s'] > 0 and r['step_tflop'] > 0
      assert 0 < r['mfu'] and r['peak_rss_mb'] > 0
  ratios = {(r['variant'], r['n']) for r in result['train']['ratios_vs_torch']}
  if torch_ok:
    assert ratios == {(v, n) for v in check.VARIANTS if v != 'full:cudnn' for n in (64, 256)}

  decode = {(r['variant'], r['context']): r for r in result['decode']['records']}
  assert set(decode) == {(v, n) for v in check.DECODE_VARIANTS for n in (32, 128)}
  assert all(r['status'] == 'ok' and r['ms_per_token'] > 0 for r in decode.values())
  latent, full = 'causal_latent:C128', check.DECODE_REFERENCE
  assert decode[latent, 32]['state_mib'] == decode[latent, 128]['state_mib']  # fixed size
  assert decode[full, 128]['state_mib'] > decode[full, 32]['state_mib']       # grows
  assert '| N | rows | torch | full:cudnn |' in proc.stdout
  assert 'Exactness on cpu: 6/6 checks pass' in proc.stdout


def test_pytest_log_is_read_per_test_and_per_check():
  log = '\n'.join([
      'tests/test_flash.py::test_a[x] PASSED                [ 10%]',
      "tests/test_flash.py::test_a[y] SKIPPED (needs a GPU) [ 20%]",
      '[gw1] [ 30%] FAILED tests/test_decode.py::test_b[full] ',
      '[gw0] [ 40%] PASSED tests/test_decode.py::test_b_bfloat16 ',
      '=================== short test summary info ====================',
      'FAILED tests/test_decode.py::test_b[full] - AssertionError: not equal',
      '============ 1 failed, 2 passed, 1 skipped in 3.1s ============'])
  outcomes, failures = check.read_pytest_log(log)
  assert outcomes == {'tests/test_flash.py::test_a[x]': 'passed',
                      'tests/test_flash.py::test_a[y]': 'skipped',
                      'tests/test_decode.py::test_b[full]': 'failed',
                      'tests/test_decode.py::test_b_bfloat16': 'passed'}
  assert failures == {'tests/test_decode.py::test_b[full]': 'AssertionError: not equal'}
  checks = {'a': ['tests/test_flash.py::test_a'], 'b': ['tests/test_decode.py::test_b'],
            'c': ['tests/test_model.py::test_c']}
  grouped = check.group_checks(checks, outcomes, failures, finished=True)
  assert {k: g['status'] for k, g in grouped.items()} == {'a': 'pass', 'b': 'fail',
                                                         'c': 'not run'}
  assert (grouped['a']['passed'], grouped['a']['skipped']) == (1, 1)
  assert list(grouped['b']['tests']) == ['tests/test_decode.py::test_b[full]']  # not _bfloat16
  assert grouped['b']['failures'] == failures
  stopped = check.group_checks(checks, outcomes, failures, finished=False)
  assert {k: g['status'] for k, g in stopped.items()} == {'a': 'incomplete', 'b': 'fail',
                                                         'c': 'incomplete'}


def test_the_time_guard_skips_every_part_without_starting_a_process(tmp_path):
  args = argparse.Namespace(
      dry_run=True, out=str(tmp_path), exactness_s=100, test_workers=0, variants='torch,mla',
      lengths='64,256', tokens_per_step=512, point_s=100, decode_reserve_s=0, repeats=1,
      rounds=2, matmul_size=64, decode_lengths='32', decode_steps=2, max_prefill=64)
  spent = check.Budget(0.0, min_child_s=5)
  assert check.Budget(100.0, min_child_s=5).child_timeout(30, reserve=60) == 30
  assert check.Budget(100.0, min_child_s=5).child_timeout(30, reserve=98) is None
  assert check.exactness(args, spent) == {'status': check.SKIPPED}
  train = check.train(args, spent, torch_python=None, on_gpu=False)
  assert [(r['variant'], r['n'], r['status']) for r in train['records']] == [
      (v, n, check.SKIPPED) for n in (64, 256) for v in ('torch', 'mla')]
  assert train['ratios_vs_torch'] == [] and train['matmul_peak_tflops'] is None
  decode = check.decoding(args, spent)
  assert {r['status'] for r in decode['records']} == {check.SKIPPED}
  table = check.summary_tables({'device': 'cpu', 'exactness': {'status': check.SKIPPED},
                                'train': train, 'decode': decode, 'skipped': ['train mla N=64']})
  assert 'Exactness on cpu: 0/0 checks pass (skipped: time budget)' in table
  assert '| 64 | 8 | skipped | skipped |' in table and 'Cut by the time guard' in table


@pytest.mark.parametrize('fields', [
    dict(attention='full'),
    dict(attention='mla', kv_lora_rank=16, q_lora_rank=0, rope_head_dim=8, head_dim=16,
         v_head_dim=16),
    dict(attention='mla', kv_lora_rank=16, q_lora_rank=12, rope_head_dim=8, head_dim=16,
         v_head_dim=8),
])
def test_step_flops_are_six_per_weight_and_token_plus_the_attention_scores(fields):
  """The MFU numerator (the registry's per-layer counts, the MLP, the head, x3) is 6 FLOPs
  per weight matrix entry and token, plus the causal scores and values: so it counts the
  weights the model really has."""
  cfg = model_lib.ModelConfig(emb_dim=32, num_heads=2, mlp_dim=64, num_layers=2, **fields)
  model = model_lib.build_model(cfg)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
  weights = sum(int(np.prod(x.shape)) for path, x in
                jax.tree_util.tree_leaves_with_path(params['params'])
                if len(x.shape) >= 2 and not any(
                    k in jax.tree_util.keystr(path) for k in ('embedding', 'bias')))
  n, rows = 96, 3
  if cfg.attention == 'full':
    scores = 2 * 2 * n * (n / 2) * cfg.emb_dim
  else:
    widths = cfg.head_dim + cfg.rope_head_dim + cfg.v_head_dim
    scores = 2 * n * (n / 2) * cfg.num_heads * widths
  want = 6 * rows * n * weights + 3 * rows * cfg.num_layers * scores
  assert check.step_flops(cfg, n, rows) == pytest.approx(want, rel=1e-12)
