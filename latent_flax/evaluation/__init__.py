"""Evaluation: parameters scored on a task's sets (evaluator), decoding and streaming through
the fixed-size state (decode), and a training run read back from its workdir (runs)."""
