"""Compare training runs: a table and eval-metric curves against steps, tokens seen and
wall-clock, each run labelled by its parameter count and the settings that differ.

    python compare.py --workdir=runs/listops_m64 --workdir=runs/listops_full \
        --out=docs/results/listops

Reads each workdir's config.json, metrics.jsonl and eval.py's eval_test_step_S.json
(run `python eval.py --workdir=W --split=test` first for a test column).
"""

from absl import flags

from latent_flax.system import cli
from latent_flax.experiments import report as report_lib

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "A train.py workdir (repeat the flag).")
_OUT = flags.DEFINE_string("out", None, "Directory for compare.md and the PNGs.")
_TITLE = flags.DEFINE_string("title", "Runs compared", "Title of the table and plots.")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv):
  del argv
  rows = [report_lib.summarize(w) for w in _WORKDIRS.value]
  paths = report_lib.write_comparison(rows, _OUT.value, _TITLE.value)
  print(open(paths[0]).read().split('\n![')[0])
  print(f"wrote {', '.join(paths)}")


if __name__ == "__main__":
  cli.run(main)
