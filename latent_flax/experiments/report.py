"""Reports across training runs: what each train.py workdir holds, read back as a row, and
the tables and plots drawn from the rows. Both sweep.py (a sweep's report) and compare.py
(runs named one by one) write through here.

    rows = collect('runs/sweep_quick')               # one row per run of a sweep
    write_report(rows, out_dir, report=sweep.report) # report.md/.csv, metric vs M, curves
    rows = [summarize(w) for w in workdirs]          # one row per named run
    write_comparison(rows, out_dir, title)           # compare.md, curves vs steps/tokens/time

A run is a workdir with config.json and metrics.jsonl (and eval.py's JSON files). Every
row carries its parameter count and its eval curves with the tokens seen and the wall
clock at each evaluation; legends name each run by its attention kind and every config
field whose value differs between the runs shown (`run_labels`).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from typing import Any

import jax
import ml_collections

from latent_flax import config_lib
from latent_flax import model as model_lib
from latent_flax.attention import registry as attention_registry
from latent_flax.evaluation import decode, retrieval, runs
from latent_flax.system import io_utils
from latent_flax.tasks import registry as task_registry

# What a report ranks runs by (REPORT['metric'] of a sweep), and its axis label.
METRICS = {name: label for name, (label, _) in task_registry.METRICS.items()}
DEFAULT_REPORT = {'metric': 'eval_bits_per_byte', 'lines': 'model.num_heads'}
# Fields that change neither the trained model nor its measurement (where files go, how
# often they are written, how devices share the work): legends do not name them. The
# attention kinds' fields are named by the kinds' own labels (registry.FIELD_LABELS).
NOT_COMPARED = ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints', 'parallelism',
                'mesh.data', 'mesh.fsdp', 'mesh.seq', 'model.remat', 'data.data_dir',
                'data.cache_dir')
SWEEP_COLUMNS = ('run', 'attention', 'variant', 'num_latents', 'num_heads', 'chunk_size',
                 'steps', 'seed', 'line', 'num_params', 'eval_bits_per_byte', 'eval_accuracy',
                 'tokens_per_sec', 'peak_memory_mb', 'wall_s', 'cache_bytes_per_token',
                 'state_bytes')
# Fields with columns of their own; a kind's other fields name its variant ('mla d_c=32 ...').
_OWN_COLUMNS = ('num_latents', 'chunk_size')
# x axes of compare plots: (file suffix, label, value at one eval from its clock entry).
_X_AXES = (('step', 'training step', lambda step, clock: step),
           ('tokens', 'tokens seen', lambda step, clock: clock['tokens']),
           ('time', 'wall-clock time (min)', lambda step, clock: clock['elapsed_s'] / 60))


# --------------------------------------------------------------------------- #
# Reading runs.
# --------------------------------------------------------------------------- #

def read_metrics(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def latest_eval_json(workdir: str, split: str) -> dict | None:
  """eval.py's result for `split` at the highest step it was written for, or None."""
  prefix = 'eval_step_' if split == 'validation' else f'eval_{split}_step_'
  steps = [int(f[len(prefix):-len('.json')]) for f in os.listdir(workdir)
           if f.startswith(prefix) and f.endswith('.json') and f[len(prefix):-5].isdigit()]
  if not steps:
    return None
  with open(os.path.join(workdir, f'{prefix}{max(steps)}.json')) as f:
    return json.load(f)


def is_done(workdir: str) -> bool:
  """A finished run: train.py wrote its summary.json."""
  return os.path.exists(os.path.join(workdir, 'summary.json'))


def is_run(workdir: str) -> bool:
  """A run that has logged a step: config.json and a metrics.jsonl with records."""
  metrics = os.path.join(workdir, 'metrics.jsonl')
  return (os.path.exists(os.path.join(workdir, 'config.json')) and os.path.exists(metrics)
          and os.path.getsize(metrics) > 0)


def run_costs(metrics: list[dict]) -> dict:
  """Median tokens/s of the logged steps after the first (which includes compilation),
  peak memory and wall time of one run's metrics.jsonl records."""
  speeds = sorted(m['tokens_per_sec'] for m in metrics[1:] if 'tokens_per_sec' in m)
  return dict(tokens_per_sec=speeds[len(speeds) // 2] if speeds else float('nan'),
              peak_memory_mb=max((m.get('peak_memory_mb', 0.0) for m in metrics), default=0.0),
              wall_s=metrics[-1].get('elapsed_s', float('nan')))


def _logged_batch(record: dict, seq_len: int) -> int | None:
  """Examples (windows) per step as a record logs them (global batch x windows per row
  and step); records written before train.py logged global_batch: tokens/s over steps/s
  over seq_len."""
  if 'global_batch' in record:
    return record['global_batch'] * record.get('windows_per_step', 1)
  if record.get('steps_per_sec'):
    return round(record['tokens_per_sec'] / record['steps_per_sec'] / seq_len)
  return None


def clock(metrics: list[dict], config: ml_collections.ConfigDict) -> dict[int, dict]:
  """{step: {'examples', 'tokens', 'elapsed_s'}} at every logged step: what the run had
  seen by then (summed over its records, so a resume with another batch counts right)."""
  seq_len = config.data.seq_len
  batches = [b for b in (_logged_batch(m, seq_len) for m in metrics) if b is not None]
  batch = batches[0] if batches else config.per_device_batch_size
  seen, last_step, out = 0, 0, {}
  for m in metrics:
    batch = _logged_batch(m, seq_len) or batch
    seen += (m['step'] - last_step) * batch
    last_step = m['step']
    out[m['step']] = dict(examples=seen, tokens=seen * seq_len,
                          elapsed_s=m.get('elapsed_s', float('nan')))
  return out


def num_params(config: ml_collections.ConfigDict) -> int:
  """Parameters of the model `config` builds (shapes only: nothing is initialised)."""
  model = config_lib.build_model(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), 'int32'))
  return model_lib.count_params(shapes['params'])


def read_run(workdir: str) -> dict[str, Any]:
  """What every report reads of one run; ValueError (one line) when workdir is not a run."""
  for name in ('config.json', 'metrics.jsonl'):
    if not os.path.exists(os.path.join(workdir, name)):
      raise ValueError(f"{workdir} has no {name}: pass train.py workdirs.")
  config = config_lib.load_saved_config(workdir)
  metrics = read_metrics(os.path.join(workdir, 'metrics.jsonl'))
  if not metrics:
    raise ValueError(f"{workdir}/metrics.jsonl is empty: the run has logged no step yet.")
  task = task_registry.get(config.data.name)
  kind = attention_registry.get(config.model.attention)
  evals = [m for m in metrics if 'eval_loss' in m]
  fields = kind.field_values(config.model)
  # Trained past the window: each row read its documents in turn, the state carried.
  carried = ' carried' if config.get('carry_state') else ''
  return dict(
      run=os.path.basename(os.path.normpath(workdir)), config=config, task=task,
      metrics=metrics, evals=evals, attention=config.model.attention,
      label=kind.label(config.model) + carried,
      variant=kind.label(config.model, without=_OWN_COLUMNS) + carried,
      has_latents=kind.has_latents, num_latents=fields.get('num_latents', ''),
      num_heads=config.model.num_heads, chunk_size=fields.get('chunk_size', ''),
      steps=config.num_train_steps, seed=config.seed, num_params=num_params(config),
      done=is_done(workdir), step=metrics[-1]['step'], clock=clock(metrics, config),
      **run_costs(metrics),
      curves={k: [(m['step'], m[k]) for m in evals if k in m] for k in METRICS})


def differing_fields(configs: list[ml_collections.ConfigDict]) -> list[str]:
  """Dotted config fields whose values differ between the runs (model, then data, then the
  rest), less NOT_COMPARED and the attention kinds' own fields (which their labels name)."""
  flats = [config_lib.flat_fields(c) for c in configs]
  kind_fields = {f'model.{f}' for name in attention_registry.names()
                 for f in attention_registry.get(name).fields}
  section = {'model': 0, 'data': 1}
  ordered = sorted(dict.fromkeys(k for flat in flats for k in flat),
                   key=lambda k: section.get(k.partition('.')[0], 2))
  return [k for k in ordered
          if k not in NOT_COMPARED and k not in kind_fields and k != 'model.attention'
          and len({repr(flat.get(k)) for flat in flats}) > 1]


def run_labels(configs: list[ml_collections.ConfigDict], without: tuple[str, ...] = ()
               ) -> list[str]:
  """'causal_latent M=64 C=128, heads=8 seq_len=1024': each run's kind label and every
  field that differs between `configs` (those in `without` left out), in short names."""
  differ = [k for k in differing_fields(configs) if k not in without]
  labels = []
  for config in configs:
    kind = attention_registry.get(config.model.attention).label(config.model)
    extra = ' '.join(f"{config_lib.short_name(k)}={config_lib.get_field(config, k, None)}"
                     for k in differ)
    labels.append(f'{kind}, {extra}' if extra else kind)
  return labels


def params_text(n: int) -> str:
  """1_424_000 -> '1.42M', 463_104 -> '463k'."""
  return f'{n / 1e6:.2f}M' if n >= 1e6 else f'{n / 1e3:.0f}k'


# --------------------------------------------------------------------------- #
# Figures.
# --------------------------------------------------------------------------- #

def _save(fig, path: str) -> None:
  fig.savefig(path, dpi=120, bbox_inches='tight')  # legends outside the axes kept whole
  io_utils.pyplot().close(fig)


# --------------------------------------------------------------------------- #
# Comparing named runs (compare.py).
# --------------------------------------------------------------------------- #

def _coverage(tokens: int | None, split_tokens: int | None, unit: str = '') -> str:
  """'N of M unit' or 'all M unit': how much of its split an evaluation read ('' when not
  recorded)."""
  if not tokens or not split_tokens:
    return ''
  return runs.portion(tokens, split_tokens, unit)


def summarize(workdir: str) -> dict:
  """One run's row for a comparison; ValueError (one line) when workdir is not a run."""
  row = read_run(workdir)
  metric = row['task'].metric
  curve = row['curves'][metric]
  test = latest_eval_json(workdir, 'test')
  last = row['clock'][row['step']]
  covered = next((m for m in reversed(row['evals']) if 'eval_tokens' in m), {})
  return dict(
      row, metric=metric, examples=last['examples'], tokens=last['tokens'],
      eval_covers=_coverage(covered.get('eval_tokens'), covered.get('eval_split_tokens'),
                            row['task'].target_unit),
      eval_step=curve[-1][0] if curve else None,
      eval=curve[-1][1] if curve else float('nan'),
      best_eval=(min if row['task'].lower_is_better else max)(
          (v for _, v in curve), default=float('nan')),
      test_step=test['step'] if test else None,
      test=(test['accuracy'] if metric == 'eval_accuracy' else test['bits_per_byte'])
      if test else None)


def write_comparison(rows: list[dict], out_dir: str, title: str) -> list[str]:
  """compare.md and <metric>_vs_{step,tokens,time}.png in out_dir."""
  metrics = {r['metric'] for r in rows}
  if len(metrics) != 1:
    raise ValueError(f"the runs report different metrics {sorted(metrics)}: compare runs of "
                     "one task.")
  metric = metrics.pop()
  short = metric.replace('eval_', '')
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, 'compare.md')] + [
      os.path.join(out_dir, f'{short}_vs_{axis}.png') for axis, _, _ in _X_AXES]
  name = short.replace('_', ' ')
  labels = run_labels([r['config'] for r in rows])
  head = ['run', 'attention', 'M', 'heads', 'params', 'steps', 'examples seen', 'tokens seen',
          f'last eval {name}', 'last eval over', f'best eval {name}', f'test {name}', 'tokens/s',
          'peak memory (MiB)', 'wall (min)', 'model and settings that differ']
  lines = [f'# {title}', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r, label in zip(rows, labels):
    steps = f"{r['step']:,} of {r['steps']:,}"
    test = '' if r['test'] is None else f"{r['test']:.4f} (step {r['test_step']:,})"
    cells = [r['run'], r['attention'], r['num_latents'], r['num_heads'], f"{r['num_params']:,}",
             steps, f"{r['examples']:,}", f"{r['tokens']:,}", f"{r['eval']:.4f}",
             r['eval_covers'], f"{r['best_eval']:.4f}", test, f"{r['tokens_per_sec']:,.0f}",
             f"{r['peak_memory_mb']:,.0f}", f"{r['wall_s'] / 60:.1f}", label]
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  lines.append('')
  lines += [f'![{name} vs {xlabel}]({os.path.basename(p)})'
            for (_, xlabel, _), p in zip(_X_AXES, paths[1:])] + ['']
  with open(paths[0], 'w') as f:
    f.write('\n'.join(lines))
  legend = [f"{r['run']}: {label} ({params_text(r['num_params'])} params)"
            for r, label in zip(rows, labels)]
  covers = {r['eval_covers'] for r in rows}
  if len(covers) == 1 and '' not in covers:  # what the curves' last points are over
    title += f"; evaluations over {covers.pop()} of the validation split"
  elif covers != {''}:
    legend = [t + (f"; eval over {r['eval_covers']}" if r['eval_covers'] else '')
              for t, r in zip(legend, rows)]
  for (axis, xlabel, x_of), path in zip(_X_AXES, paths[1:]):
    fig, (ax,) = io_utils.figure(title)
    for r, text in zip(rows, legend):
      points = [(x_of(s, r['clock'][s]), v) for s, v in r['curves'][metric]]
      ax.plot([x for x, _ in points], [v for _, v in points], 'o-', label=text)
    if axis == 'tokens':
      from matplotlib import ticker  # after io_utils.pyplot() chose the backend
      ax.xaxis.set_major_formatter(ticker.EngFormatter())  # 2M, not 2 x 1e6
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRICS[metric])
    ax.grid(True, alpha=0.3)
    fig.legend(fontsize=7, loc='outside lower center')  # below: long labels hide no curve
    _save(fig, path)
  return paths


# --------------------------------------------------------------------------- #
# A sweep's report (sweep.py).
# --------------------------------------------------------------------------- #

def _decoding_footprint(config: ml_collections.ConfigDict, task) -> dict:
  """Bytes of the decoding state of one sequence: what grows per token, and the rest."""
  if task.kind != 'lm' or not attention_registry.get(config.model.attention).decode:
    return dict(cache_bytes_per_token='', state_bytes='')
  per_token, fixed = decode.state_footprint(config_lib.build_model(config))
  return dict(cache_bytes_per_token=per_token, state_bytes=fixed)


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
    if not is_run(run):
      continue
    row = read_run(run)
    config, task, evals = row['config'], row['task'], row['evals']
    by_result = lines in task.eval_extras
    last = evals[-1] if evals else {}
    bpb = last.get('eval_bits_per_byte', float('nan'))
    accuracy = last.get('eval_accuracy', float('nan'))
    by_pairs = last.get(f'eval_{lines}', {}) if by_result else {}
    covered = (last.get('eval_tokens'), last.get('eval_split_tokens'))
    full = latest_eval_json(run, 'validation')  # eval.py's fuller evaluation
    if full is not None and evals and full['step'] == last['step']:
      bpb, accuracy = full.get('bits_per_byte', bpb), full.get('accuracy', accuracy)
      by_pairs = full.get(lines, by_pairs)
      covered = (full.get('tokens'), full.get('split_tokens'))
    row.update(
        line_name=task.extras_line_name if by_result else lines.split('.')[-1],
        title_suffix=task.eval_extras[lines][1] if by_result else '',
        line=config_lib.get_field(config, lines, None), eval_bits_per_byte=bpb,
        eval_accuracy=accuracy, **_decoding_footprint(config, task),
        eval_over=_coverage(*covered),
        # probe.py's results: mean exact retrieval over its grid, by probe and haystack
        probes={k: r['mean_accuracy'] for k, r in retrieval.latest_results(run).items()})
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
  probes = sorted({k for r in rows for k in r.get('probes', {})})
  with open(paths[1], 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=SWEEP_COLUMNS + tuple(f'probe_{k}' for k in probes),
                       extrasaction='ignore')
    w.writeheader()
    w.writerows({**r, **{f'probe_{k}': v for k, v in r.get('probes', {}).items()}}
                for r in rows)
  extra = lines_key != 'model.num_heads'
  lm = any(r['cache_bytes_per_token'] != '' for r in rows)
  seeded = len({r['seed'] for r in rows}) > 1
  head = ['attention', 'M', 'heads', 'chunk', 'steps'] + (['seed'] if seeded else []) + (
      [line_name] if extra else []) + [
      'params', 'eval bits/byte' if metric == 'eval_bits_per_byte' else 'eval accuracy',
      f"eval over ({rows[0]['task'].target_unit} of the split)", 'tokens/s', 'peak memory (MiB)', 'wall (s)'] + (
      ['decoding cache (B/token)', 'fixed state (KiB)'] if lm else []) + [
      f'{k} retrieval (probe.py)' for k in probes]
  lines = [f'# {title}', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    unfinished = '' if r['done'] else f" (unfinished, step {r['step']})"
    cells = [f"{r['variant']}{unfinished}", r['num_latents'], r['num_heads'], r['chunk_size'],
             f"{r['steps']:,}"]
    cells += [r['seed']] if seeded else []
    cells += [r['line']] if extra else []
    cells += [f"{r['num_params']:,}", f"{r[metric]:.4f}", r['eval_over'],
              f"{r['tokens_per_sec']:,.0f}",
              f"{r['peak_memory_mb']:,.0f}", f"{r['wall_s']:.0f}"]
    if lm:
      cells += ['', ''] if r['state_bytes'] == '' else [
          f"{r['cache_bytes_per_token']:,.0f}", f"{r['state_bytes'] / 1024:,.1f}"]
    cells += [f"{r['probes'][k]:.3f}" if k in r.get('probes', {}) else '' for k in probes]
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
  _plot_vs_m(rows, metric, METRICS[metric], paths[2], title, line_name)
  _plot_vs_m(rows, 'tokens_per_sec', 'training tokens / s', paths[3], title, line_name)
  _plot_curves(rows, metric, METRICS[metric], paths[4], title, line_name, lines_key)
  return paths


def _plot_curves(rows: list[dict], metric: str, ylabel: str, path: str, title: str,
                 line_name: str, lines_key: str) -> None:
  """The periodic eval of every run against the step: one panel per `line` value.

  Colour is M (kinds without latents black), line style is the seed, so runs still on a
  plateau, or still improving at the last step, show at a glance. A run's legend entry
  names every field that differs between the runs, and its parameter count.
  """
  plt = io_utils.pyplot()
  groups = sorted({r['line'] for r in rows}, key=lambda v: (str(type(v)), v))
  fig, axes = io_utils.figure(title, len(groups), size=(4.2 * len(groups) + 1, 3.8), sharey=True)
  ms = sorted({r['num_latents'] for r in rows if r['num_latents'] != ''})
  cmap = plt.get_cmap('viridis')
  color = {m: cmap(i / max(len(ms) - 1, 1) * 0.9) for i, m in enumerate(ms)}
  others = sorted({r['variant'] for r in rows if not r['has_latents']})  # full, MLA, ...
  color.update(zip(others, ['k', 'tab:red', 'tab:blue', 'tab:orange', 'tab:brown'] * 4))
  seeds = sorted({r['seed'] for r in rows})
  styles = dict(zip(seeds, ['-', '--', ':', '-.'] * 8))
  labels = dict(zip((id(r) for r in rows),
                    run_labels([r['config'] for r in rows], without=(lines_key,))))
  for ax, line in zip(axes, groups):
    for r in rows:
      curve = r['curves'].get(metric, [])
      if r['line'] != line or not curve:
        continue
      ax.plot(*zip(*curve), styles[r['seed']], marker='.',
              label=f"{labels[id(r)]} ({params_text(r['num_params'])} params)",
              color=color[r['num_latents'] if r['has_latents'] else r['variant']])
    ax.set_title(f'{line_name}={line}', fontsize=9)
    ax.set_xlabel('training step')
    ax.grid(True, alpha=0.3)
  axes[0].set_ylabel(ylabel)
  entries = {}  # every panel's runs, each once (a run drawn in several panels looks alike)
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      entries.setdefault(label, handle)
  fig.legend(entries.values(), entries.keys(), fontsize=6, loc='outside right center')
  _save(fig, path)


def _params_range(groups: list[dict]) -> str:
  counts = sorted({g['num_params'] for g in groups})
  return params_text(counts[0]) + ('' if len(counts) == 1 else f'-{params_text(counts[-1])}')


def _plot_vs_m(rows: list[dict], key: str, ylabel: str, path: str, title: str,
               line_name: str) -> None:
  """key vs M for the latent kinds, one line per `line` value; the others as dashed levels.

  With several seeds per point the line joins the best seed's values and every
  seed is a faint dot. Runs that differ from the most common chunk size are left
  out of the lines (a chunk-size probe is read from the table). Legends give the
  parameter counts.
  """
  plt = io_utils.pyplot()
  fig, (ax,) = io_utils.figure(title)
  merged = over_seeds(rows, key)
  seeded = any(len(g['seeds']) > 1 for g in merged)
  latent = [g for g in merged if g['has_latents']]
  chunks = [g['chunk_size'] for g in latent]
  main_chunk = max(set(chunks), key=chunks.count) if chunks else ''
  groups = sorted({g['line'] for g in merged}, key=lambda v: (str(type(v)), v))
  colors = dict(zip(groups, plt.rcParams['axes.prop_cycle'].by_key()['color'] * 4))
  best = ' (best seed)' if seeded else ''
  for line in groups:
    points = sorted(((g['num_latents'], g) for g in latent
                     if g['line'] == line and g['chunk_size'] == main_chunk),
                    key=lambda p: p[0])
    if points:
      kind = latent[0]['attention']
      ax.plot([m for m, _ in points], [g['best'] for _, g in points], 'o-', color=colors[line],
              label=f'{kind}, {line_name}={line}{best}, '
                    f'{_params_range([g for _, g in points])} params')
      if seeded:
        ax.plot([m for m, g in points for _ in g['values']],
                [v for _, g in points for v in g['values']], '.', color=colors[line], alpha=0.35)
    levels = [g for g in merged if not g['has_latents'] and g['line'] == line]
    for g, ls in zip(levels, ['--', ':', '-.', (0, (5, 1)), (0, (1, 3))] * 4):
      ax.axhline(g['best'], color=colors[line], ls=ls,
                 label=f"{g['label']}, {line_name}={line}, {params_text(g['num_params'])} params")
  ax.set_xscale('log', base=2)
  ax.set_xlabel('latents per block M' + (f' (chunk size {main_chunk})' if main_chunk else ''))
  ax.set_ylabel(ylabel)
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7)
  _save(fig, path)
