"""Placing state and batches on devices and running the steps: jit or pmap, one step function.

parallelism='jit' (the default): `jax.jit` over the (data, fsdp, seq) mesh of
config.mesh (system/sharding.py): batch rows split over data and fsdp, positions over seq,
state leaves split over fsdp; XLA inserts the collectives. parallelism='pmap':
`jax.pmap` over the local devices, gradients summed by psum, one copy of the state per
local device (data parallelism only).

Each process reads the rows of the global batch its devices hold (`data_share`); with a
seq axis across processes several processes read the same rows and each places the
positions of its own devices.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from latent_flax import model as model_lib
from latent_flax.training import optim, steps
from latent_flax.system import sharding


class Parallel:
  """Places state and batches on devices and runs the steps, by jit or by pmap."""

  def __init__(self, kind: str, model, config, mesh=None, devices=None, carry_batch: int = 0):
    """mesh: axis sizes instead of config.mesh's (eval: {'data': -1}); devices: the
    devices it tiles (default all; benchmarks compare meshes on fewer); carry_batch: the
    global batch of a run that carries state across windows (config.carry_state), else 0."""
    if carry_batch and kind != 'jit':
      raise ValueError("config.carry_state needs config.parallelism='jit'.")
    self.kind = kind
    self.model = model
    self.carry_batch = carry_batch
    self.devices = jax.local_devices()
    mesh_devices = jax.devices() if devices is None else list(devices)
    data, fsdp, seq = sharding.mesh_shape(config.get('mesh') if mesh is None else mesh,
                                          len(mesh_devices))
    self.mesh = jax.make_mesh((data, fsdp, seq), sharding.AXES, devices=mesh_devices,
                              axis_types=(jax.sharding.AxisType.Auto,) * 3)
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(sharding.BATCH, 'seq'))
    self.row_sharding = NamedSharding(self.mesh, P(sharding.BATCH))
    self.data_share = self._data_share(data * fsdp)
    self.local_stack = NamedSharding(jax.sharding.Mesh(np.array(self.devices), ('local',)),
                                     P('local'))
    self.state_shardings = None  # set by shard_state_like (the jit path)
    self._schedule = optim.learning_rate_schedule(config)
    if kind == 'pmap':
      self._as_pmap_output = jax.pmap(lambda tree: tree, axis_name='batch')
      self._train = jax.pmap(
          functools.partial(steps.train_step, axis_name='batch', schedule=self._schedule),
          axis_name='batch', donate_argnums=(0,))
      self._eval = jax.pmap(
          functools.partial(steps.eval_step, apply_fn=model.apply, axis_name='batch'),
          axis_name='batch')
    else:
      self._eval = jax.jit(functools.partial(steps.eval_step, apply_fn=model.apply,
                                             axis_name=None), out_shardings=self.replicated)

  def _data_share(self, rows: int) -> tuple[int, int]:
    """(index, count): this process reads share `index` of `count` equal shares of the
    batch rows (count 1 when a seq axis spans processes and all read every row)."""
    starts = sorted({index[0].start or 0 for index in
                     self.row_sharding.addressable_devices_indices_map((rows,)).values()})
    width = len(starts)
    if starts != list(range(starts[0], starts[0] + width)) or starts[0] % width:
      raise ValueError(f"this process's devices hold batch rows {starts} of {rows}, not one "
                       "block; reorder config.mesh so that data and fsdp span the processes.")
    return starts[0] // width, rows // width

  def shard_state_like(self, abstract_state) -> Any:
    """The state's shardings (each leaf split over fsdp as sharding.fsdp_spec says, or
    replicated), kept for the jit steps; `abstract_state` is a tree of shapes."""
    fsdp = dict(self.mesh.shape)['fsdp']
    self.state_shardings = jax.tree.map(
        lambda s: NamedSharding(self.mesh, sharding.fsdp_spec(s.shape, fsdp)), abstract_state)
    self._leaf_shardings = jax.tree.leaves(self.state_shardings)
    if self.kind == 'jit':
      def train(state, batch, rng):
        new_state, metrics = steps.train_step(state, batch, rng, axis_name=None,
                                              schedule=self._schedule)
        return self.lay_out(new_state), metrics
      self._train = jax.jit(train, donate_argnums=(0,))
      fresh = model_lib.fresh_carry(self.model.cfg, 1)
      if self.carry_batch and fresh is not None:
        fresh_rows = jax.tree.map(lambda x: jnp.repeat(x, self.carry_batch, 0), fresh)

        def train_carry(state, carry, batch, rng):
          new_state, carry, metrics = steps.carry_train_step(
              state, carry, batch, rng, fresh=fresh_rows, schedule=self._schedule)
          return self.lay_out(new_state), self.place_carry(carry), metrics
        self._train_carry = jax.jit(train_carry, donate_argnums=(0, 1))
    return self.state_shardings

  def fresh_carry(self):
    """Every row's carried state as at a document's start, placed by rows."""
    # Made by one jit, so that no two leaves share a buffer (the step donates them all).
    return jax.jit(lambda: model_lib.fresh_carry(self.model.cfg, self.carry_batch),
                   out_shardings=self.row_sharding)()

  def place_carry(self, carry, place=jax.lax.with_sharding_constraint):
    """The carried state split by rows like the batch (inside jit by default)."""
    return jax.tree.map(lambda x: place(x, self.row_sharding), carry)

  def lay_out(self, state, place=jax.lax.with_sharding_constraint):
    """`state` (any TrainState: its optimizer object may be another instance than the one
    shard_state_like saw) in the state shardings, leaf by leaf; inside jit by default,
    place=jax.device_put outside."""
    leaves, treedef = jax.tree.flatten(state)
    return jax.tree.unflatten(treedef, [place(x, s) for x, s in
                                        zip(leaves, self._leaf_shardings)])

  def lower_train_step(self, abstract_state, batch_shapes: dict):
    """The jit train step lowered for shapes alone (its compiled memory and HLO are what
    tests and benchmarks read): `abstract_state` as checkpoint.abstract_state gives,
    `batch_shapes` {name: (shape, dtype)} of the global batch."""
    state = self.lay_out(abstract_state, lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                          sharding=s))
    batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self._sharding_of(k, len(shape)))
             for k, (shape, dtype) in batch_shapes.items()}
    key = jax.eval_shape(lambda: jax.random.key(0))
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=self.replicated)
    with jax.set_mesh(self.mesh):
      if 'start' in batch and self.carry_batch:  # the step that carries state (carry_state)
        carry = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                            sharding=self.row_sharding),
                             jax.eval_shape(lambda: model_lib.fresh_carry(self.model.cfg,
                                                                          self.carry_batch)))
        return self._train_carry.lower(state, carry, batch, rng)
      return self._train.lower(state, batch, rng)

  def put_state(self, state_global: steps.TrainState) -> steps.TrainState:
    """From a replicated global state (as initialised or restored) to the step's layout."""
    if self.kind == 'pmap':
      # Through an identity pmap, so the first step sees the sharding its own outputs
      # have and the step is compiled once, not twice.
      return self._as_pmap_output(jax.tree.map(
          lambda x: self._replicate(np.asarray(x.addressable_data(0))), state_global))
    return self.lay_out(state_global, jax.device_put)

  def global_state(self, state: steps.TrainState) -> steps.TrainState:
    """The state as global arrays (pmap's copies joined into one), for checkpoints."""
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
    return {k: self._place_rows(x, self._sharding_of(k, x.ndim)) for k, x in batch.items()}

  def _sharding_of(self, key: str, ndim: int) -> NamedSharding:
    """A batch array's layout: split by rows, and positions over seq; 'start' (a flag per
    row, or per row and window: [rows, K]) and other per-row arrays by rows only."""
    return self.batch_sharding if ndim >= 2 and key != 'start' else self.row_sharding

  def _place_rows(self, x: np.ndarray, where: NamedSharding) -> jax.Array:
    """This process's share of the batch rows -> a global array laid out as `where` says,
    each local device given its rows (and positions)."""
    index, count = self.data_share
    global_shape = (x.shape[0] * count,) + x.shape[1:]
    row0 = index * x.shape[0]
    pieces = []
    for device, idx in where.addressable_devices_indices_map(global_shape).items():
      rows = idx[0].indices(global_shape[0])
      local = (slice(rows[0] - row0, rows[1] - row0),) + tuple(idx[1:])
      pieces.append(jax.device_put(x[local], device))
    return jax.make_array_from_single_device_arrays(global_shape, where, pieces)

  def put_rng(self, rng: jax.Array) -> jax.Array:
    """The step's random key in the step's layout (one copy per device for pmap)."""
    if self.kind == 'pmap':
      return jax.random.wrap_key_data(self._replicate(jax.random.key_data(rng)))
    data = np.asarray(jax.random.key_data(rng))  # the same in every process
    return jax.random.wrap_key_data(
        jax.make_array_from_callback(data.shape, self.replicated, lambda index: data[index]))

  def train_step(self, state, batch, rng):
    """rng as given by put_rng."""
    with self._mesh_context():
      return self._train(state, self._shard(batch), rng)

  def carry_train_step(self, state, carry, batch, rng):
    """(state, carry, metrics) of steps.carry_train_step; carry as fresh_carry places it."""
    with self._mesh_context():
      return self._train_carry(state, carry, self._shard(batch), rng)

  def eval_step(self, params, batch):
    with self._mesh_context():
      return self._eval(params, self._shard(batch))

  def _mesh_context(self):
    """jit: the mesh as the trace's context (the modules' sharding.constrain reads it);
    pmap brings its own."""
    return jax.set_mesh(self.mesh) if self.kind == 'jit' else contextlib.nullcontext()

  def first(self, tree):
    """Host values of replicated outputs (this process's first copy)."""
    if self.kind == 'pmap':
      return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)).reshape(x.shape[1:]), tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
