"""Evaluate a checkpoint from a training workdir (validation split, or --split=test).

    python eval.py --workdir=/tmp/lf_m64 [--step=600] [--num_eval_steps=0]
    python eval.py --workdir=/tmp/lf_m64 --config=configs/m64.py --config.data.name=text_files ...
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from latent_flax import data as data_lib
from latent_flax import eval_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional config (default: the workdir's config.json).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"],
                           "Split to evaluate (test: the data sets that have one).")
_NUM_EVAL_STEPS = flags.DEFINE_integer(
    "num_eval_steps", None, "Validation batches (0 = whole split; default: the config's).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    r = eval_lib.evaluate_checkpoint(_WORKDIR.value, _STEP.value, _CONFIG.value,
                                     _NUM_EVAL_STEPS.value, _SPLIT.value)
  except ValueError as e:
    print(f"eval.py: {e}", file=sys.stderr)
    sys.exit(2)
  if r['dataset'] in data_lib.TASK_FIELDS:
    what = 'examples' if r['dataset'] in data_lib.CLASSIFY_DATASETS else 'answers'
    print(f"step {r['step']}  loss {r['loss']:.4f}  {data_lib.accuracy_label(r['dataset'])} "
          f"{r['accuracy']:.4f}  over "
          f"{r['tokens']:,} {what} of the {r['split']} split of {r['dataset']}")
    for pairs, accuracy in r.get('recall_by_pairs', {}).items():
      print(f"  test set with {pairs:>3s} pairs: recall accuracy {accuracy:.4f}")
  else:
    print(f"step {r['step']}  loss {r['loss']:.4f} nats/byte  bits/byte "
          f"{r['bits_per_byte']:.4f}  over {r['tokens']:,} bytes of {r['dataset']}")
    for bucket, loss in r['loss_by_position'].items():
      print(f"  positions {bucket:>12s}: {loss / 0.6931471805599453:.4f} bits/byte")
  print(f"wrote {r['path']}")


if __name__ == "__main__":
  app.run(main)
