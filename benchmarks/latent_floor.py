"""How fast the causal latent layer could be if its matrix products were all it did.

    python benchmarks/latent_floor.py [--n 4096] [--out benchmarks/results/latent_floor]

Collects every dot_general in the jaxpr of one causal_latent layer's forward +
backward (D=256, H=4, C=128, batch 1) and times each distinct product alone under
jit (median of `--repeats`), both as the layer writes it and as a plain row-major
(batch,) m x k @ k x n matmul of the same sizes. The faster of the two, summed over
the products, is about the least time this machine needs for the layer's matmuls
with every operand in its best layout: no rewrite of the other ops gets below it.
It also times the layer itself and full attention, so the floor sits next to the
speedup target (full / 15). Writes <out>.json and <out>.png (time per product
kind, stacked, against the layer and the target).
"""

from __future__ import annotations

import argparse
import collections
import math


from benchmarks import common  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.extend import core as jcore  # noqa: E402


def _subjaxprs(value):
  if isinstance(value, jcore.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jcore.Jaxpr):
    yield value
  elif isinstance(value, (list, tuple)):
    for v in value:
      yield from _subjaxprs(v)


def dot_products(jaxpr) -> collections.Counter:
  """(lhs shape, rhs shape, dimension numbers) -> how many times the jaxpr runs it."""
  found = collections.Counter()
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      found[lhs, rhs, eqn.params['dimension_numbers']] += 1
    for value in eqn.params.values():
      for sub in _subjaxprs(value):
        found.update(dot_products(sub))
  return found


def dot_flops(lhs, rhs, dims) -> int:
  (_, rhs_contract), (_, rhs_batch) = dims
  rhs_free = [s for i, s in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return 2 * math.prod(lhs) * math.prod(rhs_free)


def product_kind(dims) -> str:
  """Projections (by a weight: no batch dimensions) or per-chunk / per-head products."""
  return 'batched products' if dims[1][0] else 'projections'


def canonical(lhs, rhs, dims) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The same product as a plain (batch, m, k) @ (batch, k, n) matmul, row-major."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dims
  size = lambda shape, axes: math.prod(shape[i] for i in axes)
  batch, k = size(lhs, lhs_batch), size(lhs, lhs_contract)
  m = math.prod(lhs) // (batch * k)
  n = math.prod(rhs) // (batch * size(rhs, rhs_contract))
  return ((m, k), (k, n)) if batch == 1 else ((batch, m, k), (batch, k, n))


def time_alone(lhs, rhs, dims, repeats: int) -> tuple[float, float]:
  """Seconds for the product as the layer writes it, and as a plain row-major matmul."""
  times = []
  for (a_shape, b_shape), fn in (((lhs, rhs), lambda a, b: jax.lax.dot_general(a, b, dims)),
                                 (canonical(lhs, rhs, dims), jnp.matmul)):
    a = jax.random.normal(jax.random.key(2), a_shape, jnp.float32)
    b = jax.random.normal(jax.random.key(3), b_shape, jnp.float32)
    f = jax.jit(fn)
    times.append(common.time_fn(lambda: f(a, b), repeats)[1])
  return tuple(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--out', default='benchmarks/results/latent_floor')
  common.add_layer_args(ap, one_point=True)
  ap.add_argument('--repeats', type=int, default=7, help='timed runs per product and layer')
  ap.add_argument('--target', type=float, default=15.0, help='speedup over full to mark')
  args = ap.parse_args()

  shape = dict(width=args.width, heads=args.heads, chunk=args.chunk, num_latents=args.num_latents)
  grad_fn, params, x = common.layer_fwd_bwd('causal_latent', args.n, **shape)
  products = dot_products(jax.make_jaxpr(grad_fn)(params, x).jaxpr)
  layer = grad_fn.lower(params, x).compile()  # compiled once: timed and its FLOPs counted
  rows = []
  for i, ((lhs, rhs, dims), count) in enumerate(sorted(products.items(), key=str)):
    as_written, plain = time_alone(lhs, rhs, dims, args.repeats)
    flops = dot_flops(lhs, rhs, dims)
    # The faster of the two: the floor assumes every product gets its best layout.
    rows.append({'lhs': list(lhs), 'rhs': list(rhs), 'dimension_numbers': str(dims),
                 'plain_shapes': [list(s) for s in canonical(lhs, rhs, dims)],
                 'kind': product_kind(dims), 'count': count, 'gflop_each': flops / 1e9,
                 'seconds_as_written': as_written, 'seconds_plain': plain,
                 'seconds_each': min(as_written, plain),
                 'gflop_per_s': flops / min(as_written, plain) / 1e9})
    print(f"[{i + 1}/{len(products)}] {count} x {lhs} . {rhs}: as written "
          f"{as_written * 1e3:6.2f} ms, as a plain matmul {plain * 1e3:6.2f} ms, best "
          f"{rows[-1]['gflop_per_s']:4.0f} GFLOP/s", flush=True)

  by_kind = collections.defaultdict(lambda: {'gflop': 0.0, 'seconds': 0.0})
  for r in rows:
    by_kind[r['kind']]['gflop'] += r['count'] * r['gflop_each']
    by_kind[r['kind']]['seconds'] += r['count'] * r['seconds_each']
  floor_s = sum(k['seconds'] for k in by_kind.values())
  layer_s = common.time_fn(lambda: layer(params, x), args.repeats)[1]
  full_fn, full_params, full_x = common.layer_fwd_bwd('full', args.n, **shape)
  full_s = common.time_fn(lambda: full_fn(full_params, full_x), args.repeats)[1]
  xla_gflop = layer.cost_analysis().get('flops', np.nan) / 1e9
  summary = {'n': args.n, 'num_latents': args.num_latents, 'products_floor_s': floor_s,
             'by_kind': dict(by_kind),
             'layer_s': layer_s, 'full_s': full_s, 'target_s': full_s / args.target,
             'xla_gflop': xla_gflop, 'dot_gflop': sum(k['gflop'] for k in by_kind.values())}
  for name, k in by_kind.items():
    print(f"{name:17s} {k['gflop']:5.1f} GFLOP  {k['seconds'] * 1e3:6.1f} ms alone "
          f"({k['gflop'] / k['seconds']:.0f} GFLOP/s)")
  print(f"products alone {floor_s * 1e3:.0f} ms; the layer {layer_s * 1e3:.0f} ms; "
        f"full {full_s * 1e3:.0f} ms, so {args.target:g}x full is {full_s / args.target * 1e3:.0f} ms; "
        f"the rest of the layer would have {(full_s / args.target - floor_s) * 1e3:.0f} ms "
        f"and takes {(layer_s - floor_s) * 1e3:.0f} ms now")
  common.write_records(args, rows, summary=summary)
  plot(summary, args.out + '.png', args.target)
  print(f"wrote {args.out}.json and {args.out}.png")


def plot(summary: dict, path: str, target: float) -> None:
  from latent_flax.system import io_utils
  plt = io_utils.pyplot()
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  bottom = 0.0
  for name, k in sorted(summary['by_kind'].items()):
    ms = k['seconds'] * 1e3
    ax.bar(0, ms, 0.5, bottom=bottom, label=f"{name}: {k['gflop']:.1f} GFLOP, {ms:.0f} ms alone")
    bottom += ms
  ax.bar(1, summary['layer_s'] * 1e3, 0.5, color='tab:gray',
         label=f"the whole layer: {summary['layer_s'] * 1e3:.0f} ms")
  ax.axhline(summary['target_s'] * 1e3, color='tab:red', ls='--',
             label=f"full / {target:g} = {summary['target_s'] * 1e3:.0f} ms "
                   f"(full {summary['full_s'] * 1e3:.0f} ms)")
  ax.set_xticks([0, 1], ['matrix products alone', 'causal_latent layer'])
  ax.set_ylabel('forward + backward ms')
  ax.legend(fontsize=7, loc='upper left')
  ax.grid(True, axis='y', alpha=0.3)
  common.save_figure(fig, f"causal_latent M={summary['num_latents']} at N={summary['n']}: the matmul floor", path)


if __name__ == '__main__':
  main()
