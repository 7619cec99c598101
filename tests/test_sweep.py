"""Sweeps: run, interrupt, resume, skip finished points, report; printed commands parse back."""

import csv
import json
import os
import signal

import pytest

from latent_flax import sweep_lib
from tests.helpers import Child, write_config_module


def _last_eval(run_dir):
  with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
    return [json.loads(l) for l in f if 'eval_bits_per_byte' in l][-1]['eval_bits_per_byte']


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
  assert (first / 'checkpoints').is_dir() and not sweep_lib.is_done(str(first))
  assert not second.exists()

  child = Child(argv)
  assert child.finish() == 0, child.lines[-20:]
  out = '\n'.join(child.lines)
  assert '[1/2] m=2: resuming' in out and 'Resuming from checkpoint step' in out
  assert '[2/2] m=4: starting' in out
  assert sweep_lib.is_done(str(first)) and sweep_lib.is_done(str(second))

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
  assert (workdir / 'report.md').read_text().count('| causal_latent |') == 2


def test_printed_commands_parse_back_into_the_sweep_points(tmp_path):
  child = Child(['sweep.py', '--sweep=configs/sweep_m_heads.py', f'--workdir={tmp_path}',
                 '--print_commands'])
  assert child.finish() == 0
  commands = [l for l in child.lines if l.startswith('python train.py ')]
  sweep = sweep_lib.load_sweep('configs/sweep_m_heads.py')
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
