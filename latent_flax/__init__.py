"""latent-flax: latent attention language models in JAX/Flax.

Layers, each importing only from the ones above it (tests/test_layout.py checks this):

  system/       process plumbing: flags and exit codes, config checks, devices and mesh, files
  attention/    the attention kinds, their softmax cores and the registry
  model.py      the byte-level language model and classifier built from attention blocks
  tasks/        data: corpora, MQAR, ListOps, probes; batching; the task registry
  config_lib.py whole experiment configs: validation, argument parsing, names
  training/     optimizer, train state and steps, device placement, checkpoints, metrics
  evaluation/   evaluating parameters, decoding and streaming, reading a run back
  trainer.py    train_and_evaluate: the loop tying training/ and evaluation/ together
  experiments/  sweeps, scheduler launchers, reports across runs
"""
