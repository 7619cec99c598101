"""DeepSeek's multi-head latent attention (design section 4): the equations, the
compressed cache, the absorbed decode path against the parallel pass and the naive one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_flax.evaluation import decode
from latent_flax import model as model_lib
from latent_flax.attention.mla import MultiHeadLatentAttention

N = 19
SIZES = dict(num_heads=2, kv_lora_rank=8, rope_head_dim=4, head_dim=6, v_head_dim=10)


def _model(**kw):
  cfg = model_lib.ModelConfig(**{**dict(attention='mla', emb_dim=16, mlp_dim=32, num_layers=2),
                                 **SIZES, **kw})
  model = model_lib.build_model(cfg)
  tokens = jax.random.randint(jax.random.key(0), (2, N), 0, model_lib.VOCAB_SIZE)
  return cfg, model, model.init(jax.random.key(1), tokens)['params'], tokens


def _rms(x, scale, eps=1e-6):
  return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * scale


def _rope(x_BTHd, positions_T):
  """Rotate-half RoPE over the last axis, written out: channel pairs (i, i + d/2)."""
  half = x_BTHd.shape[-1] // 2
  angle = positions_T[:, None, None] * 10_000.0 ** (-np.arange(half) / half)  # [T, 1, d/2]
  sin, cos = np.sin(angle), np.cos(angle)
  x1, x2 = x_BTHd[..., :half], x_BTHd[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


@jax.numpy_rank_promotion('allow')
def _reference(p, x, sizes, causal=True):
  """The design's MLA equations in plain jnp (N x N softmax), one layer with its pre-LN."""
  n = x.shape[1]
  mean = x.mean(-1, keepdims=True)
  h = (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-6)
  h = h * p['ln']['scale'] + p['ln']['bias']
  dh, dr = sizes['head_dim'], sizes['rope_head_dim']
  if 'q_up' in p:
    q = jnp.einsum('btc,chk->bthk', _rms(h @ p['q_down'], p['q_norm']['scale']), p['q_up'])
  else:
    q = jnp.einsum('btd,dhk->bthk', h, p['query'])
  c = _rms(h @ p['kv_down'], p['kv_norm']['scale'])
  pos = np.arange(n, dtype=np.float64)
  q = jnp.concatenate([q[..., :dh], _rope(q[..., dh:], pos)], -1)
  k_r = _rope((h @ p['key_rope'])[:, :, None, :], pos)  # one key, broadcast to every head
  k_c = jnp.einsum('bsc,chk->bshk', c, p['key_up'])
  k = jnp.concatenate([k_c, jnp.broadcast_to(k_r, k_c.shape[:3] + (dr,))], -1)
  v = jnp.einsum('bsc,chv->bshv', c, p['value_up'])
  s = jnp.einsum('bthk,bshk->bhts', q, k) / np.sqrt(dh + dr)
  if causal:
    s = jnp.where(np.tril(np.ones((n, n), bool)), s, -jnp.inf)
  o = jnp.einsum('bhts,bshv->bthv', jax.nn.softmax(s, -1), v)
  return x + jnp.einsum('bthv,hvd->btd', o, p['out'])


@pytest.mark.parametrize('q_lora_rank', [0, 12])
@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('impl', ['blockwise', 'naive'])
def test_layer_equals_the_equations(q_lora_rank, causal, impl):
  x = jax.random.normal(jax.random.key(0), (2, N, 16))
  mod = MultiHeadLatentAttention(**SIZES, q_lora_rank=q_lora_rank, causal=causal, impl=impl)
  params = mod.init(jax.random.key(1), x)['params']
  np.testing.assert_allclose(mod.apply({'params': params}, x),
                             _reference(params, x, SIZES, causal), atol=1e-5, rtol=1e-5)


def test_blockwise_and_naive_cores_give_the_same_gradients():
  x = jax.random.normal(jax.random.key(0), (1, 40, 16))
  grads = {}
  for impl in ('blockwise', 'naive'):
    mod = MultiHeadLatentAttention(**SIZES, impl=impl)
    params = mod.init(jax.random.key(1), x)['params']
    grads[impl] = jax.grad(lambda p: jnp.sum(jnp.sin(mod.apply({'params': p}, x))))(params)
  for a, b in zip(jax.tree.leaves(grads['blockwise']), jax.tree.leaves(grads['naive'])):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-5)


def test_the_rotary_key_is_one_key_shared_by_all_heads():
  _, _, params, tokens = _model()
  layer = params['block_0']['attention']
  assert layer['key_rope'].shape == (16, SIZES['rope_head_dim'])  # d_R wide, not H x d_R
  assert layer['query'].shape == (16, 2, SIZES['head_dim'] + SIZES['rope_head_dim'])
  assert layer['key_up'].shape == (SIZES['kv_lora_rank'], 2, SIZES['head_dim'])
  assert not any('bias' in jax.tree_util.keystr(path)
                 for path, _ in jax.tree_util.tree_leaves_with_path(
                     {k: v for k, v in layer.items() if k != 'ln'}))


def _feed(model, params, tokens, prompt_len=1):
  logits, cache = decode.prefill(model, params, tokens[:, :prompt_len], cache_len=N)
  out = [jax.jit(model.apply)({'params': params}, tokens[:, :prompt_len])[:, :-1],
         logits[:, None]]
  for t in range(prompt_len, tokens.shape[1]):
    logits, cache = decode.decode_step(model, params, cache, tokens[:, t])
    out.append(logits[:, None])
  return jnp.concatenate(out, axis=1), cache


@pytest.mark.parametrize('q_lora_rank', [0, 12])
def test_absorbed_decoding_equals_the_parallel_pass_and_the_naive_path(q_lora_rank):
  _, absorbed, params, tokens = _model(q_lora_rank=q_lora_rank)
  _, naive, _, _ = _model(q_lora_rank=q_lora_rank, mla_decode='naive')
  parallel = jax.jit(absorbed.apply)({'params': params}, tokens)
  got_absorbed, cache_a = _feed(absorbed, params, tokens, prompt_len=3)
  got_naive, cache_n = _feed(naive, params, tokens, prompt_len=3)
  np.testing.assert_allclose(got_absorbed, parallel, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got_absorbed, got_naive, atol=1e-5, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(cache_a), jax.tree.leaves(cache_n)):
    np.testing.assert_allclose(a, b, atol=1e-6)  # one cache; only the step's arithmetic differs


def _numbers_per_token(model, params, tokens):
  """Cached numbers per token and sequence, from the cache's arrays (all layers)."""
  sizes = []
  for cache_len in (8, 16):
    _, cache = decode.prefill(model, params, tokens[:, :4], cache_len=cache_len)
    sizes.append(sum(x.size for x in jax.tree.leaves(cache)))
  return (sizes[1] - sizes[0]) / (8 * tokens.shape[0])


def test_the_cache_holds_d_c_plus_d_R_numbers_per_token_and_layer():
  cfg, model, params, tokens = _model(num_layers=3)
  assert _numbers_per_token(model, params, tokens) == 3 * (8 + 4)
  _, cache = decode.prefill(model, params, tokens[:, :4], cache_len=8)
  layer = cache['block_0']['attention']
  assert layer['latent'].shape == (2, 8, 8) and layer['key_rope'].shape == (2, 8, 4)
  full = model_lib.build_model(cfg.__class__(**{**cfg.__dict__, 'attention': 'full'}))
  full_params = full.init(jax.random.key(1), tokens)['params']
  assert _numbers_per_token(full, full_params, tokens) == 3 * 2 * 2 * (16 // 2)  # 2 H d_h


def test_bad_mla_sizes_are_refused_in_one_line():
  for field, value, match in (('rope_head_dim', 5, 'must be even'),
                              ('kv_lora_rank', 0, 'integer >= 1'),
                              ('q_lora_rank', -1, '0 = no query compression'),
                              ('mla_decode', 'fast', 'absorbed')):
    with pytest.raises(ValueError, match=match) as err:
      model_lib.build_model(model_lib.ModelConfig(attention='mla', **{field: value}))
    assert '\n' not in str(err.value)
