"""Evaluation: parameters scored on a task's sets (evaluator), decoding and streaming through
the fixed-size state (decode), a training run read back from its workdir (runs), and
probes of what a trained model does inside (probes)."""
