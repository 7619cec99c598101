"""Training pieces: the optimizer, the train state and step functions, placing them on
devices, checkpoints, metrics and the workdir lock. The loop itself is trainer.py."""
