"""Run a sweep of training runs here, print its commands for a cluster, or report it.

    python sweep.py --sweep=configs/sweeps/quick.py --workdir=runs/sweep_quick
    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=/shared/sweep --print_commands
    python sweep.py --sweep=configs/sweeps/m_heads.py --workdir=/shared/sweep --report
    python sweep.py --sweep=configs/sweeps/mqar.py:short --workdir=runs/sweep_mqar_short --report \
        --report_lines=recall_across_chunks_by_pairs --report_dir=runs/sweep_mqar_short/across
"""

import sys

from absl import flags

from latent_flax import cli, sweep_lib

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep module (BASE, COMMON, get_sweep()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the runs' workdirs.")
_PRINT = flags.DEFINE_bool("print_commands", False,
                           "Print one train.py command per point instead of running.")
_REPORT = flags.DEFINE_bool("report", False, "Only write the report of what has run so far.")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Where the report goes (default: workdir).")
_REPORT_LINES = flags.DEFINE_string(
    "report_lines", None, "Overrides REPORT['lines'], e.g. recall_across_chunks_by_pairs "
    "(MQAR: recall of answers whose pair lies in an earlier chunk).")
flags.mark_flags_as_required(["sweep", "workdir"])


def main(argv):
  del argv
  sweep = sweep_lib.load_sweep(_SWEEP.value)
  if _PRINT.value:
    sweep_lib.validate_points(sweep)
    print('\n'.join(sweep_lib.point_commands(sweep, _WORKDIR.value)))
    return
  finished = True
  if not _REPORT.value:
    finished = sweep_lib.run_sweep(sweep, _WORKDIR.value)
  report = {**sweep.report, 'lines': _REPORT_LINES.value or sweep.report['lines']}
  rows = sweep_lib.collect(_WORKDIR.value, report['lines'])
  if not rows:
    raise ValueError(f"{_WORKDIR.value} holds no runs yet (with {report['lines']!r}); "
                     "run the sweep first.")
  paths = sweep_lib.write_report(rows, _REPORT_DIR.value or _WORKDIR.value,
                                 title=f"Sweep {_SWEEP.value}", report=report)
  print(open(paths[0]).read().split('\n![')[0])
  print(f"wrote {', '.join(paths)}")
  if not finished:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main)
