"""The train state, its initialisation, and the train and eval step functions.

Both steps take a per-device batch with `axis_name` (pmap: sums over devices by
psum) or the global batch with axis_name=None (jit: XLA inserts the reductions);
parallel.py wraps them either way.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from latent_flax import model as model_lib
from latent_flax.training import optim


class TrainState(train_state.TrainState):
  pass


def make_init_fn(model, config: ml_collections.ConfigDict) -> Callable[[jax.Array], TrainState]:
  tx = optim.make_optimizer(config)
  dummy = jnp.zeros((1, min(config.data.seq_len, 2 * config.model.chunk_size)), jnp.int32)

  def init(rng):
    params = model.init(rng, dummy)['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
  return init


def forward(apply_fn, params, batch: dict, **kwargs):
  """Logits of a batch: [B, N, V] per position (LM) or [B, K] per example (classifier)."""
  extra = (batch['mask'],) if 'mask' in batch else ()
  return apply_fn({'params': params}, batch['inputs'], *extra, **kwargs)


def weighted_ce(logits, batch):
  """Cross-entropy and correct predictions, both times the weights ([B, N] or [B])."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
  correct = (jnp.argmax(logits, axis=-1) == batch['targets']).astype(jnp.float32)
  return ce * batch['weights'], correct * batch['weights']


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, axis_name: str | None,
               schedule: optax.Schedule):
  """One optimizer step on a (per-device or global) batch. Loss is the weighted mean."""
  rng = jax.random.fold_in(rng, state.step)
  weight_sum = jnp.sum(batch['weights'])
  if axis_name:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    weight_sum = jax.lax.psum(weight_sum, axis_name)
  weight_sum = jnp.maximum(weight_sum, 1.0)

  def loss_fn(params):
    logits = forward(state.apply_fn, params, batch, deterministic=False, rngs={'dropout': rng})
    ce, correct = weighted_ce(logits, batch)
    return jnp.sum(ce) / weight_sum, jnp.sum(correct) / weight_sum

  (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  if axis_name:
    loss, accuracy, grads = jax.lax.psum((loss, accuracy, grads), axis_name)
  metrics = {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.tree.norm(grads),
             'learning_rate': schedule(state.step)}
  return state.apply_gradients(grads=grads), metrics


def carry_train_step(state: TrainState, carry, batch: dict, rng: jax.Array, *, fresh,
                     schedule: optax.Schedule):
  """train_step for a model that reads documents in order (config.carry_state, jit only):
  `carry`, the attention state each row carried out of its previous window, is reset to
  `fresh` in rows whose batch['start'] is set, read by this window, and the state it
  leaves is returned for the next step. No gradient crosses a step: the carry enters as
  a constant and leaves through stop_gradient.

  K windows per step (config.carry_windows; batch['start'] [rows, K], the other arrays
  the K windows side by side, as DocumentStream.next_windows gives them): they are read
  in turn, each from the state the one before left (reset where flagged), and the loss,
  their mean over all weighted targets, is differentiated through the states between
  them: truncated backpropagation through time over K windows."""
  rng = jax.random.fold_in(rng, state.step)
  starts = batch['start'] if batch['start'].ndim == 2 else batch['start'][:, None]
  count = starts.shape[1]
  n = batch['inputs'].shape[1] // count
  weight_sum = jnp.maximum(jnp.sum(batch['weights']), 1.0)

  def loss_fn(params):
    state_k, ce_sum, correct_sum = carry, 0.0, 0.0
    for k in range(count):
      window = {key: batch[key][:, k * n:(k + 1) * n] for key in ('inputs', 'targets', 'weights')}
      state_k = model_lib.reset_carry(state_k, fresh, starts[:, k])
      logits, state_k = state.apply_fn(
          {'params': params}, window['inputs'], deterministic=False, carry=state_k,
          rngs={'dropout': rng if count == 1 else jax.random.fold_in(rng, k)})
      ce, correct = weighted_ce(logits, window)
      ce_sum, correct_sum = ce_sum + jnp.sum(ce), correct_sum + jnp.sum(correct)
    return ce_sum / weight_sum, (correct_sum / weight_sum, state_k)

  (loss, (accuracy, next_carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.tree.norm(grads),
             'learning_rate': schedule(state.step)}
  return state.apply_gradients(grads=grads), jax.lax.stop_gradient(next_carry), metrics


def eval_step(params, batch: dict, *, apply_fn, axis_name: str | None):
  """Sums of loss, correct predictions and weight, in total and (LM) per position.

  Each further weight `weights_<name>` in the batch (a subset of the weighted
  targets, such as MQAR's answers across chunks) adds correct_<name>_sum and
  weight_<name>_sum from the same pass.
  """
  ce, correct = weighted_ce(forward(apply_fn, params, batch), batch)
  sums = {'loss_sum': jnp.sum(ce), 'correct_sum': jnp.sum(correct),
          'weight_sum': jnp.sum(batch['weights'])}
  for key in batch:
    if key.startswith('weights_'):
      name = key[len('weights_'):]
      sums[f'correct_{name}_sum'] = jnp.sum(correct * batch[key])
      sums[f'weight_{name}_sum'] = jnp.sum(batch[key])
  if ce.ndim == 2:  # a target per position
    sums.update(loss_by_pos=jnp.sum(ce, axis=0), weight_by_pos=jnp.sum(batch['weights'], 0))
  if axis_name:
    sums = jax.lax.psum(sums, axis_name)
  return sums
