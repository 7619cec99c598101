"""Retrieval probes of a trained LM: a pass key or bAbI facts hidden at depths of long
documents, retrieved greedily; a grid of lengths x depths as JSON and a heatmap.

    python probe.py --workdir=runs/books_m64 --probe=passkey \\
        --lengths=4096,16384,65536,262144,1048576 --depths=0,0.25,0.5,0.75,1 --samples=8
    python probe.py --workdir=runs/books_full --probe=babi --lengths=4096,16384,65536

Writes <workdir>/probe_<probe>_<haystack>_step_<S>.json and .png (--out: elsewhere), which
sweep.py --report and compare.py read. What is measured: latent_flax/evaluation/retrieval.py.
"""

import shlex
import sys

from absl import flags

from latent_flax.system import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
_PROBE = flags.DEFINE_string("probe", "passkey", "Which probe: passkey or babi.")
_LENGTHS = flags.DEFINE_string("lengths", "4096,16384,65536",
                               "Document lengths in bytes, comma-separated (up to 1048576).")
_DEPTHS = flags.DEFINE_string("depths", "0,0.25,0.5,0.75,1",
                              "Depths of the needle, fractions of the haystack (0 = its start).")
_SAMPLES = flags.DEFINE_integer("samples", 8, "Documents per (length, depth) cell.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the documents (keys, facts, haystack starts).")
_HAYSTACK = flags.DEFINE_string(
    "haystack", None, "'filler' (the classic repeated sentences), or 'validation' / 'test': "
    "that split of the run's corpus (default: validation for a corpus, else filler).")
_SEGMENT = flags.DEFINE_integer(
    "segment", None, "Bytes read at a time through the decoding state (default: the run's "
    "training length).")
_BATCH = flags.DEFINE_integer("batch", 8, "Documents read together.")
_STEP = flags.DEFINE_string("step", None, "Checkpoint step: a number, 'latest' (default) or "
                            "'best'.")
_OUT = flags.DEFINE_string("out", None, "Folder for the JSON and PNG (default: the workdir).")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from latent_flax.evaluation import retrieval  # jax and the rest: not needed for --help
  lengths = retrieval.parse_list(_LENGTHS.value, '--lengths', int)
  depths = retrieval.parse_list(_DEPTHS.value, '--depths', float)

  def progress(row):
    cells = '  '.join(f'{a:.2f}' for a in row['accuracy'])
    print(f"length {row['length']:>9,}: exact retrieval by depth {cells}  "
          f"({row['seconds']:.1f} s)", flush=True)

  r = retrieval.probe_checkpoint(
      _WORKDIR.value, _PROBE.value, lengths, depths, _SAMPLES.value, seed=_SEED.value,
      haystack_name=_HAYSTACK.value, segment=_SEGMENT.value, batch=_BATCH.value,
      step=_STEP.value, out=_OUT.value, progress=progress,
      command=' '.join(['python'] + [shlex.quote(a) for a in sys.argv]))
  print(f"{r['title']}, step {r['step']}, haystack {r['haystack']}: mean exact retrieval "
        f"{r['mean_accuracy']:.3f} (chance {r['chance']:.2g}); wrote {r['path']} and .png")


if __name__ == "__main__":
  cli.run(main)
