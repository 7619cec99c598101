"""The optimizer: which parameters AdamW decays, and the learning-rate schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from latent_flax import model as model_lib
from latent_flax.training import optim

DECAYED = {'kernel', 'embedding'}  # weight matrices and the token embedding
KEPT = {'bias', 'scale', 'latents', 'log_decay'}  # biases, norm scales, latents, latent decays


@pytest.mark.parametrize('arg,task,names', [
    ('attn=causal_latent', 'lm', DECAYED | {'bias', 'scale', 'latents'}),
    ('attn=causal_latent,decay=multiscale', 'lm', DECAYED | KEPT),
    ('attn=full', 'lm', DECAYED | {'bias', 'scale'}),
    ('attn=latent', 'classify', DECAYED | {'bias', 'scale', 'latents'}),
], ids=['causal_latent', 'causal_latent:multiscale', 'full', 'latent'])
def test_a_zero_gradient_step_decays_matrices_and_embeddings_only(arg, task, names):
  config = base.get_config(f'{arg},m=4,heads=2,chunk=8,dim=16,mlp=32,layers=2,steps=10')
  config.update(warmup_steps=2, weight_decay=0.1)
  model = model_lib.build_model(config.model, task=task,
                                num_classes=3 if task == 'classify' else None)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))['params']
  tx = optim.make_optimizer(config)
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  # With a zero gradient Adam's part of the update is 0, so only the decay moves a
  # parameter: p -> p - lr * weight_decay * p. Step 0's learning rate is 0 (warm-up).
  new = params
  for _ in range(2):
    updates, state = jax.jit(tx.update)(zeros, state, new)
    new = jax.tree.map(lambda p, u: p + u, new, updates)
  shrink = float(optim.learning_rate_schedule(config)(1)) * config.weight_decay
  assert shrink > 0

  seen = set()
  for (path, before), after in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                   jax.tree.leaves(new)):
    name, where = path[-1].key, jax.tree_util.keystr(path)
    seen.add(name)
    before, after = np.asarray(before), np.asarray(after)
    if name in DECAYED:
      assert np.all(before != 0), where
      np.testing.assert_allclose(after, before * (1 - shrink), rtol=1e-6, err_msg=where)
    else:
      assert name in KEPT, f'{where}: a parameter the decay rule does not name'
      np.testing.assert_array_equal(after, before, err_msg=where)
  assert seen == names


def test_schedule_warms_up_linearly_then_decays_to_a_tenth():
  config = base.get_config('steps=100,lr=0.002')
  config.warmup_steps = 10
  schedule = optim.learning_rate_schedule(config)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(100)],
                             [0.0, 1e-3, 2e-3, 2e-4], rtol=1e-6)
  assert all(schedule(s) > schedule(s + 1) for s in range(10, 99))
