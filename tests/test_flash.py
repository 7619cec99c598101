"""The blockwise (flash-style) attention core equals the naive one, and is exactly causal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_flax import model as model_lib
from latent_flax.attention import flash, primitives

BLOCK = 16  # small blocks, so that short test sequences span several


def _qkv(b, t, h, d, seed=0, s=None):
  ks = jax.random.split(jax.random.key(seed), 4)
  s = t if s is None else s
  q = jax.random.normal(ks[0], (b, t, h, d))
  k, v = (jax.random.normal(kk, (b, s, h, d)) for kk in ks[1:3])
  return q, k, v, jax.random.normal(ks[3], (b, t, h, d))


def _naive(q, k, v, causal, valid):
  mask = None if valid is None else valid[:, None, None, :]
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)


@pytest.mark.parametrize('t,causal,padded', [
    (64, True, False),   # a multiple of the block
    (37, True, True),    # not a multiple, with key padding
    (37, False, True),   # bidirectional with padding
    (5, True, False),    # shorter than one block
    (50, False, False),
])
def test_values_and_gradients_equal_the_naive_path(t, causal, padded):
  q, k, v, w = _qkv(2, t, 3, 8, seed=t)
  valid = jnp.arange(t)[None] < jnp.array([[t], [t - 6]]) if padded else None
  fast = lambda q, k, v: flash.flash_attention(q, k, v, causal=causal, key_valid_BS=valid,
                                               block=BLOCK)
  slow = lambda q, k, v: _naive(q, k, v, causal, valid)
  np.testing.assert_allclose(fast(q, k, v), slow(q, k, v), atol=1e-5, rtol=1e-5)
  grads = [jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2))(q, k, v)
           for f in (fast, slow)]
  for got, want in zip(*grads):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_causal_by_perturbation_and_gradient_is_exact():
  q, k, v, w = _qkv(1, 48, 2, 8, seed=3)
  f = jax.jit(lambda q, k, v: flash.flash_attention(q, k, v, causal=True, block=BLOCK))
  y = f(q, k, v)
  for p in (16, 23, 31, 0):  # a block start, mid-block, a block end, the first position
    bump = lambda x: x.at[:, p:].add(3.0 * jax.random.normal(jax.random.key(p), x[:, p:].shape))
    y2 = f(bump(q), bump(k), bump(v))
    np.testing.assert_array_equal(np.asarray(y2[:, :p]), np.asarray(y[:, :p]))
    assert np.abs(np.asarray(y2[:, p] - y[:, p])).max() > 1e-3
  p = 21
  grads = jax.grad(lambda q, k, v: jnp.sum(f(q, k, v)[:, :p] * w[:, :p]), argnums=(0, 1, 2))(
      q, k, v)
  for g in grads:
    assert not np.any(np.asarray(g[:, p:])) and np.any(np.asarray(g[:, :p]))


def test_blocks_above_the_diagonal_are_skipped_not_masked():
  # NaN keys and values in the last key block: a skipped block cannot reach earlier
  # query blocks (a masked one would: 0 * NaN is NaN), forward or backward.
  q, k, v, w = _qkv(1, 48, 2, 8, seed=5)
  poison = lambda x: x.at[:, 40:].set(jnp.nan)
  f = lambda q, k, v: flash.flash_attention(q, k, v, causal=True, block=BLOCK)
  y = f(q, poison(k), poison(v))
  np.testing.assert_array_equal(np.asarray(y[:, :32]), np.asarray(f(q, k, v)[:, :32]))
  assert np.isnan(np.asarray(y[:, 40:])).all()
  dq = jax.grad(lambda q: jnp.sum(f(q, poison(k), poison(v))[:, :32] * w[:, :32]))(q)
  assert np.isfinite(np.asarray(dq[:, :32])).all()
  assert [int(flash._num_key_blocks(i, True, BLOCK, BLOCK, 48, 48, 3)) for i in range(3)] == [
      1, 2, 3]


def test_no_n_by_n_array_in_the_compiled_step():
  """At N = 2,048 with 256-blocks, no buffer of the jitted forward+backward holds N x N
  floats per head (the naive path's does)."""
  n, h = 2048, 2
  q, k, v, w = _qkv(1, n, h, 16, seed=1)
  for impl, expect_square in (('blockwise', False), ('naive', True)):
    if impl == 'blockwise':
      f = lambda q, k, v: flash.flash_attention(q, k, v, causal=True, block=256)
    else:
      f = lambda q, k, v: _naive(q, k, v, True, None)
    step = jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * w), argnums=(0, 1, 2)))
    text = step.lower(q, k, v).compile().as_text()
    assert (f'{n},{n}]' in text) == expect_square, impl


@pytest.mark.parametrize('causal', [True, False])
def test_full_attention_module_gives_the_same_model_with_either_core(causal):
  cfgs = {impl: model_lib.ModelConfig(attention='full', num_heads=2, emb_dim=16, mlp_dim=32,
                                      num_layers=2, attention_impl=impl)
          for impl in ('blockwise', 'naive')}
  tokens = jax.random.randint(jax.random.key(0), (2, 600), 0, 256)
  mask = jnp.arange(600)[None] < jnp.array([[600], [333]])
  if causal:
    models = {i: model_lib.build_model(c) for i, c in cfgs.items()}
    params = models['naive'].init(jax.random.key(1), tokens)['params']
    out = {i: m.apply({'params': params}, tokens) for i, m in models.items()}
  else:
    models = {i: model_lib.build_model(c, task='classify', num_classes=4) for i, c in cfgs.items()}
    params = models['naive'].init(jax.random.key(1), tokens, mask)['params']
    out = {i: m.apply({'params': params}, tokens, mask) for i, m in models.items()}
  np.testing.assert_allclose(out['blockwise'], out['naive'], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('impl', ['blockwise', 'cudnn'])
def test_cores_agree_in_bfloat16(impl, causal):
  """Each core on bfloat16 inputs equals the float32 naive path on the same (rounded)
  inputs within bfloat16's resolution, values and gradients: blockwise everywhere, cuDNN's
  fused attention on a GPU (benchmarks/accelerator_check.py runs this there)."""
  if impl == 'cudnn' and jax.default_backend() != 'gpu':
    pytest.skip("cuDNN's fused attention needs a GPU")
  q, k, v, w = (x.astype(jnp.bfloat16) for x in _qkv(2, 128, 4, 64, seed=7))
  core = lambda impl, dtype: lambda q, k, v: primitives.attention_core(
      q.astype(dtype), k.astype(dtype), v.astype(dtype), impl=impl, is_causal=causal
  ).astype(jnp.float32)
  fast, reference = core(impl, jnp.bfloat16), core('naive', jnp.float32)

  def within_bfloat16(got, want):  # 16 units of bfloat16's last place (2^-8) of the scale;
    scale = float(np.max(np.abs(np.asarray(want))))  # blockwise is within 2^-7 on CPU
    err = float(np.max(np.abs(np.asarray(got, np.float32) - np.asarray(want))))
    assert err <= 2 ** -4 * scale, (err, scale)

  within_bfloat16(jax.jit(fast)(q, k, v), reference(q, k, v))
  grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2)))(q, k, v)
           for f in (fast, reference)]
  for got, want in zip(*grads):
    within_bfloat16(got, want)
