"""Sweeps: run, interrupt, resume, skip finished points, report; printed commands parse back."""

import contextlib
import csv
import importlib.util
import json
import os
import re
import signal
import time

import matplotlib.text
import pytest

from configs import base
from latent_flax import config_lib
from latent_flax.experiments import report as report_lib, sweep as sweep_lib
from latent_flax.system import io_utils
from tests.helpers import Child, write_config_module


def _last_eval(run_dir):
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f if 'eval_bits_per_byte' in l][-1]['eval_bits_per_byte']


@pytest.mark.slow  # runs sweep.py in child processes
def test_two_point_sweep_runs_resumes_after_interruption_and_reports(tmp_path):
  config_path = write_config_module(tmp_path, num_train_steps=8, log_every_steps=1,
                                    checkpoint_every_steps=2, eval_every_steps=4)
  sweep_file = tmp_path / 'two_points.py'
  sweep_file.write_text(f"BASE = {config_path!r}\nCOMMON = {{'model.num_layers': 1}}\n\n"
                        "def get_sweep():\n"
                        "  return [{'model.num_latents': 2}, {'model.num_latents': 4}]\n")
  workdir = tmp_path / 'sweep'
  argv = ['sweep.py', f'--sweep={sweep_file}', f'--workdir={workdir}']
  first, second = (workdir / 'm=2', workdir / 'm=4')

  # Ctrl-C during the first point, as a terminal sends it: to the whole process group.
  child = Child(argv, new_session=True)
  try:
    child.wait_for(r'^step +3/')
    os.killpg(child.proc.pid, signal.SIGINT)
    assert child.finish() == 1
  finally:
    child.kill()
  assert any('sweep stopped at point 1/2' in l for l in child.lines), child.lines[-10:]
  assert (first / 'checkpoints').is_dir() and not report_lib.is_done(str(first))
  assert not second.exists()

  child = Child(argv)
  assert child.finish() == 0, child.lines[-20:]
  out = '\n'.join(child.lines)
  assert '[1/2] m=2: resuming' in out and 'Resuming from checkpoint step' in out
  assert '[2/2] m=4: starting' in out
  assert report_lib.is_done(str(first)) and report_lib.is_done(str(second))

  child = Child(argv)  # everything finished: both skipped, the report rewritten
  assert child.finish() == 0
  assert sum('done, skipped' in l for l in child.lines) == 2
  with open(workdir / 'report.csv') as f:
    rows = {r['run']: r for r in csv.DictReader(f)}
  assert set(rows) == {'m=2', 'm=4'}
  for name, run_dir in (('m=2', first), ('m=4', second)):
    row = rows[name]
    assert float(row['eval_bits_per_byte']) == pytest.approx(_last_eval(run_dir))
    assert int(row['num_latents']) == int(name[2:]) and float(row['tokens_per_sec']) > 0
    assert float(row['wall_s']) > 0 and float(row['peak_memory_mb']) > 0
  assert int(rows['m=4']['num_params']) > int(rows['m=2']['num_params'])
  for png in ('bpb_vs_m.png', 'tokens_per_sec_vs_m.png'):
    assert (workdir / png).stat().st_size > 1000
  report = (workdir / 'report.md').read_text()
  assert report.count('| causal_latent |') == 2
  assert '| eval over (bytes of the split) |' in report  # how much of the split was read
  assert len(re.findall(r'\| [\d,]+ of [\d,]+ \|', report)) == 2, report


@pytest.mark.slow  # runs sweep.py in child processes
def test_printed_commands_parse_back_into_the_sweep_points(tmp_path):
  child = Child(['sweep.py', '--sweep=configs/sweeps/m_heads.py', f'--workdir={tmp_path}',
                 '--print_commands'])
  assert child.finish() == 0
  commands = [l for l in child.lines if l.startswith('python train.py ')]
  sweep = sweep_lib.load_sweep('configs/sweeps/m_heads.py')
  assert len(commands) == len(sweep.points) == 18
  workdirs = set()
  for command, point in zip(commands, sweep.points):
    overrides, workdir = sweep_lib.parse_command(command)
    assert overrides == {**sweep.common, **point}
    assert workdir == os.path.join(str(tmp_path), sweep_lib.point_name(point))
    workdirs.add(workdir)
  assert len(workdirs) == 18


def test_a_missing_or_wrong_sweep_file_is_one_line(tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    sweep_lib.load_sweep(str(tmp_path / 'nope.py'))
  (tmp_path / 'bad.py').write_text('X = 1\n')
  with pytest.raises(ValueError, match='needs BASE'):
    sweep_lib.load_sweep(str(tmp_path / 'bad.py'))


def test_accuracy_report_draws_one_line_per_pair_count(tmp_path):
  """MQAR report: one row per (run, test-set pair count); accuracy vs M, full as reference."""
  from configs import mqar as mqar_config
  runs = {('causal_latent', 4): {'8': 0.9, '32': 0.3}, ('causal_latent', 16): {'8': 1.0, '32': 0.7},
          ('full', 64): {'8': 1.0, '32': 0.99}}
  for (attention, m), by_pairs in runs.items():
    run = tmp_path / f'{attention}_{m}'
    run.mkdir()
    config = mqar_config.get_config(f'attn={attention},m={m}')
    (run / 'config.json').write_text(config.to_json())
    (run / 'metrics.jsonl').write_text(
        json.dumps({'step': 10, 'train_loss': 1.0, 'tokens_per_sec': 100.0}) + '\n'
        + json.dumps({'step': 20, 'train_loss': 0.5, 'tokens_per_sec': 120.0, 'eval_loss': 0.4,
                      'eval_accuracy': by_pairs['32'], 'eval_recall_by_pairs': by_pairs,
                      'elapsed_s': 5.0}) + '\n')
    (run / 'summary.json').write_text('{}')
  sweep = sweep_lib.load_sweep('configs/sweeps/mqar.py:cpu')
  assert sweep.report == {'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'}
  rows = report_lib.collect(str(tmp_path), sweep.report['lines'])
  got = {(r['attention'], r['num_latents'] or 64, r['line']): r['eval_accuracy'] for r in rows}
  assert got == {(a, m, int(p)): acc for (a, m), d in runs.items() for p, acc in d.items()}
  paths = report_lib.write_report(rows, str(tmp_path / 'report'), report=sweep.report)
  assert os.path.basename(paths[2]) == 'accuracy_vs_m.png' and os.path.getsize(paths[2]) > 1000
  table = open(paths[0]).read()
  assert '| pairs |' in table and '| eval accuracy |' in table
  assert table.count('| causal_latent |') == 4 and '| 0.7000 |' in table
  # Runs without the across-chunk recall give no rows for it.
  assert report_lib.collect(str(tmp_path), 'recall_across_chunks_by_pairs') == []


def test_across_chunk_recall_is_reported_per_pair_count(tmp_path):
  from configs import mqar as mqar_config
  run = tmp_path / 'm4'
  run.mkdir()
  (run / 'config.json').write_text(mqar_config.get_config('m=4').to_json())
  evals = [{'step': s, 'eval_loss': 0.4, 'eval_accuracy': a, 'eval_recall_by_pairs': {'8': a},
            'eval_recall_across_chunks_by_pairs': {'8': a / 2}, 'train_loss': 0.5,
            'tokens_per_sec': 100.0} for s, a in ((10, 0.2), (20, 0.8))]
  (run / 'metrics.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in evals))
  rows = report_lib.collect(str(tmp_path), 'recall_across_chunks_by_pairs')
  assert [(r['line'], r['eval_accuracy']) for r in rows] == [(8, 0.4)]
  assert rows[0]['curves']['eval_accuracy'] == [(10, 0.1), (20, 0.4)]
  paths = report_lib.write_report(rows, str(tmp_path / 'report'), title='Sweep x', report={
      'metric': 'eval_accuracy', 'lines': 'recall_across_chunks_by_pairs'})
  assert open(paths[0]).read().startswith('# Sweep x: recall of the answers across chunks\n')


def test_seeds_of_one_point_are_merged_into_best_and_median(tmp_path):
  """Three seeds at M=4, one at M=16: the summary keeps each seed's recall, best and median."""
  from configs import mqar as mqar_config
  runs = {(4, 0): 0.12, (4, 1): 0.72, (4, 2): 0.5, (16, 0): 0.99}
  for (m, seed), acc in runs.items():
    run = tmp_path / f'm={m},seed={seed}'
    run.mkdir()
    config = mqar_config.get_config(f'm={m}')
    config.seed = seed
    (run / 'config.json').write_text(config.to_json())
    evals = [(10, 0.1), (20, acc)]  # the report takes the last; the curve shows both
    (run / 'metrics.jsonl').write_text(''.join(json.dumps(
        {'step': step, 'train_loss': 0.5, 'tokens_per_sec': 100.0 + seed, 'eval_loss': 0.4,
         'eval_accuracy': a, 'eval_recall_by_pairs': {'8': a}, 'elapsed_s': 5.0}) + '\n'
        for step, a in evals))
    (run / 'summary.json').write_text('{}')
  rows = report_lib.collect(str(tmp_path), 'recall_by_pairs')
  assert [(r['num_latents'], r['seed']) for r in rows] == [(4, 0), (4, 1), (4, 2), (16, 0)]
  merged = {g['num_latents']: g for g in report_lib.over_seeds(rows, 'eval_accuracy')}
  assert merged[4]['values'] == [0.12, 0.72, 0.5] and merged[4]['seeds'] == [0, 1, 2]
  assert (merged[4]['best'], merged[4]['median'], merged[16]['best']) == (0.72, 0.5, 0.99)
  assert report_lib._better('eval_bits_per_byte') is min  # lower bits per byte is better
  paths = report_lib.write_report(rows, str(tmp_path / 'report'),
                                 report={'metric': 'eval_accuracy', 'lines': 'recall_by_pairs'})
  table = open(paths[0]).read()
  assert '| seed |' in table
  assert ('| causal_latent | 4 | 32 | 1,500 | 8 | 0.7200 | 0.5000 | '
          '0.1200 (seed 0), 0.7200 (seed 1), 0.5000 (seed 2) |') in table, table
  assert os.path.getsize(paths[2]) > 1000
  # The periodic evals of each run, per test set, drawn against the step.
  assert rows[1]['curves']['eval_accuracy'] == [(10, 0.1), (20, 0.72)]
  assert os.path.basename(paths[4]) == 'accuracy_vs_step.png' and os.path.getsize(paths[4]) > 1000


def test_compare_tables_and_draws_runs_of_one_task(tmp_path, monkeypatch):
  """compare.py's table: last and best periodic eval (and how much of the split the last
  one read), eval.py's test result, examples and tokens seen, parameters; curves against
  steps, tokens seen and wall-clock."""
  from configs import listops_full, listops_m64
  runs = {'latent': (listops_m64, [0.2, 0.38, 0.37], 0.365),
          'full': (listops_full, [0.18, 0.21, 0.19], None)}
  for name, (module, evals, test) in runs.items():
    run = tmp_path / name
    run.mkdir()
    (run / 'config.json').write_text(module.get_config().to_json())
    lines = [{'step': 50, 'train_loss': 2.0, 'steps_per_sec': 0.5, 'tokens_per_sec': 8000.0,
              'peak_memory_mb': 900.0, 'elapsed_s': 100.0}]
    if name == 'full':  # as train.py logs it now; the latent run as older runs did
      lines[0]['global_batch'] = 16
    lines += [{'step': 100 * (i + 1), 'eval_loss': 2.0, 'eval_accuracy': a,
               'elapsed_s': 200.0 * (i + 1)} for i, a in enumerate(evals)]
    if name == 'latent':  # as train.py logs it now: how much of the split each eval read
      lines[-1].update(eval_tokens=160, eval_split_tokens=2000)
    (run / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
    if test is not None:
      for step, value in ((200, 0.1), (300, test)):  # the latest step's file counts
        (run / f'eval_test_step_{step}.json').write_text(
            json.dumps({'step': step, 'accuracy': value, 'split': 'test'}))
  rows = [report_lib.summarize(str(tmp_path / n)) for n in runs]
  latent, full = rows
  assert (latent['eval'], latent['best_eval'], latent['test'], latent['test_step']) == (
      0.37, 0.38, 0.365, 300)
  assert full['test'] is None and full['best_eval'] == 0.21 and full['examples'] == 300 * 16
  assert latent['examples'] == 300 * 8 and latent['wall_s'] == 600.0  # 8 = 8000 / 0.5 / 2000
  assert [v for _, v in latent['curves']['eval_accuracy']] == [0.2, 0.38, 0.37]
  assert (latent['tokens'], full['tokens']) == (300 * 8 * 2000, 300 * 16 * 2000)
  assert latent['num_params'] > full['num_params'] > 0  # the latent one has its latents
  drawn, save = [], report_lib._save
  def keep_texts(fig, path):
    drawn.append([t.get_text() for t in fig.findobj(matplotlib.text.Text)])
    save(fig, path)
  monkeypatch.setattr(report_lib, '_save', keep_texts)
  paths = report_lib.write_comparison(rows, str(tmp_path / 'out'), 'ListOps')
  for texts in drawn:  # the legend says what each run's evaluations read
    assert any(t.startswith('latent: ') and t.endswith('; eval over 160 of 2,000 examples')
               for t in texts), texts
    assert any(t.startswith('full: ') and 'eval over' not in t for t in texts), texts
  table = open(paths[0]).read()
  row = (f"| latent | latent | 64 | 4 | {latent['num_params']:,} | 300 of 800 | 2,400 | "
         "4,800,000 | 0.3700 | 160 of 2,000 examples | 0.3800 | 0.3650 (step 300) |")
  assert row in table, table
  assert '| params |' in table and f"| {full['num_params']:,} |" in table
  assert [os.path.basename(p) for p in paths[1:]] == [
      'accuracy_vs_step.png', 'accuracy_vs_tokens.png', 'accuracy_vs_time.png']
  assert all(os.path.getsize(p) > 1000 for p in paths[1:])
  with pytest.raises(ValueError, match='has no config.json'):
    report_lib.summarize(str(tmp_path / 'out'))


def _lm_run(path, overrides: dict, records: list[dict]):
  """A workdir as train.py leaves it: base config with `overrides` and these records."""
  config = base.get_config()
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  path.mkdir()
  (path / 'config.json').write_text(config.to_json())
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  return config


def test_compare_names_what_differs_and_counts_tokens_across_a_batch_change(tmp_path,
                                                                            monkeypatch):
  """Legends name every field that differs (heads, sequence length, the kind's own), never
  where files went; tokens seen follow the batch each segment of a run logged."""
  evals = lambda *steps: [{'step': s, 'eval_loss': 1.0, 'eval_bits_per_byte': 3.0 - s / 100,
                           'eval_accuracy': 0.3, 'elapsed_s': 6.0 * s} for s in steps]
  log = lambda step, batch: {'step': step, 'train_loss': 2.0, 'steps_per_sec': 1.0,
                             'tokens_per_sec': 512.0 * batch, 'global_batch': batch}
  runs = {
      'a': {'model.num_heads': 4},
      'b': {'model.num_heads': 8, 'log_every_steps': 5, 'data.cache_dir': '/elsewhere'},
      'c': {'model.attention': 'full', 'data.seq_len': 1024},
      'd': {'model.num_latents': 16, 'learning_rate': 1e-3},
  }
  configs = []
  for name, overrides in runs.items():
    batch_after = 16 if name == 'b' else 8  # b resumed on twice the devices at step 10
    configs.append(_lm_run(tmp_path / name, overrides,
                           [log(10, 8)] + evals(10) + [log(20, batch_after)] + evals(20)))
  assert report_lib.differing_fields(configs) == [
      'model.num_heads', 'data.seq_len', 'learning_rate']
  assert report_lib.run_labels(configs) == [
      'causal_latent M=64 C=128, heads=4 seq_len=512 lr=0.003',
      'causal_latent M=64 C=128, heads=8 seq_len=512 lr=0.003',
      'full, heads=4 seq_len=1024 lr=0.003',
      'causal_latent M=16 C=128, heads=4 seq_len=512 lr=0.001']
  rows = [report_lib.summarize(str(tmp_path / n)) for n in runs]
  assert rows[1]['tokens'] == (10 * 8 + 10 * 16) * 512 and rows[0]['tokens'] == 20 * 8 * 512
  assert rows[2]['tokens'] == 20 * 8 * 1024
  assert rows[1]['clock'][10] == {'examples': 80, 'tokens': 80 * 512, 'elapsed_s': 60.0}
  paths = report_lib.write_comparison(rows, str(tmp_path / 'out'), 'LM runs')
  table = open(paths[0]).read()
  for r, label in zip(rows, report_lib.run_labels(configs)):
    assert f"| {r['num_params']:,} |" in table and table.count(f'| {label} |') == 1, table
  # Heads change no parameter; M changes the count by the latents (4 layers of M x 128).
  assert rows[0]['num_params'] == rows[1]['num_params'] > rows[2]['num_params']
  assert rows[0]['num_params'] - rows[3]['num_params'] == 4 * (64 - 16) * 128

  # The same runs as a sweep drawn by heads: one legend for all panels names every run once,
  # by what differs besides the panels' field.
  figures = {}
  monkeypatch.setattr(report_lib, '_save', lambda fig, path: figures.setdefault(
      os.path.basename(path), fig))
  report_lib.write_report(report_lib.collect(str(tmp_path)), str(tmp_path / 'sweep'))
  legend, = figures['bpb_vs_step.png'].legends
  params = [report_lib.params_text(r['num_params']) for r in rows]
  assert [t.get_text() for t in legend.get_texts()] == [
      f'causal_latent M=16 C=128, seq_len=512 lr=0.001 ({params[3]} params)',
      f'causal_latent M=64 C=128, seq_len=512 lr=0.003 ({params[0]} params)',
      f'full, seq_len=1024 lr=0.003 ({params[2]} params)']
  levels = [t.get_text() for t in figures['bpb_vs_m.png'].axes[0].get_legend().get_texts()]
  assert f'full, num_heads=4, {params[2]} params' in levels
  for fig in figures.values():
    io_utils.pyplot().close(fig)


def test_a_long_plot_title_is_wrapped_inside_the_figure():
  title = ('Sweep configs/sweeps/context_gain.py:stdlib_long_time: recall of the answers '
           'whose key-value pair lies in an earlier chunk, by pairs in the test set')
  for title, panels in ((title, 1), (title + '\nhaystack books, 2 per cell', 2)):
    fig, _ = io_utils.figure(title, panels)
    fig.canvas.draw()
    shown, = [t for t in fig.findobj(matplotlib.text.Text)
              if t.get_text().replace('\n', ' ') == title.replace('\n', ' ')]
    box = shown.get_window_extent()
    assert shown.get_text().count('\n') > title.count('\n')
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1
    assert shown.get_text().endswith('\nhaystack books, 2 per cell') == (panels == 2)


def test_config_fields_by_dotted_path():
  config = base.get_config()
  config_lib.set_field(config, 'model.num_heads', 8)
  assert config.model.num_heads == 8 == config_lib.get_field(config, 'model.num_heads')
  assert config_lib.get_field(config, 'mesh.seq') == 1 and config_lib.get_field(config, 'seed') == 0
  assert config_lib.get_field(config, 'model.no_such_field', None) is None
  for bad in ('model.no_such_field', 'no_such_section.num_heads', 'seed.x'):
    with pytest.raises(ValueError, match=f"^'{bad}' is not a config field"):
      config_lib.set_field(config, bad, 1)
    with pytest.raises(ValueError, match=f"^'{bad}' is not a config field"):
      config_lib.get_field(config, bad)
  with pytest.raises(ValueError, match=r"^model.num_heads='x' does not fit the field's type"):
    config_lib.set_field(config, 'model.num_heads', 'x')
  flat = config_lib.flat_fields(config)
  assert flat['data.seq_len'] == 512 and flat['model.num_heads'] == 8 and 'model' not in flat

def _shipped_sweeps():
  """Every sweep module in configs/sweeps/, once per preset where it has presets."""
  paths = []
  for name in sorted(os.listdir('configs/sweeps')):
    if name.endswith('.py') and not name.startswith('_'):
      path = os.path.join('configs', 'sweeps', name)
      spec = importlib.util.spec_from_file_location('_shipped', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      paths += [f'{path}:{p}' for p in getattr(module, 'PRESETS', {})] or [path]
  return paths


@pytest.mark.parametrize('path', _shipped_sweeps())
def test_every_point_of_every_shipped_sweep_is_a_valid_config(path):
  """A typo or an impossible value in a sweep fails here, not hours into the sweep."""
  sweep = sweep_lib.load_sweep(path)
  sweep_lib.validate_points(sweep)  # raises with the point's name on the first bad one
  assert len(sweep.points) >= 2


def test_an_invalid_point_stops_the_sweep_before_anything_runs(tmp_path):
  config_path = write_config_module(tmp_path)
  sweep_file = tmp_path / 'bad_point.py'
  sweep_file.write_text(f"BASE = {config_path!r}\n\n"
                        "def get_sweep():\n"
                        "  return [{'model.num_latents': 2}, {'model.num_heads': 3},\n"
                        "          {'model.no_such_field': 1}]\n")
  sweep = sweep_lib.load_sweep(str(sweep_file))
  with pytest.raises(ValueError, match=r'point 2/3 \(heads=3\): .*not divisible by num_heads=3'):
    sweep_lib.run_sweep(sweep, str(tmp_path / 'sweep'))
  assert not (tmp_path / 'sweep').exists()
  sweep.points[1] = {'model.num_heads': 2}
  with pytest.raises(ValueError, match=r"point 3/3 .*'model.no_such_field' is not a config field"):
    sweep_lib.validate_points(sweep)
  (tmp_path / 'syntax.py').write_text('BASE = (\n')
  with pytest.raises(ValueError, match=r'syntax.py does not load \(line \d+\): SyntaxError'):
    sweep_lib.load_sweep(str(tmp_path / 'syntax.py'))
  with pytest.raises(ValueError, match='has presets'):
    sweep_lib.load_sweep('configs/sweeps/mqar.py:nope')


@pytest.mark.slow  # runs sweep.py in child processes
def test_sweep_as_a_job_array_through_submitit_and_a_requeued_point_resumes(tmp_path):
  config_path = write_config_module(tmp_path, num_train_steps=4, log_every_steps=2,
                                    checkpoint_every_steps=2, eval_every_steps=4)
  sweep_file = tmp_path / 'two_points.py'
  sweep_file.write_text(f"BASE = {config_path!r}\nCOMMON = {{'model.num_layers': 1}}\n\n"
                        "def get_sweep():\n"
                        "  return [{'model.num_latents': 2}, {'model.num_latents': 4}]\n")
  workdir = tmp_path / 'sweep'
  child = Child(['sweep.py', f'--sweep={sweep_file}', f'--workdir={workdir}',
                 '--launcher=submitit_local', '--slurm_time_min=20'])
  assert child.finish() == 0, child.lines[-20:]
  out = '\n'.join(child.lines)
  assert '[1/2] m=2: submitted as job' in out and '[2/2] m=4: submitted as job' in out
  assert all(report_lib.is_done(str(workdir / name)) for name in ('m=2', 'm=4'))
  assert (workdir / 'report.csv').exists()

  # Preempted (submitit's signal, as Slurm sends it): train.py saves its step, the task
  # is requeued and resumes from the point's workdir.
  from latent_flax.experiments import launch
  sweep = sweep_lib.load_sweep(str(sweep_file))
  sweep = sweep_lib.Sweep(sweep.base, {**sweep.common, 'num_train_steps': 40}, sweep.points)
  point = os.path.join(str(workdir), 'long')
  argv = sweep_lib.point_argv(sweep, sweep.points[0], str(workdir))[:-1] + [
      f'--workdir={point}']
  ex = launch.executor('submitit_local', str(tmp_path / 'jobs'), timeout_min=20)
  job, = launch.submit(ex, [launch.PointTask(argv, point)])
  deadline = time.time() + 300
  while time.time() < deadline and not os.path.isdir(os.path.join(point, 'checkpoints', '4')):
    time.sleep(0.5)
  # The preemption signal to the task, as Slurm (and the local controller at a
  # timeout) sends it: the controller's child runs the task.
  controller = job._process.pid
  task_pid, = map(int, open(f'/proc/{controller}/task/{controller}/children').read().split())
  os.kill(task_pid, signal.SIGUSR2)
  summary = job.result()
  assert summary['step'] == 40
  log = open(job.paths.stdout).read()
  resumed = re.search(r'Resuming from checkpoint step (\d+)', log)
  assert resumed and 4 <= int(resumed.group(1)) < 40, log[-2000:]


def test_point_names_are_one_safe_folder_for_any_value():
  values = ['/data/a.txt', '/data/a_txt', 'data/a.txt', '/other/a.txt', 'a b,c=d', '../x',
            'x' * 300, '/']
  names = [sweep_lib.point_name({'data.path': v}) for v in values]
  assert len(set(names)) == len(values), names  # one workdir each
  for name in names:
    assert re.fullmatch(r'data\.path=[A-Za-z0-9_.:+@%-]+', name) and len(name) < 80, name
  # A name that was safe stays as it was (the workdirs of sweeps run before).
  point = {'model.attention': 'causal_latent', 'model.num_latents': 16, 'learning_rate': 0.003,
           'data.name': 'tfds:tiny_shakespeare', 'model.latent_decay': 'multiscale'}
  assert sweep_lib.point_name(point) == ('attn=causal_latent,m=16,lr=0.003,'
                                         'data.name=tfds:tiny_shakespeare,decay=multiscale')


@pytest.mark.slow  # runs sweep.py in child processes
def test_a_sweep_over_paths_runs_each_point_in_its_own_folder_and_reports_it(tmp_path):
  config_path = write_config_module(tmp_path, num_train_steps=4, log_every_steps=2,
                                    checkpoint_every_steps=4, eval_every_steps=4)
  corpus = (tmp_path / 'corpus.txt').read_text()
  paths = []
  for folder in ('a', 'b'):  # the same file name in two folders
    (tmp_path / folder).mkdir()
    (tmp_path / folder / 'corpus.txt').write_text(corpus)
    paths.append(str(tmp_path / folder / 'corpus.txt'))
  sweep_file = tmp_path / 'paths.py'
  sweep_file.write_text(f"BASE = {config_path!r}\n\n"
                        f"def get_sweep():\n  return [{{'data.path': p}} for p in {paths!r}]\n")
  workdir = tmp_path / 'sweep'
  child = Child(['sweep.py', f'--sweep={sweep_file}', f'--workdir={workdir}'])
  assert child.finish() == 0, child.lines[-20:]
  names = [sweep_lib.point_name({'data.path': p}) for p in paths]
  assert all(report_lib.is_done(str(workdir / n)) for n in names)
  with open(workdir / 'report.csv') as f:
    assert sorted(r['run'] for r in csv.DictReader(f)) == sorted(names)


@pytest.mark.slow  # a sweep.py process
def test_slurm_where_there_is_none_is_one_line_before_anything_is_written(tmp_path):
  sweep_file = tmp_path / 'one_point.py'
  sweep_file.write_text("BASE = 'configs/base.py'\n\n"
                        "def get_sweep():\n  return [{'model.num_latents': 2}]\n")
  child = Child(['sweep.py', f'--sweep={sweep_file}', f'--workdir={tmp_path / "sweep"}',
                 '--launcher=slurm'], extra_env={'PATH': str(tmp_path)})  # no sbatch, srun
  assert child.finish(timeout=300) == 2
  assert child.lines == ['sweep.py: --launcher=slurm: Slurm is not available here (sbatch and '
                         'srun not on PATH); run the sweep where Slurm is (a cluster\'s login '
                         'node), or use --launcher=submitit_local (jobs on this machine) or '
                         'local.'], child.lines
  assert not (tmp_path / 'sweep').exists()


def _processes_of(workdir) -> dict[int, str]:
  """pid -> command line of the processes started for a sweep in `workdir` (its submitit
  controllers, their tasks and the tasks' train.py)."""
  found = {}
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
      continue
    if str(workdir) in cmd and int(pid) != os.getpid():
      found[int(pid)] = cmd
  return found


def _jobs_state(workdir) -> str:
  """What a stopped submitit_local sweep left (for a failure's message): the processes
  still running from its folder and the tails of its logs."""
  logs = {p.name: p.read_text()[-2000:] for p in sorted((workdir / 'submitit').glob('*'))
          if p.is_file() and p.suffix in ('.out', '.err', '.log')}
  return '\n'.join(['processes still running:']
                   + [f'{pid} {cmd[:300]}' for pid, cmd in _processes_of(workdir).items()]
                   + [f'--- {k}\n{v}' for k, v in logs.items()])


@pytest.mark.slow  # runs sweep.py, whose job runs train.py
def test_sigterm_to_a_submitit_local_sweep_stops_its_jobs_and_says_so(tmp_path):
  from latent_flax.training import workdir_lock
  config_path = write_config_module(tmp_path, num_train_steps=100_000, log_every_steps=1,
                                    checkpoint_every_steps=50_000, eval_every_steps=50_000)
  sweep_file = tmp_path / 'one_point.py'
  sweep_file.write_text(f"BASE = {config_path!r}\n\n"
                        "def get_sweep():\n  return [{'model.num_latents': 2}]\n")
  workdir = tmp_path / 'sweep'
  point = workdir / 'm=2'
  # Started as a background job is (SIGINT ignored, which its children would inherit):
  # submitit cancels a local job by SIGINT.
  child = Child(['sweep.py', f'--sweep={sweep_file}', f'--workdir={workdir}',
                 '--launcher=submitit_local', '--slurm_time_min=20'], ignore_sigint=True)
  try:
    deadline = time.time() + 300
    while time.time() < deadline and not (point / 'metrics.jsonl').exists():
      time.sleep(0.5)
    assert (point / 'metrics.jsonl').exists(), child.lines[-20:]  # the job is training
    child.proc.send_signal(signal.SIGTERM)
    assert child.finish(timeout=600) == 128 + signal.SIGTERM  # launch.wait gives 300 s
  finally:
    child.kill()
    left = _jobs_state(workdir)  # for a failure's message, before the orphans are killed
    for pid in _processes_of(workdir):  # they must not train on through the rest of the suite
      with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
  said = [l for l in child.lines if l.startswith('Stopped by SIGTERM')]
  assert len(said) == 1 and 'cancelled 1 running job(s)' in said[0], child.lines[-10:]
  assert 'still running' not in said[0], left
  assert not any('Traceback' in l for l in child.lines), child.lines
  # No trainer is left, and it saved the step it stopped at: the same command resumes.
  assert workdir_lock.wait_released(str(point), 0)
  saved = [int(d) for d in os.listdir(point / 'checkpoints') if d.isdigit()]
  assert saved and 0 < max(saved) < 50_000
  logs = ''.join(p.read_text() for p in (workdir / 'submitit').glob('*_log.out'))
  assert f'Received SIGTERM: saved checkpoint step {max(saved)} ' in logs
