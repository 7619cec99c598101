"""Continue a prompt with a trained checkpoint.

    python generate.py --workdir=runs/m64 --prompt='def main(' --max_new_tokens=300
    python generate.py --workdir=runs/m64 --prompt='import ' --temperature=0   # greedy
"""

import sys

from absl import flags

from latent_flax.system import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
_PROMPT = flags.DEFINE_string("prompt", "def ", "Text to continue (UTF-8 bytes are the tokens).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Bytes to generate per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely bytes; 0 = all.")
_TOP_P = flags.DEFINE_float("top_p", 0.95, "Nucleus: smallest set with this probability; 1 = all.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Continuations, generated as one batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same text.")
_STEP = flags.DEFINE_string("step", None, "Checkpoint step: a number, 'latest' (default) or "
                            "'best'.")
flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  from latent_flax.evaluation import decode, runs  # jax and the rest: not needed for --help
  sampling = decode.Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
  r = runs.sample_from_checkpoint(_WORKDIR.value, _PROMPT.value, _MAX_NEW_TOKENS.value,
                                  sampling, seed=_SEED.value, num_samples=_NUM_SAMPLES.value,
                                  step=_STEP.value)
  for i, text in enumerate(r['samples']):
    print(f"--- sample {i} (step {r['step']}) ---\n{r['prompt']}{text}")
  print(f"--- {r['tokens_per_s']:.1f} bytes/s including compilation; decoding state "
        f"{r['state_bytes'] / 2**20:.2f} MiB", file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
