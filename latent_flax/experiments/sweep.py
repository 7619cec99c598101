"""Sweeps: a grid of config overrides, one training run per point, and a report.

A sweep is a config module (configs/sweeps/) with
    BASE = 'configs/base.py'           # the config file every point overrides
    COMMON = {'num_train_steps': 300}  # overrides shared by every point (optional)
    def get_sweep() -> list[dict]      # one {'model.num_latents': 16, ...} per point
    REPORT = {'metric': 'eval_accuracy', 'lines': 'data.num_kv_pairs'}  # optional
A module with presets takes `--sweep=FILE:NAME`: get_sweep(NAME) then returns a dict
with 'points' and optionally 'common' and 'report', which replace the module's.
Every point is validated before the first one runs. Each point trains with `python train.py --config=BASE --config.<key>=<value> ...` in
its own sub-workdir named from its overrides, so the same lines can go to a cluster
scheduler (`point_commands`), be submitted as a job array (`submit_sweep`, through
submitit: launch.py) or run here one after another (`run_sweep`).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import jax
import ml_collections

from latent_flax.experiments import report as report_lib
from latent_flax import config_lib
from latent_flax.evaluation import decode
from latent_flax.system import io_utils
from latent_flax import model as model_lib
from latent_flax.attention import registry as attention_registry
from latent_flax.tasks import registry as task_registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a report plots against M, one line per value of `lines` (REPORT in a sweep module).
METRICS = {name: label for name, (label, _) in task_registry.METRICS.items()}
DEFAULT_REPORT = {'metric': 'eval_bits_per_byte', 'lines': 'model.num_heads'}


@dataclasses.dataclass(frozen=True)
class Sweep:
  base: str                  # config file each point overrides (relative to the repo root)
  common: dict[str, Any]     # overrides shared by all points
  points: list[dict[str, Any]]
  report: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_REPORT))


def _load_module(path: str, what: str):
  """Executes a Python file as a module; one clear line if it does not load."""
  if not os.path.isfile(path):
    raise ValueError(f"{what}={path!r} does not exist.")
  spec = importlib.util.spec_from_file_location('_loaded_' + what.strip('-').replace('.', '_'),
                                                path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a syntax error or a failing import in the user's file
    where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ''
    raise ValueError(f"{path} does not load{where}: {type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''}".rstrip()) from None
  return module


def load_sweep(path: str) -> Sweep:
  """Reads a sweep module (`FILE` or `FILE:PRESET`); one clear line if it is not one."""
  file, _, preset = path.partition(':')
  if not os.path.isfile(file):
    raise ValueError(f"--sweep={file!r} does not exist; give a file like "
                     "configs/sweeps/quick.py.")
  module = _load_module(file, '--sweep')
  if not hasattr(module, 'get_sweep') or not hasattr(module, 'BASE'):
    raise ValueError(f"{file} is not a sweep: it needs BASE (a config file) and get_sweep().")
  common = dict(getattr(module, 'COMMON', {}))
  report = {**DEFAULT_REPORT, **getattr(module, 'REPORT', {})}
  presets = getattr(module, 'PRESETS', None)
  if presets is not None and preset not in presets:
    raise ValueError(f"{file} has presets {sorted(presets)}: use --sweep={file}:NAME.")
  if presets is None and preset:
    raise ValueError(f"{file} has no presets; use --sweep={file}.")
  got = module.get_sweep(preset) if presets is not None else module.get_sweep()
  if isinstance(got, dict):
    common = {**common, **got.get('common', {})}
    report = {**report, **got.get('report', {})}
    got = got['points']
  points = list(got)
  if not points:
    raise ValueError(f"{path}: get_sweep() returned no points.")
  if report['metric'] not in METRICS:
    raise ValueError(f"{path}: REPORT['metric']={report['metric']!r} is unknown; use one of "
                     f"{list(METRICS)}.")
  return Sweep(module.BASE, common, points, report)


def point_name(overrides: dict[str, Any]) -> str:
  """Sub-workdir name in the config arguments' short names, e.g. 'attn=full,m=16,heads=2'."""
  return ','.join(f"{config_lib.short_name(k)}={v}" for k, v in overrides.items())


def point_config(sweep: Sweep, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config one point trains with, validated; one clear line naming a bad key or value."""
  config = _load_module(os.path.join(REPO, sweep.base) if not os.path.isabs(sweep.base)
                        else sweep.base, 'BASE').get_config()
  for dotted, value in {**sweep.common, **overrides}.items():
    *parents, leaf = dotted.split('.')
    node = config
    for part in parents:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise ValueError(f"{dotted!r} is not a config field of {sweep.base}.")
    try:
      node[leaf] = value
    except TypeError:
      raise ValueError(f"{dotted}={value!r} does not fit the field's type "
                       f"({type(node[leaf]).__name__}).") from None
  config_lib.validate_config(config)
  return config


def validate_points(sweep: Sweep) -> None:
  """Every point's config is valid and every point has its own workdir, or one clear line."""
  names = set()
  for i, overrides in enumerate(sweep.points, 1):
    try:
      point_config(sweep, overrides)
    except ValueError as e:
      raise ValueError(f"point {i}/{len(sweep.points)} ({point_name(overrides)}): {e}") from None
    names.add(point_name(overrides))
  if len(names) != len(sweep.points):
    raise ValueError("two points of the sweep share a name (and a workdir); make them differ.")


def point_argv(sweep: Sweep, overrides: dict[str, Any], workdir: str) -> list[str]:
  """train.py arguments (after the interpreter) for one point."""
  merged = {**sweep.common, **overrides}
  return (['train.py', f'--config={sweep.base}']
          + [f'--config.{k}={v}' for k, v in merged.items()]
          + [f'--workdir={os.path.join(workdir, point_name(overrides))}'])


def point_commands(sweep: Sweep, workdir: str) -> list[str]:
  return ['python ' + shlex.join(point_argv(sweep, p, workdir)) for p in sweep.points]


def parse_command(command: str) -> tuple[dict[str, Any], str]:
  """(overrides, workdir) of a printed command, values parsed as config_flags does."""
  overrides, workdir = {}, None
  for arg in shlex.split(command):
    if arg.startswith('--config.'):
      key, _, value = arg[len('--config.'):].partition('=')
      overrides[key] = _literal(value)
    elif arg.startswith('--workdir='):
      workdir = arg[len('--workdir='):]
  return overrides, workdir


def _literal(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {'True': True, 'False': False}.get(text, text)


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'summary.json'))


def run_sweep(sweep: Sweep, workdir: str, *, python: str = sys.executable, env=None) -> bool:
  """Runs every unfinished point in order (resuming interrupted ones); True when all done.

  Every point is validated first: an invalid one stops the sweep before anything runs.
  """
  validate_points(sweep)
  os.makedirs(workdir, exist_ok=True)
  total, started = len(sweep.points), time.time()
  ran = 0
  for i, overrides in enumerate(sweep.points, 1):
    sub = os.path.join(workdir, point_name(overrides))
    if is_done(sub):
      print(f"[{i}/{total}] {point_name(overrides)}: done, skipped", flush=True)
      continue
    action = 'resuming' if os.path.isdir(os.path.join(sub, 'checkpoints')) else 'starting'
    print(f"[{i}/{total}] {point_name(overrides)}: {action}", flush=True)
    rc = _run_forwarding_signals([python] + point_argv(sweep, overrides, workdir), env)
    if rc != 0 or not is_done(sub):
      print(f"sweep stopped at point {i}/{total} ({point_name(overrides)}, exit code {rc}); "
            "rerun the same command to resume it.", flush=True)
      return False
    ran += 1
    left = sum(not is_done(os.path.join(workdir, point_name(p))) for p in sweep.points)
    per_point = (time.time() - started) / ran
    print(f"[{i}/{total}] done; {left} point(s) left, ETA {per_point * left / 60:.1f} min",
          flush=True)
  return True


def submit_sweep(sweep: Sweep, workdir: str, ex, *, nodes: int = 1) -> list:
  """Every unfinished point as one task of a job array on submitit executor `ex`
  (launch.py); validated first, like run_sweep. Returns the submitted jobs."""
  from latent_flax.experiments import launch
  validate_points(sweep)
  os.makedirs(workdir, exist_ok=True)
  tasks, names = [], []
  for i, overrides in enumerate(sweep.points, 1):
    sub = os.path.join(workdir, point_name(overrides))
    if is_done(sub):
      print(f"[{i}/{len(sweep.points)}] {point_name(overrides)}: done, skipped", flush=True)
      continue
    argv = point_argv(sweep, overrides, workdir) + (['--distributed=auto'] if nodes > 1 else [])
    tasks.append(launch.PointTask(argv, sub))
    names.append(f"[{i}/{len(sweep.points)}] {point_name(overrides)}")
  jobs = launch.submit(ex, tasks) if tasks else []
  for name, job in zip(names, jobs):
    print(f"{name}: submitted as job {job.job_id}", flush=True)
  return jobs


def _run_forwarding_signals(argv: list[str], env) -> int:
  """Runs a training child; SIGINT/SIGTERM go to it (it checkpoints and exits 0)."""
  proc = subprocess.Popen(argv, cwd=REPO, env=env)
  forward = lambda signum, frame: proc.send_signal(signum)
  old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    return proc.wait()
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)


# --------------------------------------------------------------------------- #
# Report.
# --------------------------------------------------------------------------- #

COLUMNS = ('run', 'attention', 'variant', 'num_latents', 'num_heads', 'chunk_size', 'steps',
           'seed', 'line', 'num_params', 'eval_bits_per_byte', 'eval_accuracy', 'tokens_per_sec',
           'peak_memory_mb', 'wall_s', 'cache_bytes_per_token', 'state_bytes')
# Fields with columns of their own; a kind's other fields name its variant ('mla d_c=32 ...').
_OWN_COLUMNS = ('num_latents', 'chunk_size')


def _num_params(config: ml_collections.ConfigDict) -> int:
  model = config_lib.build_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), 'int32'))
  return model_lib.count_params(shapes['params'])


def _decoding_footprint(config: ml_collections.ConfigDict, task) -> dict:
  """Bytes of the decoding state of one sequence: what grows per token, and the rest."""
  if task.kind != 'lm' or not attention_registry.get(config.model.attention).decode:
    return dict(cache_bytes_per_token='', state_bytes='')
  per_token, fixed = decode.state_footprint(config_lib.build_model(config))
  return dict(cache_bytes_per_token=per_token, state_bytes=fixed)


def _lookup(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split('.'):
    value = value.get(part) if hasattr(value, 'get') else None
  return value


def collect(workdir: str, lines: str = DEFAULT_REPORT['lines']) -> list[dict]:
  """One row per run directory under workdir that has config.json and metrics.jsonl.

  `line` in each row is the run's value of the config field `lines` (e.g.
  'model.num_heads'): the report draws one line per value. `lines` may instead name
  one of the task's dict-valued eval results (Task.eval_extras, e.g. MQAR's
  'recall_by_pairs' or 'recall_across_chunks_by_pairs'): one row per entry of it,
  with eval_accuracy that entry's value and `line` its key.
  """
  rows = []
  for name in sorted(os.listdir(workdir)):
    run = os.path.join(workdir, name)
    if not (os.path.exists(os.path.join(run, 'config.json'))
            and os.path.exists(os.path.join(run, 'metrics.jsonl'))):
      continue
    config = config_lib.load_saved_config(run)
    task = task_registry.get(config.data.name)
    kind = attention_registry.get(config.model.attention)
    by_result = lines in task.eval_extras
    metrics = report_lib.read_metrics(os.path.join(run, 'metrics.jsonl'))
    evals = [m for m in metrics if 'eval_loss' in m]
    last = evals[-1] if evals else {}
    bpb = last.get('eval_bits_per_byte', float('nan'))
    accuracy = last.get('eval_accuracy', float('nan'))
    by_pairs = last.get(f'eval_{lines}', {}) if by_result else {}
    full = report_lib.latest_eval_json(run, 'validation')  # eval.py's fuller evaluation
    if full is not None and evals and full['step'] == last['step']:
      bpb, accuracy = full.get('bits_per_byte', bpb), full.get('accuracy', accuracy)
      by_pairs = full.get(lines, by_pairs)
    fields = kind.field_values(config.model)
    row = dict(
        run=name, attention=config.model.attention, label=kind.label(config.model),
        variant=kind.label(config.model, without=_OWN_COLUMNS),
        has_latents=kind.has_latents,
        num_latents=fields.get('num_latents', ''), num_heads=config.model.num_heads,
        chunk_size=fields.get('chunk_size', ''),
        line_name=task.extras_line_name if by_result else lines.split('.')[-1],
        title_suffix=task.eval_extras[lines][1] if by_result else '',
        steps=config.num_train_steps, seed=config.seed, line=_lookup(config, lines),
        num_params=_num_params(config), **_decoding_footprint(config, task),
        eval_bits_per_byte=bpb, eval_accuracy=accuracy,
        **report_lib.run_costs(metrics),
        done=is_done(run), step=metrics[-1]['step'],
        curves={k: [(m['step'], m[k]) for m in evals if k in m] for k in METRICS})
    if by_result:
      rows.extend({**row, 'line': int(p), 'eval_accuracy': a,
                   'curves': {'eval_accuracy': [(m['step'], m[f'eval_{lines}'][p])
                                                for m in evals
                                                if p in m.get(f'eval_{lines}', {})]}}
                  for p, a in by_pairs.items())
    else:
      rows.append(row)
  return sorted(rows, key=lambda r: (r['attention'], str(type(r['line'])), r['line'],
                                     r['num_latents'] or 0, r['chunk_size'] or 0, r['steps'],
                                     r['num_heads'], r['seed']))


def _better(metric: str):
  """The best of several seeds' values: min where lower is better, else max (also for
  what is not a task metric, such as tokens_per_sec)."""
  lower = metric in task_registry.METRICS and task_registry.lower_is_better(metric)
  return min if lower else max


def over_seeds(rows: list[dict], metric: str) -> list[dict]:
  """Rows that differ only in seed, merged: best, median and every seed's value."""
  groups = {}
  for r in rows:
    key = tuple(r[k] for k in ('variant', 'num_latents', 'num_heads', 'chunk_size', 'steps',
                               'line'))
    groups.setdefault(key, []).append(r)
  merged = []
  for group in groups.values():
    values = [r[metric] for r in sorted(group, key=lambda r: r['seed'])]
    merged.append({**group[0], 'seeds': [r['seed'] for r in group], 'values': values,
                   'best': _better(metric)(values), 'median': statistics.median(values)})
  return merged


def write_report(rows: list[dict], out_dir: str, title: str = 'Sweep',
                 report: dict | None = None) -> list[str]:
  """report.md, report.csv, <metric>_vs_m.png, tokens_per_sec_vs_m.png, <metric>_vs_step.png."""
  report = {**DEFAULT_REPORT, **(report or {})}
  metric, lines_key = report['metric'], report['lines']
  line_name = rows[0]['line_name'] if rows else lines_key.split('.')[-1]
  if rows and rows[0]['title_suffix']:
    title += f": {rows[0]['title_suffix']}"
  os.makedirs(out_dir, exist_ok=True)
  short = 'bpb' if metric == 'eval_bits_per_byte' else metric.replace('eval_', '')
  paths = [os.path.join(out_dir, n) for n in
           ('report.md', 'report.csv', f'{short}_vs_m.png', 'tokens_per_sec_vs_m.png',
            f'{short}_vs_step.png')]
  with open(paths[1], 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)
  extra = lines_key != 'model.num_heads'
  lm = any(r['cache_bytes_per_token'] != '' for r in rows)
  seeded = len({r['seed'] for r in rows}) > 1
  head = ['attention', 'M', 'heads', 'chunk', 'steps'] + (['seed'] if seeded else []) + (
      [line_name] if extra else []) + [
      'params', 'eval bits/byte' if metric == 'eval_bits_per_byte' else 'eval accuracy',
      'tokens/s', 'peak memory (MiB)', 'wall (s)'] + (
      ['decoding cache (B/token)', 'fixed state (KiB)'] if lm else [])
  lines = [f'# {title}', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    unfinished = '' if r['done'] else f" (unfinished, step {r['step']})"
    cells = [f"{r['variant']}{unfinished}", r['num_latents'], r['num_heads'], r['chunk_size'],
             f"{r['steps']:,}"]
    cells += [r['seed']] if seeded else []
    cells += [r['line']] if extra else []
    cells += [f"{r['num_params']:,}", f"{r[metric]:.4f}", f"{r['tokens_per_sec']:,.0f}",
              f"{r['peak_memory_mb']:,.0f}", f"{r['wall_s']:.0f}"]
    if lm:
      cells += ['', ''] if r['state_bytes'] == '' else [
          f"{r['cache_bytes_per_token']:,.0f}", f"{r['state_bytes'] / 1024:,.1f}"]
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  if seeded:
    best = 'lowest' if metric == 'eval_bits_per_byte' else 'highest'
    lines += ['', f'Over seeds ({short}; best = {best}):', '',
              f'| attention | M | chunk | steps | {line_name} | best | median | each seed |',
              '|---|---|---|---|---|---|---|---|']
    for g in over_seeds(rows, metric):
      each = ', '.join(f"{v:.4f} (seed {s})" for s, v in zip(g['seeds'], g['values']))
      lines.append(f"| {g['variant']} | {g['num_latents']} | {g['chunk_size']} | "
                   f"{g['steps']:,} | {g['line']} | {g['best']:.4f} | {g['median']:.4f} | "
                   f"{each} |")
  lines += ['', f'![{METRICS[metric]} vs M]({os.path.basename(paths[2])})', '',
            '![tokens per second vs M](tokens_per_sec_vs_m.png)', '',
            f'![{METRICS[metric]} during training]({os.path.basename(paths[4])})', '']
  with open(paths[0], 'w') as f:
    f.write('\n'.join(lines))
  _plot(rows, metric, METRICS[metric], paths[2], title, line_name)
  _plot(rows, 'tokens_per_sec', 'training tokens / s', paths[3], title, line_name)
  _plot_curves(rows, metric, METRICS[metric], paths[4], title, line_name)
  return paths


def _plot_curves(rows: list[dict], metric: str, ylabel: str, path: str, title: str,
                 line_name: str) -> None:
  """The periodic eval of every run against the step: one panel per `line` value.

  Colour is M (kinds without latents black), line style is the seed, so runs still on a
  plateau, or still improving at the last step, show at a glance.
  """
  plt = io_utils.pyplot()
  groups = sorted({r['line'] for r in rows}, key=lambda v: (str(type(v)), v))
  fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 1, 3.8), squeeze=False,
                           sharey=True)
  ms = sorted({r['num_latents'] for r in rows if r['num_latents'] != ''})
  cmap = plt.get_cmap('viridis')
  color = {m: cmap(i / max(len(ms) - 1, 1) * 0.9) for i, m in enumerate(ms)}
  others = sorted({r['variant'] for r in rows if not r['has_latents']})  # full, MLA, ...
  color.update(zip(others, ['k', 'tab:red', 'tab:blue', 'tab:orange', 'tab:brown'] * 4))
  seeds = sorted({r['seed'] for r in rows})
  styles = dict(zip(seeds, ['-', '--', ':', '-.'] * 8))
  for ax, line in zip(axes[0], groups):
    for r in rows:
      curve = r['curves'].get(metric, [])
      if r['line'] != line or not curve:
        continue
      label = r['label'] + (f", seed {r['seed']}" if len(seeds) > 1 else '')
      ax.plot(*zip(*curve), styles[r['seed']], marker='.', label=label,
              color=color[r['num_latents'] if r['has_latents'] else r['variant']])
    ax.set_title(f'{line_name}={line}', fontsize=9)
    ax.set_xlabel('training step')
    ax.grid(True, alpha=0.3)
  axes[0][0].set_ylabel(ylabel)
  axes[0][-1].legend(fontsize=6, loc='center left', bbox_to_anchor=(1.02, 0.5))
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _plot(rows: list[dict], key: str, ylabel: str, path: str, title: str,
          line_name: str) -> None:
  """key vs M for the latent kinds, one line per `line` value; the others as dashed levels.

  With several seeds per point the line joins the best seed's values and every
  seed is a faint dot. Runs that differ from the most common chunk size are left
  out of the lines (a chunk-size probe is read from the table).
  """
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  merged = over_seeds(rows, key)
  seeded = any(len(g['seeds']) > 1 for g in merged)
  latent = [g for g in merged if g['has_latents']]
  chunks = [g['chunk_size'] for g in latent]
  main_chunk = max(set(chunks), key=chunks.count) if chunks else ''
  groups = sorted({g['line'] for g in merged}, key=lambda v: (str(type(v)), v))
  colors = dict(zip(groups, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 4))
  best = ' (best seed)' if seeded else ''
  for line in groups:
    points = sorted((g['num_latents'], g) for g in latent
                    if g['line'] == line and g['chunk_size'] == main_chunk)
    if points:
      kind = latent[0]['attention']
      ax.plot([m for m, _ in points], [g['best'] for _, g in points], 'o-', color=colors[line],
              label=f'{kind}, {line_name}={line}{best}')
      if seeded:
        ax.plot([m for m, g in points for _ in g['values']],
                [v for _, g in points for v in g['values']], '.', color=colors[line], alpha=0.35)
    levels = [g for g in merged if not g['has_latents'] and g['line'] == line]
    for g, ls in zip(levels, ['--', ':', '-.', (0, (5, 1)), (0, (1, 3))] * 4):
      ax.axhline(g['best'], color=colors[line], ls=ls, label=f"{g['label']}, {line_name}={line}")
  ax.set_xscale('log', base=2)
  ax.set_xlabel('latents per block M' + (f' (chunk size {main_chunk})' if main_chunk else ''))
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
