"""Evaluate a checkpoint from a training workdir (validation split, or --split=test).

    python eval.py --workdir=/tmp/lf_m64 [--step=600|best] [--num_eval_steps=0]
    python eval.py --workdir=/tmp/lf_m64 --seq_len=4096 --windows=documents --stream_segment=512
    python eval.py --workdir=/tmp/lf_m64 --config.data.name=stdlib_long --num_eval_steps=0

The run's config.json is the config; `--config.<field>=<value>` overrides a field of it
(or of `--config=FILE` when one is given). Fields that only change how the evaluation runs
or what it reads may differ from the run's; a model field is refused in one line.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from latent_flax.system import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional config (default: the workdir's config.json; "
    "--config.<field>=<value> overrides either).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
_STEP = flags.DEFINE_string("step", None,
                            "Checkpoint step: a number, 'latest' (default) or 'best' (the best "
                            "eval metric so far).")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"],
                           "Split to evaluate (test: the data sets that have one).")
_NUM_EVAL_STEPS = flags.DEFINE_integer(
    "num_eval_steps", None, "Validation batches (0 = whole split; default: the config's).")
_SEQ_LEN = flags.DEFINE_integer(
    "seq_len", None, "Evaluate at this window length instead of the training length.")
_WINDOWS = flags.DEFINE_enum(
    "windows", None, ["stream", "documents"],
    "Corpora: 'documents' evaluates each document's first seq_len bytes (no context from "
    "another document); 'stream' windows over the joined split (default: the config's).")
_STREAM_SEGMENT = flags.DEFINE_integer(
    "stream_segment", None, "Feed each window this many tokens at a time, each segment "
    "continuing from the decoding state (same result as one pass; bounded memory for "
    "causal_latent).")
flags.mark_flag_as_required("workdir")


# --config.<field>=<value> given without --config=FILE: applied on top of the workdir's
# config.json (cli.take_config_overrides takes them out of the command line).
_OVERRIDES: list[tuple[str, str]] = []


def main(argv):
  del argv
  from latent_flax.evaluation import runs
  from latent_flax.system import io_utils
  from latent_flax import tasks  # jax and the rest: not needed for --help
  config = cli.config_value(_CONFIG) if _CONFIG.value is not None else None
  if _OVERRIDES:
    config = runs.with_overrides(runs.workdir_config(_WORKDIR.value), _OVERRIDES)
  r = runs.evaluate_checkpoint(_WORKDIR.value, _STEP.value, config,
                                   _NUM_EVAL_STEPS.value, _SPLIT.value, write=False,
                                   seq_len=_SEQ_LEN.value, windows=_WINDOWS.value,
                                   stream_segment=_STREAM_SEGMENT.value)
  task = tasks.get(r['dataset'])
  print('\n'.join(task.describe(r)))
  print(f"  {runs.over(r['tokens'], r['split_tokens'], task.target_unit)} of the {r['split']} "
        f"split: {r['evaluated_windows']:,} of its {r['split_windows']:,} windows"
        + ('' if r['evaluated_windows'] == r['split_windows'] else
           f" (--num_eval_steps={r['num_eval_steps']} batches of {r['global_batch']}; "
           "0 evaluates all)"))
  replaced = os.path.exists(r['path'])
  try:
    io_utils.write_json(r['path'], {k: v for k, v in r.items() if k != 'path'})
  except OSError as e:  # a read-only workdir: the result above is all there is
    cli.fail(f"the result above was not saved: {cli.describe(e)}", code=1)
  png = runs.plot_by_context(r, r['path'][:-len('.json')] + '.png')
  print(f"wrote {r['path']}" + (f" and {png}" if png else '')
        + (" (replacing the earlier result of the same evaluation)" if replaced else ''))


if __name__ == "__main__":
  sys.argv, _OVERRIDES = cli.take_config_overrides(sys.argv)
  cli.run(main)
