"""Placing state and batches on devices and running the steps: pmap or jit, one step function.

parallelism='pmap': `jax.pmap` over the local devices, gradients summed by psum;
the state is one copy per local device. parallelism='jit': `jax.jit` over a 1-D
'data' mesh of all devices, batches sharded along it, the state replicated.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from latent_flax import optim, steps


class Parallel:
  """Places state and batches on devices and runs the steps, by pmap or by jit."""

  def __init__(self, kind: str, model, config):
    self.kind = kind
    self.model = model
    self.devices = jax.local_devices()
    self.mesh = jax.make_mesh((jax.device_count(),), ('data',),
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self.local_stack = NamedSharding(jax.sharding.Mesh(np.array(self.devices), ('local',)),
                                     P('local'))
    schedule = optim.learning_rate_schedule(config)
    if kind == 'pmap':
      self._as_pmap_output = jax.pmap(lambda tree: tree, axis_name='batch')
      self._train = jax.pmap(
          functools.partial(steps.train_step, axis_name='batch', schedule=schedule),
          axis_name='batch', donate_argnums=(0,))
      self._eval = jax.pmap(
          functools.partial(steps.eval_step, apply_fn=model.apply, axis_name='batch'),
          axis_name='batch')
    else:
      self._train = jax.jit(functools.partial(steps.train_step, axis_name=None,
                                              schedule=schedule),
                            in_shardings=(self.replicated, self.batch_sharding, self.replicated),
                            out_shardings=(self.replicated, self.replicated),
                            donate_argnums=(0,))
      self._eval = jax.jit(functools.partial(steps.eval_step, apply_fn=model.apply,
                                             axis_name=None),
                           in_shardings=(self.replicated, self.batch_sharding),
                           out_shardings=self.replicated)

  def put_state(self, state_global: steps.TrainState) -> steps.TrainState:
    """From a replicated global state (as initialised or restored) to the step's layout."""
    if self.kind == 'pmap':
      # Through an identity pmap, so the first step sees the sharding its own outputs
      # have and the step is compiled once, not twice.
      return self._as_pmap_output(jax.tree.map(
          lambda x: self._replicate(np.asarray(x.addressable_data(0))), state_global))
    return state_global

  def global_state(self, state: steps.TrainState) -> steps.TrainState:
    """The state as replicated global arrays, for checkpoints and evaluation outside."""
    if self.kind == 'pmap':  # one copy per local device -> one global replicated array
      def gather(x):
        shards = [s.data.reshape(x.shape[1:]) for s in x.addressable_shards]
        return jax.make_array_from_single_device_arrays(x.shape[1:], self.replicated, shards)
      return jax.tree.map(gather, state)
    return state

  def _replicate(self, x):
    """One copy per local device along a new leading axis (pmap's layout)."""
    return jax.device_put(np.broadcast_to(x, (len(self.devices),) + np.shape(x)),
                          self.local_stack)

  def _shard(self, batch: dict):
    if self.kind == 'pmap':
      n = len(self.devices)
      return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

  def put_rng(self, rng: jax.Array) -> jax.Array:
    """The step's random key in the step's layout (one copy per device for pmap)."""
    if self.kind == 'pmap':
      return jax.random.wrap_key_data(self._replicate(jax.random.key_data(rng)))
    return rng

  def train_step(self, state, batch, rng):
    """rng as given by put_rng."""
    return self._train(state, self._shard(batch), rng)

  def eval_step(self, params, batch):
    return self._eval(params, self._shard(batch))

  def first(self, tree):
    """Host values of replicated outputs (this process's first copy)."""
    if self.kind == 'pmap':
      return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
