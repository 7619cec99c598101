"""Multi-process start-up (jax.distributed) from flags or environment.

--distributed=auto lets JAX detect the cluster (TPU pods, SLURM, Open MPI, Kubernetes and
the other environments jax.distributed knows); --coordinator_address (with
--num_processes and --process_id) sets it up by hand; neither: one process.
"""

from __future__ import annotations

import os

from absl import flags

_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", os.environ.get("LF_DISTRIBUTED", "off"), ["off", "auto"],
    "auto: jax.distributed.initialize() detects the cluster (env LF_DISTRIBUTED).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
    "host:port of process 0 for multi-process training (env JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", int(os.environ.get("JAX_NUM_PROCESSES", "0")) or None,
    "Number of processes (env JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", int(os.environ["JAX_PROCESS_ID"]) if "JAX_PROCESS_ID" in os.environ else None,
    "This process's index (env JAX_PROCESS_ID).")


def initialize() -> None:
  """jax.distributed.initialize as the flags ask; nothing for a single process."""
  import jax  # here, not at the top: `train.py --help` should not wait for it
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value == 'auto':
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:
      raise ValueError(f"--distributed=auto found no cluster to join ({str(e).splitlines()[0]}); "
                       "run without it, or pass --coordinator_address, --num_processes and "
                       "--process_id.") from None
