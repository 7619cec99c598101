"""Continue a prompt with a trained checkpoint.

    python generate.py --workdir=runs/m64 --prompt='def main(' --max_new_tokens=300
    python generate.py --workdir=runs/m64 --prompt='import ' --temperature=0   # greedy
    python generate.py --workdir=runs/m64 --config.model.attention_impl=naive

Sampling defaults to the model's own distribution (temperature 1, no top-k or top-p
cut): on the small byte models of this repository a lower temperature or a nucleus
(0.8 and 0.95 were the earlier defaults) makes runs of one byte, mostly spaces of
indentation, tens to hundreds of bytes long (tests/test_decode.py bounds them).
The run's config.json is the config; `--config.<field>=<value>` overrides a field of it
(how it runs, not the model: a model field is refused in one line).
"""

import sys

from absl import flags

from latent_flax.system import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints.")
_PROMPT = flags.DEFINE_string("prompt", "def ", "Text to continue (UTF-8 bytes are the tokens).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 256, "Bytes to generate per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 = greedy. Below "
                                  "1 the small models repeat spaces for long runs.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely bytes; 0 = all.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus: smallest set with this probability; "
                            "1 = all (the default: a cut tail makes long runs of spaces).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Continuations, generated as one batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same text.")
_STEP = flags.DEFINE_string("step", None, "Checkpoint step: a number, 'latest' (default) or "
                            "'best'.")
flags.mark_flag_as_required("workdir")

# --config.<field>=<value>: applied on top of the workdir's config.json
# (cli.take_config_overrides takes them out of the command line).
_OVERRIDES: list[tuple[str, str]] = []


def main(argv):
  del argv
  from latent_flax.evaluation import decode, runs  # jax and the rest: not needed for --help
  config = (runs.with_overrides(runs.workdir_config(_WORKDIR.value), _OVERRIDES)
            if _OVERRIDES else None)
  sampling = decode.Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value)
  r = runs.sample_from_checkpoint(_WORKDIR.value, _PROMPT.value, _MAX_NEW_TOKENS.value,
                                  sampling, seed=_SEED.value, num_samples=_NUM_SAMPLES.value,
                                  step=_STEP.value, config=config)
  for i, text in enumerate(r['samples']):
    print(f"--- sample {i} (step {r['step']}) ---\n{r['prompt']}{text}")
  print(f"--- {r['tokens_per_s']:.1f} bytes/s including compilation; decoding state "
        f"{r['state_bytes'] / 2**20:.2f} MiB", file=sys.stderr)


if __name__ == "__main__":
  sys.argv, _OVERRIDES = cli.take_config_overrides(sys.argv)
  cli.run(main)
