"""Compare finished or running training runs: one table and the eval curves drawn.

Each run is a train.py workdir (config.json, metrics.jsonl, eval.py's JSON files).
The table has the last periodic eval, eval.py's test-split result where one was
written, speed, memory and wall time; the plots draw the eval metric against steps
and against wall-clock time, which is how a faster model with fewer steps is judged
at an equal budget.
"""

from __future__ import annotations

import json
import os

from latent_flax import config_lib, tasks
from latent_flax.system import io_utils
from latent_flax.attention import registry as attention_registry
from latent_flax.tasks.registry import METRICS


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


def run_costs(metrics: list[dict]) -> dict:
  """Median tokens/s of the logged steps after the first (which includes compilation),
  peak memory and wall time of one run's metrics.jsonl records."""
  speeds = sorted(m['tokens_per_sec'] for m in metrics[1:] if 'tokens_per_sec' in m)
  return dict(tokens_per_sec=speeds[len(speeds) // 2] if speeds else float('nan'),
              peak_memory_mb=max((m.get('peak_memory_mb', 0.0) for m in metrics), default=0.0),
              wall_s=metrics[-1].get('elapsed_s', float('nan')))


def summarize(workdir: str) -> dict:
  """One run's row and curves; ValueError (one line) when workdir is not a run."""
  for name in ('config.json', 'metrics.jsonl'):
    if not os.path.exists(os.path.join(workdir, name)):
      raise ValueError(f"{workdir} has no {name}: pass train.py workdirs.")
  config = config_lib.load_saved_config(workdir)
  metrics = read_metrics(os.path.join(workdir, 'metrics.jsonl'))
  task = tasks.get(config.data.name)
  metric = task.metric
  kind = attention_registry.get(config.model.attention)
  evals = [m for m in metrics if metric in m]
  test = latest_eval_json(workdir, 'test')
  model = config.model
  return dict(
      run=os.path.basename(os.path.normpath(workdir)), attention=model.attention,
      label=kind.label(model),
      num_latents=model.num_latents if kind.has_latents else '',
      num_heads=model.num_heads, metric=metric,
      step=metrics[-1]['step'], num_train_steps=config.num_train_steps,
      examples=metrics[-1]['step'] * _global_batch(metrics, config),
      eval_step=evals[-1]['step'] if evals else None,
      eval=evals[-1][metric] if evals else float('nan'),
      best_eval=(min if task.lower_is_better else max)(
          (m[metric] for m in evals), default=float('nan')),
      test_step=test['step'] if test else None,
      test=(test['accuracy'] if metric == 'eval_accuracy' else test['bits_per_byte'])
      if test else None,
      **run_costs(metrics),
      curve=[(m['step'], m.get('elapsed_s', float('nan')), m[metric]) for m in evals])


def _global_batch(metrics: list[dict], config) -> int:
  """Examples per step, as logged; runs logged before train.py recorded it: tokens/s
  over steps/s over seq_len."""
  for m in metrics:
    if 'global_batch' in m:
      return m['global_batch']
    if m.get('steps_per_sec'):
      return round(m['tokens_per_sec'] / m['steps_per_sec'] / config.data.seq_len)
  return config.per_device_batch_size


def write(rows: list[dict], out_dir: str, title: str) -> list[str]:
  """compare.md, <metric>_vs_step.png and <metric>_vs_time.png in out_dir."""
  metrics = {r['metric'] for r in rows}
  if len(metrics) != 1:
    raise ValueError(f"the runs report different metrics {sorted(metrics)}: compare runs of "
                     "one task.")
  metric = metrics.pop()
  short = metric.replace('eval_', '')
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, n) for n in
           ('compare.md', f'{short}_vs_step.png', f'{short}_vs_time.png')]
  name = short.replace('_', ' ')
  head = ['run', 'attention', 'M', 'heads', 'steps', 'examples seen', f'last eval {name}',
          f'best eval {name}', f'test {name}', 'tokens/s', 'peak memory (MiB)', 'wall (min)']
  lines = [f'# {title}', '', '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    steps = f"{r['step']:,} of {r['num_train_steps']:,}"
    test = '' if r['test'] is None else f"{r['test']:.4f} (step {r['test_step']:,})"
    cells = [r['run'], r['attention'], r['num_latents'], r['num_heads'], steps,
             f"{r['examples']:,}", f"{r['eval']:.4f}", f"{r['best_eval']:.4f}", test,
             f"{r['tokens_per_sec']:,.0f}", f"{r['peak_memory_mb']:,.0f}",
             f"{r['wall_s'] / 60:.1f}"]
    lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
  lines += ['', f'![{name} vs step]({os.path.basename(paths[1])})',
            f'![{name} vs wall-clock time]({os.path.basename(paths[2])})', '']
  with open(paths[0], 'w') as f:
    f.write('\n'.join(lines))
  for path, axis, xlabel in ((paths[1], 0, 'training step'),
                             (paths[2], 1, 'wall-clock time (min)')):
    _plot(rows, axis, xlabel, METRICS[metric][0], path, title)
  return paths


def _plot(rows, axis, xlabel, ylabel, path, title):
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for r in rows:
    xs = [p[axis] / (60 if axis == 1 else 1) for p in r['curve']]
    ax.plot(xs, [p[2] for p in r['curve']], 'o-', label=f"{r['run']} ({r['label']})")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
