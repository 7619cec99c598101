"""Train a latent-attention language model.

    python train.py --config=configs/m64.py --workdir=/tmp/lf_m64
    python train.py --config=configs/m64.py:heads=8 --config.num_train_steps=100 --workdir=...
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from latent_flax import distributed, train_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # progress is printed by the loop itself
  distributed.initialize()
  try:
    train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FloatingPointError) as e:
    print(f"train.py: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
