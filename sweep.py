"""Run a sweep of training runs here, print its commands for a cluster, or report it.

    python sweep.py --sweep=configs/sweeps/quick.py --workdir=runs/sweep_quick
    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=/shared/sweep --print_commands
    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=/shared/sweep --launcher=slurm \
        --slurm_partition=gpu --slurm_gpus_per_node=8 --slurm_time_min=720
    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=/shared/sweep --report
    python sweep.py --sweep=configs/sweeps/mqar.py:short --workdir=runs/sweep_mqar_short --report \
        --report_lines=recall_across_chunks_by_pairs --report_dir=runs/sweep_mqar_short/across
"""

import os
import sys

from absl import flags

from latent_flax.system import cli
from latent_flax.experiments import launch, report as report_lib, sweep as sweep_lib

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep module (BASE, COMMON, get_sweep()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
_PRINT = flags.DEFINE_bool("print_commands", False,
                           "Print one train.py command per point instead of running.")
_REPORT = flags.DEFINE_bool("report", False, "Only write the report of what has run so far.")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Where the report goes (default: workdir).")
_REPORT_LINES = flags.DEFINE_string(
    "report_lines", None, "Overrides REPORT['lines'], e.g. recall_across_chunks_by_pairs "
    "(MQAR: recall of answers whose pair lies in an earlier chunk).")
_LAUNCHER = flags.DEFINE_enum(
    "launcher", "local", list(launch.LAUNCHERS),
    "local: the points one after another in this process; slurm: one task of a Slurm job "
    "array per point (submitit; requeued tasks resume); submitit_local: the same jobs with "
    "submitit's local executor, waited for.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", None, "Slurm partition.")
_SLURM_TIME = flags.DEFINE_integer("slurm_time_min", 240, "Time limit per task (minutes); a "
                                   "task that reaches it checkpoints and is requeued.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "GPUs per node and task.")
_SLURM_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", None, "CPUs per task.")
_SLURM_NODES = flags.DEFINE_integer("slurm_nodes", 1, "Nodes per point (>1: multi-host, "
                                    "train.py --distributed=auto).")
_SLURM_ARRAY = flags.DEFINE_integer("slurm_array_parallelism", None,
                                    "At most this many points at once.")
_SLURM_PARAM = flags.DEFINE_multi_string("slurm_param", [], "Further sbatch settings as "
                                         "key=value (e.g. account=myproj, qos=high).")
flags.mark_flags_as_required(["sweep", "workdir"])


def _submit(sweep) -> bool:
  """Submits the sweep; True when its report can be written now (the jobs were waited for)."""
  extra = {}
  for item in _SLURM_PARAM.value:
    key, eq, value = item.partition('=')
    if not eq or not key:
      raise ValueError(f"--slurm_param={item!r} must be key=value (e.g. account=myproj).")
    extra[key] = value
  ex = launch.executor(_LAUNCHER.value, f"{_WORKDIR.value}/submitit",
                       timeout_min=_SLURM_TIME.value, partition=_SLURM_PARTITION.value,
                       gpus_per_node=_SLURM_GPUS.value, cpus_per_task=_SLURM_CPUS.value,
                       nodes=_SLURM_NODES.value, array_parallelism=_SLURM_ARRAY.value,
                       extra=extra)
  jobs = sweep_lib.submit_sweep(sweep, _WORKDIR.value, ex, nodes=_SLURM_NODES.value)
  if _LAUNCHER.value == 'slurm':
    print(f"logs in {_WORKDIR.value}/submitit; when the jobs are done: python sweep.py "
          f"--sweep={_SWEEP.value} --workdir={_WORKDIR.value} --report")
    return False
  workdirs = [os.path.join(_WORKDIR.value, sweep_lib.point_name(p)) for p in sweep.points]
  launch.wait(jobs, workdirs)  # SIGTERM or SIGINT cancels the jobs
  return True


def main(argv):
  del argv
  sweep = sweep_lib.load_sweep(_SWEEP.value)
  if _PRINT.value:
    sweep_lib.validate_points(sweep)
    print('\n'.join(sweep_lib.point_commands(sweep, _WORKDIR.value)))
    return
  finished = True
  if not _REPORT.value and _LAUNCHER.value != 'local':
    if not _submit(sweep):
      return
  elif not _REPORT.value:
    finished = sweep_lib.run_sweep(sweep, _WORKDIR.value)
  report = {**sweep.report, 'lines': _REPORT_LINES.value or sweep.report['lines']}
  rows = report_lib.collect(_WORKDIR.value, report['lines'])
  if not rows:
    raise ValueError(f"{_WORKDIR.value} holds no runs yet (with {report['lines']!r}); "
                     "run the sweep first.")
  paths = report_lib.write_report(rows, _REPORT_DIR.value or _WORKDIR.value,
                                  title=f"Sweep {_SWEEP.value}", report=report)
  print(open(paths[0]).read().split('\n![')[0])
  print(f"wrote {', '.join(paths)}")
  if not finished:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
