"""Sweeps: a grid of config overrides, one training run per point, run or resumed.

A sweep is a config module (configs/sweeps/) with
    BASE = 'configs/base.py'           # the config file every point overrides
    COMMON = {'num_train_steps': 300}  # overrides shared by every point (optional)
    def get_sweep() -> list[dict]      # one {'model.num_latents': 16, ...} per point
    REPORT = {'metric': 'eval_accuracy', 'lines': 'data.num_kv_pairs'}  # optional
A module with presets takes `--sweep=FILE:NAME`: get_sweep(NAME) then returns a dict
with 'points' and optionally 'common' and 'report', which replace the module's.
Every point is validated before the first one runs. Each point trains with
`python train.py --config=BASE --config.<key>=<value> ...` in its own sub-workdir named
from its overrides, so the same lines can go to a cluster scheduler (`point_commands`), be
submitted as a job array (`submit_sweep`, through submitit: launch.py) or run here one after
another (`run_sweep`). What the points wrote is read back and drawn by report.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

import ml_collections

from latent_flax import config_lib
from latent_flax.experiments import launch
from latent_flax.experiments import report as report_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Sweep:
  base: str                  # config file each point overrides (relative to the repo root)
  common: dict[str, Any]     # overrides shared by all points
  points: list[dict[str, Any]]
  report: dict[str, str] = dataclasses.field(
      default_factory=lambda: dict(report_lib.DEFAULT_REPORT))  # what the report draws


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
  report = {**report_lib.DEFAULT_REPORT, **getattr(module, 'REPORT', {})}
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
  if report['metric'] not in report_lib.METRICS:
    raise ValueError(f"{path}: REPORT['metric']={report['metric']!r} is unknown; use one of "
                     f"{list(report_lib.METRICS)}.")
  return Sweep(module.BASE, common, points, report)


_UNSAFE = re.compile(r'[^A-Za-z0-9_.:+@%-]')  # in a value: '/', ',', '=', spaces, ...
_LONGEST_VALUE = 48                          # characters of a value kept in a name


def _name_value(value: Any) -> str:
  """`value` as it reads in a workdir name: as written where that is safe, else with
  each unsafe character (a path's '/') replaced by '_' and a digest of the value
  appended, so that two values never share a name (and a long one is cut)."""
  text = str(value)
  safe = _UNSAFE.sub('_', text)
  if safe == text and len(text) <= _LONGEST_VALUE:
    return text
  digest = hashlib.sha256(text.encode()).hexdigest()[:8]
  return f"{safe.strip('_')[-_LONGEST_VALUE:]}-{digest}"


def point_name(overrides: dict[str, Any]) -> str:
  """Sub-workdir name in the config arguments' short names, e.g. 'attn=full,m=16,heads=2';
  one folder for any value ('data.path=data_a.txt-<8 hex digits>' for '/data/a.txt')."""
  return ','.join(f"{config_lib.short_name(k)}={_name_value(v)}" for k, v in overrides.items())


def point_config(sweep: Sweep, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config one point trains with, validated; one clear line naming a bad key or value."""
  config = _load_module(os.path.join(REPO, sweep.base) if not os.path.isabs(sweep.base)
                        else sweep.base, 'BASE').get_config()
  for dotted, value in {**sweep.common, **overrides}.items():
    if config_lib.find_field(config, dotted) is None:
      raise ValueError(f"{dotted!r} is not a config field of {sweep.base}.")
    config_lib.set_field(config, dotted, value)
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
    if report_lib.is_done(sub):
      print(f"[{i}/{total}] {point_name(overrides)}: done, skipped", flush=True)
      continue
    action = 'resuming' if os.path.isdir(os.path.join(sub, 'checkpoints')) else 'starting'
    print(f"[{i}/{total}] {point_name(overrides)}: {action}", flush=True)
    rc = _run_forwarding_signals([python] + point_argv(sweep, overrides, workdir), env)
    if rc != 0 or not report_lib.is_done(sub):
      print(f"sweep stopped at point {i}/{total} ({point_name(overrides)}, exit code {rc}); "
            "rerun the same command to resume it.", flush=True)
      return False
    ran += 1
    left = sum(not report_lib.is_done(os.path.join(workdir, point_name(p)))
               for p in sweep.points)
    per_point = (time.time() - started) / ran
    print(f"[{i}/{total}] done; {left} point(s) left, ETA {per_point * left / 60:.1f} min",
          flush=True)
  return True


def submit_sweep(sweep: Sweep, workdir: str, ex, *, nodes: int = 1) -> list:
  """Every unfinished point as one task of a job array on submitit executor `ex`
  (launch.py); validated first, like run_sweep. Returns the submitted jobs."""
  validate_points(sweep)
  os.makedirs(workdir, exist_ok=True)
  tasks, names = [], []
  for i, overrides in enumerate(sweep.points, 1):
    sub = os.path.join(workdir, point_name(overrides))
    if report_lib.is_done(sub):
      print(f"[{i}/{len(sweep.points)}] {point_name(overrides)}: done, skipped", flush=True)
      continue
    argv = point_argv(sweep, overrides, workdir) + (['--distributed=auto'] if nodes > 1 else [])
    tasks.append(launch.PointTask(argv, sub))
    names.append(f"[{i}/{len(sweep.points)}] {point_name(overrides)}")
  log = os.path.join(workdir, 'submitit', 'controllers.log')
  jobs = launch.submit(ex, tasks, controller_log=log) if tasks else []
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
