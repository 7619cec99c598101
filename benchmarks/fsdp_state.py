"""Train-state bytes per device (parameters and AdamW moments) against the fsdp axis size.

    python benchmarks/fsdp_state.py [--fsdp 1,2,4] [--out benchmarks/results/fsdp_state]

From the state's shapes and the shardings `Parallel.shard_state_like` gives on a mesh
(data = 4 / fsdp, fsdp, seq = 1) of 4 fake CPU devices: nothing is allocated or run, so
the larger models are measured as cheaply as the small ones. Models: configs/m64.py and
two wider causal_latent LMs (D=768, 12 layers; D=2048, 24 layers). Writes <out>.json and
<out>.png.
"""

from __future__ import annotations

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from configs import m64  # noqa: E402
from latent_flax.training import checkpoint
from latent_flax import config_lib
from latent_flax.system import io_utils  # noqa: E402
from latent_flax.training.parallel import Parallel  # noqa: E402

MODELS = {
    'm64': {},
    'D768 x 12': dict(emb_dim=768, mlp_dim=3072, num_heads=12, num_layers=12),
    'D2048 x 24': dict(emb_dim=2048, mlp_dim=8192, num_heads=16, num_layers=24),
}


def state_mb_per_device(model_overrides: dict, fsdp: int) -> tuple[float, int]:
  """(largest per-device state in MiB, parameter count) on mesh (4 / fsdp, fsdp, 1)."""
  config = m64.get_config()
  config.model.update(model_overrides)
  config.mesh.update(data=4 // fsdp, fsdp=fsdp, seq=1)
  model = config_lib.build_model(config)
  parallel = Parallel('jit', model, config)
  target = checkpoint.abstract_state(model, config, parallel.shard_state_like)
  per_device = sum(int(np.prod(s.sharding.shard_shape(s.shape))) * s.dtype.itemsize
                   for s in jax.tree.leaves(target))
  params = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(target.params))
  return per_device / 2**20, params


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--fsdp', default='1,2,4')
  ap.add_argument('--out', default='benchmarks/results/fsdp_state')
  args = ap.parse_args()
  records = []
  for name, overrides in MODELS.items():
    for fsdp in map(int, args.fsdp.split(',')):
      mb, params = state_mb_per_device(overrides, fsdp)
      records.append({'model': name, 'params': params, 'fsdp': fsdp, 'state_mb': mb})
      print(f"{name:<11} {params / 1e6:>8.2f} M parameters  fsdp={fsdp}  "
            f"{mb:>10,.1f} MiB of state per device", flush=True)
  common.write_records(args, records)
  plot(records, args.out + '.png')
  print(f"wrote {args.out}.json and .png")


def plot(records: list[dict], path: str) -> None:
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for name in MODELS:
    rows = [r for r in records if r['model'] == name]
    ax.plot([r['fsdp'] for r in rows], [r['state_mb'] for r in rows], marker='o',
            label=f"{name} ({rows[0]['params'] / 1e6:.1f} M parameters)")
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('fsdp axis size (of 4 devices)')
  ax.set_ylabel('train state per device (MiB)')
  ax.set_title('Parameters + AdamW moments per device')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == '__main__':
  main()
