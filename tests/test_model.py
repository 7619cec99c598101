"""The byte-level LM: causality end to end, parameters, transforms, config validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from latent_flax import model as model_lib
from latent_flax.attention import registry


def _cfg(**kw):
  cfg = dict(attention='causal_latent', num_latents=4, num_heads=2, chunk_size=8, emb_dim=16,
             mlp_dim=32, num_layers=2)
  cfg.update(kw)
  return model_lib.ModelConfig(**cfg)


def _tokens(n=29, seed=0):
  return jax.random.randint(jax.random.key(seed), (2, n), 0, 256, jnp.int32)


@pytest.mark.parametrize('kind', registry.names(causal=True))
def test_lm_is_causal_bit_exact(kind):
  model = model_lib.build_model(_cfg(attention=kind))
  tokens = _tokens()
  params = model.init(jax.random.key(1), tokens)['params']
  apply = jax.jit(model.apply)
  logits = apply({'params': params}, tokens)
  assert logits.shape == (2, 29, 256) and logits.dtype == jnp.float32
  for p in (8, 15, 20):  # chunk start, chunk end, mid-chunk
    changed = tokens.at[:, p:].set((tokens[:, p:] + 77) % 256)
    logits2 = apply({'params': params}, changed)
    np.testing.assert_array_equal(np.asarray(logits2[:, :p]), np.asarray(logits[:, :p]))
    assert np.abs(np.asarray(logits2[:, p] - logits[:, p])).max() > 1e-4


def test_latents_are_parameters_with_gradients_in_every_block():
  cfg = _cfg(num_layers=3)
  model = model_lib.build_model(cfg)
  tokens = _tokens()
  params = model.init(jax.random.key(1), tokens)['params']
  loss = lambda p: jnp.mean(model.apply({'params': p}, tokens)[:, :-1].max(-1))
  grads = jax.jit(jax.grad(loss))(params)
  for i in range(cfg.num_layers):
    latents = params[f'block_{i}']['attention']['latents']
    assert latents.shape == (cfg.num_latents, cfg.emb_dim)
    assert np.abs(np.asarray(grads[f'block_{i}']['attention']['latents'])).max() > 0


def test_jit_and_remat_agree_with_plain():
  tokens = _tokens()
  plain = model_lib.build_model(_cfg())
  remat = model_lib.build_model(_cfg(remat=True))
  params = plain.init(jax.random.key(1), tokens)['params']

  def loss(model, p):
    logits = model.apply({'params': p}, tokens[:, :-1])
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  eager = plain.apply({'params': params}, tokens)
  np.testing.assert_allclose(jax.jit(plain.apply)({'params': params}, tokens), eager,
                             atol=1e-5, rtol=1e-5)
  value, grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
  v2, g2 = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(params)
  np.testing.assert_allclose(v2, value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-5), g2, grads)


def test_bfloat16_compute_float32_params():
  model = model_lib.build_model(_cfg(dtype='bfloat16'))
  tokens = _tokens(n=40)
  params = model.init(jax.random.key(1), tokens)['params']
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = jax.jit(model.apply)({'params': params}, tokens)
  assert logits.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(logits)))


def test_dropout_only_when_asked():
  model = model_lib.build_model(_cfg(dropout_rate=0.5))
  tokens = _tokens()
  params = model.init(jax.random.key(1), tokens)['params']
  a = model.apply({'params': params}, tokens)
  b = model.apply({'params': params}, tokens)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = model.apply({'params': params}, tokens, deterministic=False,
                  rngs={'dropout': jax.random.key(3)})
  assert np.abs(np.asarray(c - a)).max() > 1e-3


@pytest.mark.parametrize('field,value,message', [
    ('num_latents', 0, 'num_latents=0 must be an integer >= 1'),
    ('num_heads', 3, 'emb_dim=128 is not divisible by num_heads=3'),
    ('chunk_size', 0, 'chunk_size=0 must be an integer >= 1'),
    ('latent_decay', 'exp', "latent_decay='exp' is unknown; use one of ['none', 'multiscale']"),
    ('attention', 'linear', "attention='linear' is unknown"),
    ('attention', 'latent', 'would see tokens after t'),
    ('dtype', 'float16', "dtype='float16' is unknown"),
    ('dropout_rate', 1.5, 'dropout_rate=1.5 must be in [0, 1)'),
    ('input_positions', 'learned', "input_positions='learned' is unknown"),
    ('input_positions', 'sinusoidal', 'takes positions from rotary attention'),
    ('pooling', 'max', "pooling='max' is unknown"),
    ('pooling', 'first', 'a language model does not pool'),
])
def test_bad_model_config_gives_one_clear_line(field, value, message):
  cfg = base.model_config()
  cfg[field] = value
  with pytest.raises(ValueError, match=None) as err:
    model_lib.build_model(cfg)
  assert message in str(err.value) and '\n' not in str(err.value)


def test_bidirectional_config_is_fine_outside_language_modelling():
  cfg = base.model_config()
  cfg.attention = 'latent'
  assert model_lib.validate_model_config(cfg, task='classify').attention == 'latent'
