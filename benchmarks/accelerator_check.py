"""One command for a GPU: the tests whose guarantees depend on the backend, the LM train step
in bfloat16 against a PyTorch GPT (SDPA) of the same shape, and decoding against context.

    python -m benchmarks.accelerator_check --out benchmarks/results/accelerator
    python -m benchmarks.accelerator_check --dry_run --out /tmp/accelerator    # toy, on CPU

Run it from the repository root (`-m`: the checkout needs no install). Parts, in order,
each in fresh processes (this one never starts the accelerator, whose memory is theirs):

1. exactness: pytest on this backend over the tests of CHECKS: causality bit-exact and by
   gradient, prefix scan = brute force, flash = naive = cuDNN in bfloat16, decode = the
   parallel pass, streaming = one pass; pass or fail per check and per test.
2. train: the trainer's own step (harness.LMStep: forward, backward, AdamW) in bfloat16,
   D=1024, 8 layers, 8 heads, MLP 4096, --tokens_per_step / N rows, at each N of
   --lengths, for each of VARIANTS and the PyTorch GPT of benchmarks/torch_gpt.py (SDPA's
   flash backend, autocast bfloat16, the machine's torch); one fresh process per point.
   tokens/s, the paired ratio to torch, MFU (model FLOPs from the registry's per-layer
   counts, the MLP and the head, x3 for the backward, per second, over the bfloat16 matmul
   peak measured in those processes) and the allocator's peak memory.
3. decode: benchmarks/decode.py's measurement (greedy steps after L tokens of context) for
   the three kinds at the same shape: ms/token and the decoding state's bytes.

Time guard: everything ends within --budget_s (500 s, inside the 9 minutes one command
may take on the H100 with its start-up); each child gets a timeout within what is left, the train points leave
--decode_reserve_s for decoding, and whatever the guard cuts is recorded as
'skipped: time budget'. The lengths run in --lengths order (65,536 before 16,384, so the
guard drops the middle length first). Writes <out>/accelerator.json (after every part),
<out>/accelerator.png, <out>/exactness.log and prints the summary tables (Markdown).
`--dry_run`: every part at toy sizes (tests/test_accelerator_check.py runs it on CPU).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax

from benchmarks import decode, harness, peers
from configs import base
from latent_flax import model as model_lib
from latent_flax.attention import registry

OUT = 'benchmarks/results/accelerator'
SHAPE = dict(emb_dim=1024, num_heads=8, mlp_dim=4096, num_layers=8)
TOY_SHAPE = dict(emb_dim=32, num_heads=2, mlp_dim=64, num_layers=2)
MLA = dict(attention='mla', kv_lora_rank=512, q_lora_rank=0, rope_head_dim=64, head_dim=128,
           v_head_dim=128)  # DeepSeek-V2-Lite's per-head widths at d_h = D / H = 128
# Our variants: config.model fields over the shape (all in bfloat16). Each length runs
# torch first, then these in this order (the slowest last).
VARIANTS = {
    'full:cudnn': dict(attention='full', attention_impl='cudnn'),
    'causal_latent:C128': dict(attention='causal_latent', num_latents=64, chunk_size=128),
    'mla': MLA,
    'causal_latent:C256': dict(attention='causal_latent', num_latents=64, chunk_size=256),
    'full:blockwise': dict(attention='full', attention_impl='blockwise'),
}
TORCH = 'torch'  # benchmarks/torch_gpt.py: pre-LN GPT, SDPA (flash), the reference
DECODE_REFERENCE = 'full'  # decoding times are also given over this one's
DECODE_VARIANTS = {'causal_latent:C128': VARIANTS['causal_latent:C128'],
                   DECODE_REFERENCE: dict(attention='full'), 'mla': MLA}
TOY_FIELDS = dict(num_latents=4, kv_lora_rank=16, rope_head_dim=8, head_dim=16, v_head_dim=16)

# check -> the tests that hold it (a test name covers all its cases); the dry run takes
# only each check's first entry of DRY_CHECKS.
CHECKS = {
    'flash = naive = cuDNN (bfloat16)': [
        'tests/test_flash.py::test_cores_agree_in_bfloat16',
        'tests/test_flash.py::test_values_and_gradients_equal_the_naive_path',
        'tests/test_mla.py::test_blockwise_and_naive_cores_give_the_same_gradients'],
    'causal, bit-exact': [
        'tests/test_model.py::test_lm_is_causal_bit_exact',
        'tests/test_attention.py::test_causal_block_perturbation_is_bit_exact'],
    'causal, by gradient': [
        'tests/test_attention.py::test_causal_gradient_to_the_future_is_exactly_zero',
        'tests/test_flash.py::test_causal_by_perturbation_and_gradient_is_exact'],
    'decode = parallel pass': [
        'tests/test_decode.py::test_token_by_token_equals_parallel_forward',
        'tests/test_decode.py::test_token_by_token_equals_parallel_forward_bfloat16',
        'tests/test_mla.py::test_absorbed_decoding_equals_the_parallel_pass_and_the_naive_path'],
    'prefix scan = brute force': [
        'tests/test_attention.py::test_prefix_scan_equals_bidirectional_steps_on_each_prefix',
        'tests/test_attention.py::test_decayed_prefix_scan_equals_brute_force_softmax_with_decay',
        'tests/test_attention.py::test_combine_is_associative_and_matches_softmax'],
    'streaming = one pass': [
        'tests/test_decode.py::test_streaming_in_segments_equals_one_pass'],
}
DRY_CHECKS = {
    'flash = naive = cuDNN (bfloat16)': ['tests/test_flash.py::test_cores_agree_in_bfloat16'],
    'causal, bit-exact': ['tests/test_model.py::test_lm_is_causal_bit_exact[full]'],
    'causal, by gradient': [
        'tests/test_attention.py::test_causal_gradient_to_the_future_is_exactly_zero[full]'],
    'decode = parallel pass': [
        'tests/test_decode.py::test_token_by_token_equals_parallel_forward[full]'],
    'prefix scan = brute force': [
        'tests/test_attention.py::test_combine_is_associative_and_matches_softmax'],
    'streaming = one pass': [
        'tests/test_decode.py::test_streaming_in_segments_equals_one_pass[full]'],
}
SKIPPED = 'skipped: time budget'


# --------------------------------------------------------------------------- #
# The time guard and children.
# --------------------------------------------------------------------------- #

class Budget:
  """Seconds left of the run's budget, and the timeout a child may still have."""

  def __init__(self, seconds: float, min_child_s: float):
    self.end = time.monotonic() + seconds
    self.min_child_s = min_child_s

  def left(self, reserve: float = 0.0) -> float:
    return self.end - reserve - time.monotonic()

  def child_timeout(self, cap: float, reserve: float = 0.0) -> float | None:
    """min(cap, what is left beyond `reserve`), or None when that is too short to start."""
    timeout = min(cap, self.left(reserve))
    return timeout if timeout >= self.min_child_s else None


def run_child(argv: list[str], timeout_s: float, env: dict | None = None
              ) -> tuple[str, str, str]:
  """(status 'ok' | 'error' | 'timeout', stdout, stderr) of `argv` run from the repository
  root in its own process group, which a timeout kills whole (pytest's workers too);
  the output up to then is kept."""
  proc = subprocess.Popen(argv, cwd=harness.REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', **(env or {})))
  try:
    out, err = proc.communicate(timeout=timeout_s)
    return ('ok' if proc.returncode == 0 else 'error'), out, err
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    return 'timeout', out, err


def json_lines(text: str) -> list[dict]:
  return [json.loads(line) for line in text.splitlines() if line.startswith('{')]


# --------------------------------------------------------------------------- #
# 1. Exactness: the backend-dependent tests, through pytest.
# --------------------------------------------------------------------------- #

_OUTCOME = re.compile(r'(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)'
                      r'|(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) (tests/\S+::\S+)')
_FAILURE = re.compile(r'^(?:FAILED|ERROR) (tests/\S+::\S+) - (.*)$', re.M)


def read_pytest_log(log: str) -> tuple[dict[str, str], dict[str, str]]:
  """({node id: 'passed' | 'failed' | ...}, {node id: failure line}) from pytest -v -rfE
  output, with or without xdist workers ('[gw0] [ 50%] PASSED tests/...')."""
  outcomes = {}
  for m in _OUTCOME.finditer(log):
    node, outcome = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
    if outcomes.get(node) not in ('failed', 'error'):  # a teardown error stays an error
      outcomes[node] = outcome.lower()
  return outcomes, {node: why[:300] for node, why in _FAILURE.findall(log)}


def group_checks(checks: dict[str, list[str]], outcomes: dict[str, str],
                 failures: dict[str, str], finished: bool) -> dict[str, dict]:
  """Per check: its tests' outcomes and 'pass' (every test that ran passed or was skipped,
  one at least passed), 'fail', or 'incomplete' (pytest stopped before all had run)."""
  grouped = {}
  for name, selectors in checks.items():
    tests = {node: outcome for node, outcome in outcomes.items()
             if any(node == s or node.startswith(s + '[') for s in selectors)}
    counts = {k: sum(o == k for o in tests.values()) for k in ('passed', 'failed', 'skipped')}
    counts['failed'] += sum(o in ('error', 'xpass') for o in tests.values())
    if counts['failed']:
      status = 'fail'
    elif not finished:
      status = 'incomplete'
    else:
      status = 'pass' if counts['passed'] else 'not run'
    grouped[name] = {'status': status, **counts, 'tests': tests,
                     'failures': {n: failures[n] for n in tests if n in failures}}
  return grouped


def exactness(args, budget: Budget) -> dict:
  checks = DRY_CHECKS if args.dry_run else CHECKS
  timeout = budget.child_timeout(args.exactness_s)
  if timeout is None:
    return {'status': SKIPPED}
  xdist = importlib.util.find_spec('xdist') is not None
  workers = ['-n', str(args.test_workers), '--dist', 'load'] if args.test_workers and xdist else []
  argv = ([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-v', '-rfE']
          + workers + [s for selectors in checks.values() for s in selectors])
  # JAX_PLATFORMS unset (tests/conftest.py would pick the CPU): the accelerator if any.
  env = {'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', ''), 'PYTHONUNBUFFERED': '1',
         'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}  # workers share the one accelerator
  t0 = time.perf_counter()
  status, out, err = run_child(argv, timeout, env)
  with open(os.path.join(args.out, 'exactness.log'), 'w') as f:
    f.write(' '.join(argv[1:]) + '\n\n' + out + err)
  outcomes, failures = read_pytest_log(out)
  grouped = group_checks(checks, outcomes, failures, finished=status != 'timeout')
  return {'status': 'timeout' if status == 'timeout' else 'ok', 'seconds':
          time.perf_counter() - t0, 'timeout_s': timeout, 'tests_run': len(outcomes),
          'pytest_tail': (out + err)[-600:] if not outcomes else '', 'checks': grouped}


# --------------------------------------------------------------------------- #
# 2. The train step: one fresh process per (variant, N).
# --------------------------------------------------------------------------- #

def model_fields(variant: str, dry_run: bool) -> dict:
  """config.model fields of one of VARIANTS or DECODE_VARIANTS at the run's shape."""
  fields = {**(TOY_SHAPE if dry_run else SHAPE), 'dtype': 'bfloat16',
            **({**VARIANTS, **DECODE_VARIANTS}[variant])}
  if dry_run:
    fields.update({k: v for k, v in TOY_FIELDS.items() if k in fields})
    if 'chunk_size' in fields:
      fields['chunk_size'] //= 8
  return fields


def step_flops(cfg, n: int, rows: int) -> float:
  """Model FLOPs of one train step: 3 x the forward's matmul FLOPs (the attention kind's
  per-layer count from the registry, the MLP, the head), the backward counted twice."""
  layer = registry.get(cfg.attention).flops(cfg, n) + 2 * n * 2 * cfg.emb_dim * cfg.mlp_dim
  return 3 * rows * (cfg.num_layers * layer + 2 * n * cfg.emb_dim * model_lib.VOCAB_SIZE)


def model_config(variant: str, dry_run: bool) -> model_lib.ModelConfig:
  return model_lib.validate_model_config(model_lib.ModelConfig(**model_fields(variant, dry_run)))


def train_here(variant: str, n: int, rows: int, args) -> dict:
  """One point of one of our variants, in this (child) process."""
  harness.make_oom_killable()
  if VARIANTS[variant].get('attention_impl') == 'cudnn' and jax.default_backend() != 'gpu':
    return {'status': "skipped: cuDNN's fused attention needs a GPU"}
  config = base.get_config()
  config.model.update(**model_fields(variant, args.dry_run))
  config.data.seq_len = n
  config.per_device_batch_size = rows
  step = harness.LMStep(config)
  peak_gflops = harness.matmul_peak_gflops(args.matmul_size or None, dtype='bfloat16')
  first, seconds = harness.time_fn(step.run, repeats=args.repeats)
  versions = {p: importlib.metadata.version(p)
              for p in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml_collections')}
  return {'status': 'ok', 'seconds': seconds, 'first_s': first,
          'matmul_peak_tflops': peak_gflops / 1e3, 'device_peak_mb': harness.device_peak_mb(),
          'peak_rss_mb': harness.peak_rss_mb(), 'backend': jax.default_backend(),
          'versions': versions}


def measure_train(variant: str, n: int, args, budget: Budget, torch_python: str | None,
                  on_gpu: bool) -> dict:
  """One point in a fresh process, within the time guard (torch's with its python)."""
  rows = max(1, args.tokens_per_step // n)
  timeout = budget.child_timeout(args.point_s, reserve=args.decode_reserve_s)
  if timeout is None:
    return {'status': SKIPPED, 'rows': rows}
  shape = TOY_SHAPE if args.dry_run else SHAPE
  if variant == TORCH:
    if torch_python is None:
      return {'status': 'skipped: torch does not import here', 'rows': rows}
    argv = [os.path.join(harness.REPO, 'benchmarks', 'torch_gpt.py'), '--mode=train',
            f'--n={n}', f'--batch={rows}', f"--width={shape['emb_dim']}",
            f"--heads={shape['num_heads']}", f"--mlp={shape['mlp_dim']}",
            f"--layers={shape['num_layers']}", f'--repeats={args.repeats}',
            f"--device={'cuda' if on_gpu else 'cpu'}", '--dtype=bfloat16', '--sdpa=flash']
    record = harness.run_isolated(argv, timeout, python=torch_python)
  else:
    argv = ['-m', 'benchmarks.accelerator_check', '--one', variant, str(n), str(rows),
            f'--repeats={args.repeats}', f'--matmul_size={args.matmul_size}'] + (
                ['--dry_run'] if args.dry_run else [])
    record = harness.run_isolated(argv, timeout)
  return {**record, 'rows': rows, 'timeout_s': timeout}


def train(args, budget: Budget, torch_python: str | None, on_gpu: bool) -> dict:
  variants = args.variants.split(',')
  records, ratios = [], []
  failed_at: dict[str, int] = {}  # a variant that failed at N is not run at longer N
  for n in [int(x) for x in args.lengths.split(',')]:
    run = [v for v in variants if n <= failed_at.get(v, n)]

    def measure(v, n=n):
      return {'variant': v, 'n': n, **measure_train(v, n, args, budget, torch_python, on_gpu)}

    def shown(v, r, n=n):
      what = (f"{r['rows'] * n / r['seconds']:12,.0f} tokens/s  {r['seconds']:7.3f} s/step  "
              f"peak {harness.peak_mb(r) / 1024:6.2f} GiB" if r['status'] == 'ok'
              else r['status'] + (f": {r['stderr_tail'][-300:]}" if 'stderr_tail' in r else ''))
      print(f"train  N={n:<6d} {v:20s} {what}", flush=True)

    rounds = harness.paired_rounds(run, measure, args.rounds, on_record=shown)
    records += [{'status': 'skipped: failed at a shorter N', 'variant': v, 'n': n}
                for v in variants if v not in run]
    for v, recs in rounds.items():
      rec = harness.merge_rounds(recs)
      if rec['status'] == 'ok':
        cfg = model_config('full:blockwise' if v == TORCH else v, args.dry_run)  # torch's
        # GPT has full attention's matmuls (learned positions instead of rotary ones)
        rec.update(tokens_per_s=rec['rows'] * n / rec['seconds'],
                   step_tflop=step_flops(cfg, n, rec['rows']) / 1e12)
      elif not rec['status'].startswith('skipped'):
        failed_at[v] = min(failed_at.get(v, n), n - 1)
      records.append(rec)
      speedup = harness.ratio_stats(rounds.get(TORCH, []), recs)  # torch's time / ours
      if v != TORCH and speedup:
        ratios.append({'variant': v, 'n': n, **speedup})
  peaks = [r['matmul_peak_tflops'] for r in records if r.get('matmul_peak_tflops')]
  peak = max(peaks) if peaks else None
  for r in records:
    if r['status'] == 'ok' and peak:
      r['tflops'] = r['step_tflop'] / r['seconds']
      r['mfu'] = r['tflops'] / peak
  return {'shape': {**(TOY_SHAPE if args.dry_run else SHAPE), 'dtype': 'bfloat16',
                    'tokens_per_step': args.tokens_per_step},
          'variants': {v: model_fields(v, args.dry_run) for v in variants if v != TORCH},
          'matmul_peak_tflops': peak, 'records': records, 'ratios_vs_torch': ratios}


# --------------------------------------------------------------------------- #
# 3. Decoding: benchmarks/decode.py's measurement, every point in one child.
# --------------------------------------------------------------------------- #

def decode_spec(variant: str, dry_run: bool) -> str:
  """decode.load_variant's 'NAME:ARG' for a variant: configs/base.py with its fields."""
  return 'base:' + ','.join(f'model.{k}={v}' for k, v in model_fields(variant, dry_run).items())


def decode_here(args) -> None:
  """Every (length, variant) of the decode part in this (child) process, one JSON line
  each as it is measured (the parent keeps those done when the guard stops it)."""
  for length in [int(x) for x in args.decode_lengths.split(',')]:
    for v in DECODE_VARIANTS:
      record = decode.measure(decode_spec(v, args.dry_run), length, args.decode_steps,
                              args.max_prefill)
      harness.emit({**record, 'variant': v, 'status': 'ok'})


def decoding(args, budget: Budget) -> dict:
  lengths = [int(x) for x in args.decode_lengths.split(',')]
  wanted = [(n, v) for n in lengths for v in DECODE_VARIANTS]
  timeout = budget.child_timeout(budget.left(reserve=10))
  if timeout is None:
    return {'status': SKIPPED, 'steps': args.decode_steps,
            'records': [{'status': SKIPPED, 'variant': v, 'context': n} for n, v in wanted]}
  argv = [sys.executable, '-m', 'benchmarks.accelerator_check', '--one_decode',
          f'--decode_lengths={args.decode_lengths}', f'--decode_steps={args.decode_steps}',
          f'--max_prefill={args.max_prefill}'] + (['--dry_run'] if args.dry_run else [])
  status, out, err = run_child(argv, timeout)
  records = json_lines(out)
  done = {(r['context'], r['variant']) for r in records}
  why = SKIPPED if status == 'timeout' else f'{status}: {err[-300:]}'
  records += [{'status': why, 'variant': v, 'context': n} for n, v in wanted
              if (n, v) not in done]
  for r in records:
    reference = next((f for f in records if f['variant'] == DECODE_REFERENCE
                      and f['context'] == r['context'] and f['status'] == 'ok'), None)
    if r['status'] == 'ok' and reference:
      r['time_vs_reference'] = r['ms_per_token'] / reference['ms_per_token']
    print(f"decode L={r['context']:<6d} {r['variant']:20s} " + (
        f"{r['ms_per_token']:8.3f} ms/token  state {r['state_mib']:9.2f} MiB"
        if r['status'] == 'ok' else r['status']), flush=True)
  return {'status': status, 'timeout_s': timeout, 'steps': args.decode_steps,
          'records': records}


# --------------------------------------------------------------------------- #
# The summary: Markdown tables and one figure.
# --------------------------------------------------------------------------- #

def summary_tables(result: dict) -> str:
  lines = []
  ex = result.get('exactness')
  if ex:
    checks = ex.get('checks', {})
    passed = sum(c['status'] == 'pass' for c in checks.values())
    lines += [f"Exactness on {result['device']}: {passed}/{len(checks)} checks pass"
              + (f" ({ex['status']})" if ex['status'] != 'ok' else ''), '',
              '| check | result | tests passed / failed / skipped |', '|---|---|---|']
    lines += [f"| {name} | {c['status']} | {c['passed']} / {c['failed']} / {c['skipped']} |"
              for name, c in checks.items()]
  tr = result.get('train', {})
  if tr.get('records'):
    s, peak = tr['shape'], tr.get('matmul_peak_tflops')
    lines += ['', f"Train step, bfloat16, D={s['emb_dim']}, {s['num_layers']} layers, "
              f"{s['num_heads']} heads, MLP {s['mlp_dim']}, {s['tokens_per_step']:,} tokens per "
              f"step; bf16 matmul peak {peak or float('nan'):.1f} TFLOP/s. Cells: tokens/s, "
              "MFU, peak memory: tokens/s over torch's"]
    variants = list(dict.fromkeys(r['variant'] for r in tr['records']))
    ratio = {(r['variant'], r['n']): r for r in tr['ratios_vs_torch']}
    lines += ['', '| N | rows | ' + ' | '.join(variants) + ' |',
              '|---|---|' + '---|' * len(variants)]
    for n in sorted({r['n'] for r in tr['records']}):
      at = {r['variant']: r for r in tr['records'] if r['n'] == n}
      rows = next((r['rows'] for r in at.values() if r.get('rows')), '')
      cells = []
      for v in variants:
        r = at.get(v, {'status': 'not run'})
        if r['status'] != 'ok':
          cells.append(r['status'].split(':')[0] if r['status'] != SKIPPED else 'skipped')
          continue
        cell = (f"{r['tokens_per_s']:,.0f}, {100 * r.get('mfu', float('nan')):.0f}%, "
                f"{harness.peak_mb(r) / 1024:.1f} GiB")
        if (v, n) in ratio:
          cell += f": {harness.format_ratio(ratio[v, n])}"
        cells.append(cell)
      lines.append(f"| {n:,} | {rows} | " + ' | '.join(cells) + ' |')
  de = result.get('decode', {})
  if de.get('records'):
    lines += ['', f"Decoding, batch 1, {de['steps']} greedy steps after L tokens. Cells: "
              f"ms/token, state MiB: time over {DECODE_REFERENCE}'s", '',
              '| L | ' + ' | '.join(DECODE_VARIANTS) + ' |',
              '|---|' + '---|' * len(DECODE_VARIANTS)]
    for n in sorted({r['context'] for r in de['records']}):
      at = {r['variant']: r for r in de['records'] if r['context'] == n}
      cells = [(f"{r['ms_per_token']:.3f} ms, {r['state_mib']:.2f} MiB"
                + (f": {r['time_vs_reference']:.2f}x"
                   if 'time_vs_reference' in r and v != DECODE_REFERENCE else ''))
               if r['status'] == 'ok' else r['status'].split(':')[0]
               for v, r in ((v, at.get(v, {'status': 'not run'})) for v in DECODE_VARIANTS)]
      lines.append(f"| {n:,} | " + ' | '.join(cells) + ' |')
  if result.get('skipped'):
    lines += ['', 'Cut by the time guard: ' + ', '.join(result['skipped'])]
  return '\n'.join(lines)


def plot(result: dict, path: str) -> None:
  plt = harness.io_utils.pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  records = [r for r in result.get('train', {}).get('records', []) if r['status'] == 'ok']
  for v in dict.fromkeys(r['variant'] for r in records):
    pts = sorted((r for r in records if r['variant'] == v), key=lambda r: r['n'])
    ns = [r['n'] for r in pts]
    axes[0, 0].plot(ns, [r['tokens_per_s'] for r in pts], 'o-', label=v)
    axes[0, 1].plot(ns, [100 * r.get('mfu', float('nan')) for r in pts], 'o-', label=v)
    axes[1, 0].plot(ns, [harness.peak_mb(r) / 1024 for r in pts], 'o-', label=v)
  decode_records = [r for r in result.get('decode', {}).get('records', []) if r['status'] == 'ok']
  for v in dict.fromkeys(r['variant'] for r in decode_records):
    pts = sorted((r for r in decode_records if r['variant'] == v), key=lambda r: r['context'])
    axes[1, 1].plot([r['context'] for r in pts], [r['ms_per_token'] for r in pts], 'o-',
                    label=f"{v} ({pts[-1]['state_mib']:.2f} MiB at {pts[-1]['context']:,})")
  for ax, xlabel, ylabel in ((axes[0, 0], 'tokens per row N', 'train: tokens / s'),
                             (axes[0, 1], 'tokens per row N', 'train: MFU (%)'),
                             (axes[1, 0], 'tokens per row N', harness.memory_label(records)),
                             (axes[1, 1], 'context L (decoding)', 'ms per generated token')):
    harness.log_axes(ax, xlabel, ylabel, log_y='MFU' not in ylabel, legend=bool(ax.lines))
  checks = result.get('exactness', {}).get('checks', {})
  passed = sum(c['status'] == 'pass' for c in checks.values())
  harness.save_figure(fig, f"Accelerator check on {result['device']}: exactness "
                      f"{passed}/{len(checks)} checks pass; train step (bfloat16) and decoding",
                      path)


# --------------------------------------------------------------------------- #

def find_torch(args) -> str | None:
  """The python that runs the PyTorch peer: --torch_python, else .venv-torch's where it
  exists (`make peers-venv`), else this one; None if torch does not import there."""
  python = args.torch_python or (peers.TORCH_PYTHON if os.path.exists(peers.TORCH_PYTHON)
                                 else sys.executable)
  status, _, _ = run_child([python, '-c', 'import torch'], timeout_s=120)
  return python if status == 'ok' else None


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default=OUT, help='folder for the JSON, PNG and exactness.log')
  ap.add_argument('--dry_run', action='store_true', help='every part at toy sizes (CPU)')
  ap.add_argument('--parts', default='exactness,train,decode')
  ap.add_argument('--budget_s', type=float, default=None, help='default 500 (dry run 900)')
  ap.add_argument('--lengths', default=None, help='N of the train step, in the order run '
                  '(default 4096,65536,16384; dry run 64,256)')
  ap.add_argument('--variants', default=','.join([TORCH] + list(VARIANTS)))
  ap.add_argument('--tokens_per_step', type=int, default=None,
                  help='rows = this / N (default 65536; dry run 512)')
  ap.add_argument('--repeats', type=int, default=3, help='timed steps per point (median)')
  ap.add_argument('--rounds', type=int, default=1, help='paired alternating rounds')
  ap.add_argument('--point_s', type=float, default=None,
                  help='timeout of one train point (default 150 s)')
  ap.add_argument('--exactness_s', type=float, default=None,
                  help='timeout of the tests (default 150 s)')
  ap.add_argument('--decode_reserve_s', type=float, default=None,
                  help='seconds the train points leave for decoding (default 100)')
  ap.add_argument('--test_workers', type=int, default=None,
                  help='pytest-xdist workers on the one device (default 4; dry run 0)')
  ap.add_argument('--decode_lengths', default=None,
                  help='contexts L (default 1024,8192,65536; dry run 32,128)')
  ap.add_argument('--decode_steps', type=int, default=None,
                  help='greedy steps per timed run (default 256; dry run 8)')
  ap.add_argument('--max_prefill', type=int, default=4096)
  ap.add_argument('--matmul_size', type=int, default=None,
                  help='side of the peak matmul (0: harness default; dry run 256)')
  ap.add_argument('--torch_python', default='', help='python with torch (default: see find_torch)')
  ap.add_argument('--one', nargs=3, metavar=('VARIANT', 'N', 'ROWS'), help=argparse.SUPPRESS)
  ap.add_argument('--one_decode', action='store_true', help=argparse.SUPPRESS)
  args = ap.parse_args()
  dry = args.dry_run
  defaults = dict(budget_s=(900, 500), lengths=('64,256', '4096,65536,16384'),
                  tokens_per_step=(512, 65536), point_s=(120, 150), exactness_s=(300, 150),
                  decode_reserve_s=(30, 100), test_workers=(0, 4),
                  decode_lengths=('32,128', '1024,8192,65536'), decode_steps=(8, 256),
                  matmul_size=(256, 0))
  for name, (toy, real) in defaults.items():
    if getattr(args, name) is None:
      setattr(args, name, toy if dry else real)
  if args.one:
    variant, n, rows = args.one
    harness.emit(train_here(variant, int(n), int(rows), args))
    return
  if args.one_decode:
    decode_here(args)
    return
  for v in args.variants.split(','):
    if v != TORCH and v not in VARIANTS:
      raise SystemExit(f"accelerator_check: --variants has {v!r}; use {TORCH} or one of "
                       f"{list(VARIANTS)}.")
  parts = args.parts.split(',')
  for part in parts:
    if part not in ('exactness', 'train', 'decode'):
      raise SystemExit(f"accelerator_check: --parts has {part!r}; use exactness, train, decode.")
  os.makedirs(args.out, exist_ok=True)
  os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.92')  # the children's pools
  t0 = time.perf_counter()
  budget = Budget(args.budget_s, min_child_s=5 if dry else 20)
  machine = harness.machine_from_child()  # this process never starts the accelerator
  if machine.get('status', 'ok') != 'ok':
    raise SystemExit("accelerator_check: jax or this project does not import here (install "
                     f"the wheels: docs/benchmarks.md, Accelerator check):\n{machine}")
  on_gpu = 'nvidia' in machine.get('device_kind', '').lower() or any(
      'cuda' in d.lower() for d in machine.get('devices', []))
  result: dict[str, Any] = {'device': machine.get('device_kind'), 'dry_run': dry,
                            'budget_s': args.budget_s, 'skipped': []}
  path = os.path.join(args.out, 'accelerator.json')

  def write():
    result['elapsed_s'] = time.perf_counter() - t0
    harness.write_results(path, args, **result)

  # The children share XLA's GPU autotuning results: every train point has the same dense
  # matmul shapes (tokens per step and widths), so only the first one tunes them.
  with tempfile.TemporaryDirectory(prefix='accelerator_autotune_') as autotune:
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                               + f' --xla_gpu_per_fusion_autotune_cache_dir={autotune}').strip()
    if 'exactness' in parts:
      result['exactness'] = exactness(args, budget)
      for name, c in result['exactness'].get('checks', {}).items():
        print(f"exactness  {name:34s} {c['status']:10s} {c['passed']} passed, "
              f"{c['failed']} failed, {c['skipped']} skipped", flush=True)
      if result['exactness']['status'] != 'ok':
        result['skipped'].append(f"exactness ({result['exactness']['status']})")
      write()
    if 'train' in parts:
      torch_python = find_torch(args) if TORCH in args.variants.split(',') else None
      result['train'] = train(args, budget, torch_python, on_gpu)
      result['train']['torch_python'] = torch_python
      result['versions'] = next((r['versions'] for r in result['train']['records']
                                 if 'versions' in r), {})
      result['skipped'] += [f"train {r['variant']} N={r['n']}"
                            for r in result['train']['records'] if r['status'] == SKIPPED]
      write()
    if 'decode' in parts:
      result['decode'] = decoding(args, budget)
      result['skipped'] += [f"decode {r['variant']} L={r['context']}"
                            for r in result['decode']['records'] if r['status'] == SKIPPED]
      write()
  plot(result, os.path.join(args.out, 'accelerator.png'))
  print('\n' + summary_tables(result) + '\n')
  log = ' and exactness.log' if 'exactness' in parts else ''
  print(f"wrote {path}, accelerator.png{log} in {time.perf_counter() - t0:.0f} s")

if __name__ == '__main__':
  main()
