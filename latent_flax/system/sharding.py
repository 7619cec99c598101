"""The device mesh of the jit path and what is sharded over it.

config.mesh names three axis sizes (-1 = the devices left):
  data  batch rows, parameters replicated;
  fsdp  batch rows too, and every parameter and optimizer-state leaf split along its
        largest axis that the size divides (FSDP / ZeRO-3: XLA gathers a weight where
        it is used and reduce-scatters its gradient);
  seq   positions of each row: activations are split along the sequence. The causal
        latent block keeps its chunks on their shards; only the O(M*D) prefix
        summaries cross shard boundaries (causal_latent.prefix_scan, the previous
        chunk's summary). Other kinds are left to XLA's partitioner (full attention
        and MLA all-gather keys and values along the sequence).

Modules read the mesh of the trace (jax.set_mesh, which training/parallel.py sets) through
`axis_size` and `constrain`; without one both are no-ops.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

from latent_flax.system.checks import is_int

AXES = ('data', 'fsdp', 'seq')
BATCH = ('data', 'fsdp')  # the axes that split batch rows


def mesh_shape(mesh_config, device_count: int) -> tuple[int, int, int]:
  """(data, fsdp, seq) from config.mesh, -1 filled with the devices left; one line if
  the sizes cannot tile `device_count` devices."""
  mesh_config = mesh_config or {}
  sizes = [mesh_config.get(a, -1 if a == 'data' else 1) for a in AXES]
  for axis, size in zip(AXES, sizes):
    if not is_int(size) or (size < 1 and size != -1):
      raise ValueError(f"config.mesh.{axis}={size!r} must be an integer >= 1, or -1 for the "
                       "devices left.")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh {dict(zip(AXES, sizes))} has more than one -1; give all "
                     "sizes but one.")
  fixed = math.prod(s for s in sizes if s != -1)
  if device_count % fixed or (-1 not in sizes and fixed != device_count):
    raise ValueError(f"config.mesh {dict(zip(AXES, sizes))} does not tile the "
                     f"{device_count} devices; make the sizes multiply to {device_count} "
                     "(or set one to -1).")
  return tuple(device_count // fixed if s == -1 else s for s in sizes)


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """A leaf's split over 'fsdp': along its largest axis that fsdp divides, else none."""
  if fsdp == 1:
    return P()
  axes = [i for i, n in enumerate(shape) if n % fsdp == 0]
  if not axes:
    return P()
  spec = [None] * len(shape)
  spec[max(axes, key=lambda i: shape[i])] = 'fsdp'
  return P(*spec)


def _mesh():
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty else mesh


def axis_size(name: str) -> int:
  """The size of mesh axis `name` in the trace's mesh (1 without one)."""
  mesh = _mesh()
  return dict(mesh.shape).get(name, 1) if mesh is not None else 1


def constrain(x: jax.Array, *spec) -> jax.Array:
  """x laid out as `spec` (a PartitionSpec's entries) in the trace's mesh; a no-op
  without a mesh that has a 'seq' axis larger than 1."""
  if axis_size('seq') == 1:
    return x
  return jax.lax.with_sharding_constraint(x, P(*spec))
