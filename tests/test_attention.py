"""Exact properties of the three attention kinds (design sections 1-2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_flax import attention
from latent_flax.attention import registry

B, D, H, M, C = 2, 32, 4, 8, 8


def _x(n, seed=0, scale=1.0):
  return scale * jax.random.normal(jax.random.key(seed), (B, n, D), jnp.float32)


def _causal(chunk=C, **kw):
  return attention.CausalLatentAttention(num_latents=M, num_heads=H, chunk_size=chunk, **kw)


def _init(module, x):
  return module.init(jax.random.key(1), x)


# ---------------------------------------------------------------- reference --
def _ln(p, x, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + eps) * p['scale'] + p['bias']


def _mha(p, q_in, kv_in, key_mask=None, bias_HTS=None):
  q = jnp.einsum('...td,dhk->...thk', q_in, p['query']['kernel']) + p['query']['bias']
  k = jnp.einsum('...sd,dhk->...shk', kv_in, p['key']['kernel']) + p['key']['bias']
  v = jnp.einsum('...sd,dhk->...shk', kv_in, p['value']['kernel']) + p['value']['bias']
  s = jnp.einsum('...thk,...shk->...hts', q, k) / np.sqrt(q.shape[-1])
  if bias_HTS is not None:
    s = s + bias_HTS[None]
  if key_mask is not None:
    s = jnp.where(key_mask[:, None, None, :], s, -jnp.inf)
  w = jax.nn.softmax(s, axis=-1)
  o = jnp.einsum('...hts,...shk->...thk', w, v)
  return jnp.einsum('...thk,hkd->...td', o, p['out']['kernel']) + p['out']['bias']


@jax.numpy_rank_promotion('allow')
def _reference_latent(p, x, key_mask=None):
  """The design's three equations in plain jnp."""
  lat = jnp.broadcast_to(p['latents'], (x.shape[0],) + p['latents'].shape)
  l1 = lat + _mha(p['compress'], _ln(p['ln_latents_compress'], lat),
                  _ln(p['ln_tokens_compress'], x), key_mask)
  h = _ln(p['ln_refine'], l1)
  l2 = l1 + _mha(p['refine'], h, h)
  return x + _mha(p['expand'], _ln(p['ln_tokens_expand'], x), _ln(p['ln_latents_expand'], l2))


def test_bidirectional_block_equals_reference_equations():
  x = _x(24)
  mod = attention.LatentAttention(num_latents=M, num_heads=H)
  params = _init(mod, x)['params']
  np.testing.assert_allclose(mod.apply({'params': params}, x), _reference_latent(params, x),
                             atol=1e-5, rtol=1e-5)


def test_bidirectional_padding_is_never_a_key():
  x = _x(24)
  mask = jnp.arange(24)[None, :] < jnp.array([[24], [17]])
  mod = attention.LatentAttention(num_latents=M, num_heads=H)
  params = _init(mod, x)['params']
  y = mod.apply({'params': params}, x, mask)
  np.testing.assert_allclose(y, _reference_latent(params, x, mask), atol=1e-5, rtol=1e-5)
  garbage = x.at[1, 17:].set(100.0)
  y2 = mod.apply({'params': params}, garbage, mask)
  np.testing.assert_allclose(y2[:, :17], y[:, :17], atol=1e-6)


def test_bidirectional_block_leaks_the_future():
  x = _x(24)
  mod = attention.LatentAttention(num_latents=M, num_heads=H)
  params = _init(mod, x)['params']
  y = mod.apply({'params': params}, x)
  y2 = mod.apply({'params': params}, x.at[:, 20].add(_x(1, seed=9)[:, 0]))
  assert np.abs(np.asarray(y2[:, :20] - y[:, :20])).max() > 1e-4


# ---------------------------------------------------------------- causality --
@pytest.mark.parametrize('decay', ['none', 'multiscale'])
@pytest.mark.parametrize('p', [16, 23, 19, 0, 3])  # chunk start, chunk end, mid-chunk, first chunk
def test_causal_block_perturbation_is_bit_exact(p, decay):
  x = _x(37)
  mod = _causal(latent_decay=decay)
  variables = _init(mod, x)
  y = mod.apply(variables, x)
  x2 = x.at[:, p:].add(jax.random.normal(jax.random.key(7), x[:, p:].shape) * 3.0)
  y2 = mod.apply(variables, x2)
  np.testing.assert_array_equal(np.asarray(y2[:, :p]), np.asarray(y[:, :p]))
  assert np.abs(np.asarray(y2[:, p] - y[:, p])).max() > 1e-3  # position p itself does see p


@pytest.mark.parametrize('kind', registry.names(causal=True) + ['causal_latent:multiscale'])
def test_causal_gradient_to_the_future_is_exactly_zero(kind):
  from latent_flax import model as model_lib
  kind, _, decay = kind.partition(':')
  cfg = model_lib.ModelConfig(attention=kind, num_latents=4, num_heads=2, chunk_size=4,
                              emb_dim=16, mlp_dim=32, num_layers=2,
                              **({'latent_decay': decay} if decay else {}))
  x = jax.random.normal(jax.random.key(0), (1, 14, 16))

  class Stack(model_lib.nn.Module):
    @model_lib.nn.compact
    def __call__(self, x):
      for i in range(cfg.num_layers):
        x = model_lib.Block(cfg, name=f'b{i}')(x, True)
      return x

  stack = Stack()
  params = stack.init(jax.random.key(1), x)
  jac = jax.jit(jax.jacrev(lambda x: stack.apply(params, x)))(x)[0, :, :, 0]  # [N, D, N', D']
  jac = np.asarray(jac)
  for p in range(1, 14):
    assert not np.any(jac[:p, :, p:, :]), f"outputs before {p} depend on inputs at/after {p}"
  assert np.all(np.abs(jac[np.arange(14), :, np.arange(14), :]).sum((-1, -2)) > 0)
  assert np.abs(jac[9, :, 2, :]).sum() > 0  # a past token in an earlier chunk is used


def test_prefix_of_sequence_gives_same_outputs():
  """Odd lengths and N < chunk_size: outputs on x[:n] are those of the first n on x."""
  x = _x(37)
  mod = _causal(chunk=16)
  variables = _init(mod, x)
  apply = jax.jit(mod.apply)
  y = apply(variables, x)
  for n in (5, 16, 17, 30):
    np.testing.assert_allclose(apply(variables, x[:, :n]), y[:, :n], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------- scan vs brute force --
def test_prefix_scan_equals_bidirectional_steps_on_each_prefix():
  n = 40  # K = 5
  x = _x(n, scale=3.0)
  causal = _causal()
  params = _init(causal, x)['params']
  _, inter = causal.apply({'params': params}, x, mutable=['intermediates'])
  s_BKMD = inter['intermediates']['compressed'][0]
  r_BKMD = inter['intermediates']['refined'][0]
  bidir = attention.LatentAttention(num_latents=M, num_heads=H)
  for k in range(n // C):
    _, ref = bidir.apply({'params': params}, x[:, :(k + 1) * C], mutable=['intermediates'])
    np.testing.assert_allclose(s_BKMD[:, k], ref['intermediates']['compressed'][0],
                               atol=1e-5, rtol=1e-5, err_msg=f'S_{k}')
    np.testing.assert_allclose(r_BKMD[:, k], ref['intermediates']['refined'][0],
                               atol=1e-5, rtol=1e-5, err_msg=f'R_{k}')


@jax.numpy_rank_promotion('allow')
def test_decayed_prefix_scan_equals_brute_force_softmax_with_decay():
  """S_k with decay = L + MHA_compress over chunks 0..k with each score lowered by
  lambda_hm * (distance in tokens from the prefix's last token) / C, in plain jnp."""
  n = 40  # K = 5
  x = _x(n, scale=3.0)
  causal = _causal(latent_decay='multiscale')
  params = _init(causal, x)['params']
  np.testing.assert_allclose(  # initial half-lives: 1 ... 256 chunks, spread over the latents
      np.log(2) / np.exp(params['log_decay'][0, [0, -1]]), [1.0, 256.0], rtol=1e-5)
  params = {**params, 'log_decay': jax.random.normal(jax.random.key(5), (H, M)) - 0.5}
  _, inter = causal.apply({'params': params}, x, mutable=['intermediates'])
  s_BKMD = inter['intermediates']['compressed'][0]
  lam_HM = jnp.exp(params['log_decay'])
  lat = jnp.broadcast_to(params['latents'], (B,) + params['latents'].shape)
  for k in range(n // C):
    end = (k + 1) * C
    bias_HMS = -lam_HM[:, :, None] * (end - 1 - jnp.arange(end))[None, None] / C
    ref = lat + _mha(params['compress'], _ln(params['ln_latents_compress'], lat),
                     _ln(params['ln_tokens_compress'], x[:, :end]), bias_HTS=bias_HMS)
    np.testing.assert_allclose(s_BKMD[:, k], ref, atol=1e-5, rtol=1e-5, err_msg=f'S_{k}')
  grads = jax.grad(lambda p: causal.apply({'params': p}, x).sum())(params)
  assert np.all(np.abs(np.asarray(grads['log_decay'])) > 0)  # every decay is learned


def test_combine_is_associative_and_matches_softmax():
  key = jax.random.key(3)
  s = 30.0 * jax.random.normal(key, (12,))
  v = jax.random.normal(jax.random.key(4), (12, 3))
  parts = []
  for i in range(0, 12, 4):
    m = s[i:i + 4].max()
    p = jnp.exp(s[i:i + 4] - m)
    parts.append((m, p.sum(), (p[:, None] * v[i:i + 4]).sum(0)))
  left = attention.combine_softmax_triples(attention.combine_softmax_triples(parts[0], parts[1]), parts[2])
  right = attention.combine_softmax_triples(parts[0], attention.combine_softmax_triples(parts[1], parts[2]))
  expected = jax.nn.softmax(s) @ v
  np.testing.assert_allclose(left[2] / left[1], expected, rtol=1e-5)
  np.testing.assert_allclose(right[2] / right[1], expected, rtol=1e-5)


# ----------------------------------------------------------------- numerics --
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_no_nan_at_32k_tokens_with_large_inputs(dtype):
  n = 32_768
  x = 1e3 * jax.random.normal(jax.random.key(0), (1, n, 32))
  mod = attention.CausalLatentAttention(num_latents=16, num_heads=2, chunk_size=128, dtype=dtype)
  variables = mod.init(jax.random.key(1), x[:, :256])
  # Blow up the query/key scale so raw scores are huge.
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v * 30.0 if 'kernel' in str(path) and ('query' in str(path) or 'key' in str(path)) else v,
      variables)
  loss = lambda x: jnp.mean(mod.apply(variables, x).astype(jnp.float32) ** 2)
  value, grad = jax.jit(jax.value_and_grad(loss))(x)
  assert np.isfinite(float(value))
  assert np.all(np.isfinite(np.asarray(grad.astype(jnp.float32))))


def test_full_attention_causal_and_bidirectional():
  x = _x(20)
  causal = attention.FullAttention(num_heads=H, causal=True)
  params = _init(causal, x)
  y = causal.apply(params, x)
  y2 = causal.apply(params, x.at[:, 10].add(_x(1, seed=9)[:, 0]))
  np.testing.assert_array_equal(np.asarray(y[:, :10]), np.asarray(y2[:, :10]))
  bidir = attention.FullAttention(num_heads=H, causal=False)
  y3 = bidir.apply(params, x.at[:, 10].add(_x(1, seed=9)[:, 0]))
  assert np.abs(np.asarray(y3[:, :10] - bidir.apply(params, x)[:, :10])).max() > 1e-4


def _residual_shapes(f, *args) -> set[tuple[int, ...]]:
  """Shapes of what the backward pass of f keeps (jax's public print_saved_residuals)."""
  import contextlib
  import io
  import re
  from jax.ad_checkpoint import print_saved_residuals
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    print_saved_residuals(f, *args)
  return {tuple(int(n) for n in dims.split(',') if n)
          for dims in re.findall(r'^\w+\[([\d,]*)\]', out.getvalue(), re.M)}


def test_expand_step_keeps_no_scores_for_the_backward_pass():
  """The backward pass recomputes the expand step's [C, C] and [C, M] scores (jax.checkpoint)
  instead of keeping them; the gradients equal those of the kept form."""
  from latent_flax.attention import prefix_scan
  B, K, H, C, M, d = 1, 4, 2, 8, 3, 4
  rng = np.random.default_rng(0)
  shapes = [(B, K, H, C, d), (B, K, H, M, d), (B, K, H, M, d), (B, K, H, C, d), (B, K, H, C, d)]
  args = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
  loss = lambda f: lambda *a: (f(*a, None, None, False) ** 2).sum()
  scores = {(B, K, H, C, C), (B, K, H, C, M)}
  assert _residual_shapes(loss(prefix_scan._expand), *args) & scores  # kept without it
  assert not _residual_shapes(loss(prefix_scan._expand_recomputed), *args) & scores
  grads = [jax.grad(loss(f), argnums=range(5))(*args)
           for f in (prefix_scan._expand, prefix_scan._expand_recomputed)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), *grads)
