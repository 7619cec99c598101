"""Train a latent-attention language model (or a task's model) in a workdir.

    python train.py --config=configs/m64.py --workdir=runs/m64
    python train.py --config=configs/m64.py:heads=8 --config.num_train_steps=100 --workdir=...
"""

from latent_flax.system import hugepages

if __name__ == "__main__":
  hugepages.ensure()  # before jax is imported: glibc reads its tunables at process start

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from latent_flax.system import cli, distributed  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  config = cli.config_value(_CONFIG)
  from configs import base
  from latent_flax import trainer  # jax and the rest: not needed for --help
  distributed.initialize()
  trainer.train_and_evaluate(config, _WORKDIR.value, defaults=base.get_config())


if __name__ == "__main__":
  cli.run(main)
