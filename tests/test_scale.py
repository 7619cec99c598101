"""Scale-out on 4 fake devices and 2 local processes: the mesh (data, fsdp, seq) gives the
losses of the data-parallel run, splits state and activations, and restores onto another
mesh shape; sequence parallelism across two processes equals one process."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_flax.training import checkpoint, steps
from latent_flax import config_lib, trainer
from latent_flax.system import sharding
from latent_flax.attention import causal_latent
from latent_flax.training.parallel import Parallel
from tests import helpers

STEPS = 4


def _run(tmp_path, name, mesh, attention='causal_latent', per_device=2, steps=STEPS, **kw):
  """Trains the tiny config on `mesh` (data, fsdp, seq) with global batch 8; the train
  loss of every step and the workdir."""
  config = helpers.tiny_config(tmp_path, attention=attention, num_train_steps=steps,
                               log_every_steps=1, eval_every_steps=steps,
                               checkpoint_every_steps=2, per_device_batch_size=per_device,
                               **kw)
  config.mesh.update(data=mesh[0], fsdp=mesh[1], seq=mesh[2])
  workdir = tmp_path / name
  trainer.train_and_evaluate(config, str(workdir))
  return [m['train_loss'] for m in helpers.read_metrics(workdir) if 'train_loss' in m], workdir


def _step_losses(tmp_path, mesh, attention='causal_latent', **overrides):
  """The losses of STEPS train steps of the tiny config on `mesh` (data, fsdp, seq), fed
  the same global batches of 8 windows of the tiny corpus (placed per device as the
  trainer places them)."""
  config = helpers.tiny_config(tmp_path, attention=attention, **overrides)
  config.mesh.update(data=mesh[0], fsdp=mesh[1], seq=mesh[2])
  config_lib.validate_layout(config, jax.device_count())
  model = config_lib.build_model(config)
  parallel = Parallel('jit', model, config)
  checkpoint.abstract_state(model, config, parallel.shard_state_like)
  init = steps.make_init_fn(model, config)
  state = jax.jit(lambda rng: parallel.lay_out(init(rng)))(jax.random.key(config.seed))
  rng = parallel.put_rng(jax.random.key(1))
  text = np.frombuffer((tmp_path / 'corpus.txt').read_bytes(), np.uint8)
  n = config.data.seq_len + 1
  starts = np.random.default_rng(0).integers(0, text.size - n, (STEPS, 8))
  losses = []
  for rows in text[starts[..., None] + np.arange(n)].astype(np.int32):
    batch = {'inputs': rows[:, :-1], 'targets': rows[:, 1:],
             'weights': np.ones(rows[:, 1:].shape, np.float32)}
    state, metrics = parallel.train_step(state, batch, rng)
    losses.append(float(parallel.first(metrics)['loss']))
  return losses


@pytest.mark.slow  # trains
@pytest.mark.parametrize('attention,meshes', [
    ('causal_latent', [(1, 4, 1), (1, 1, 4), (1, 2, 2)]),
    ('causal_latent:latent_decay=multiscale', [(2, 1, 2)]),
    ('full', [(1, 1, 4)]),
])
def test_fsdp_and_sequence_sharding_give_the_data_parallel_losses(tmp_path, attention, meshes):
  kind, _, extra = attention.partition(':')
  kw = {f'model.{k}': v for k, v in [extra.split('=')]} if extra else {}
  reference = _step_losses(tmp_path, (4, 1, 1), kind, **kw)
  assert reference[-1] < reference[0] - 0.2, reference  # it learns: these steps matter
  for mesh in meshes:
    losses = _step_losses(tmp_path, mesh, kind, **kw)
    np.testing.assert_allclose(losses, reference, rtol=1e-5, atol=1e-5, err_msg=str(mesh))


def test_two_level_prefix_scan_and_chunk_shift_equal_the_one_run_forms():
  rng = np.random.default_rng(0)
  B, K, H, M, d = 2, 8, 2, 3, 4
  triples = (jnp.asarray(rng.normal(size=(B, K, H, M)), jnp.float32),
             jnp.asarray(rng.uniform(0.5, 2, size=(B, K, H, M)), jnp.float32),
             jnp.asarray(rng.normal(size=(B, K, H, M, d)), jnp.float32))
  for decay in (None, jnp.asarray(rng.uniform(0.01, 1, size=(H, M)), jnp.float32)):
    whole = causal_latent.prefix_scan(triples, decay)
    for shards in (2, 4, 8):
      split = causal_latent.prefix_scan(triples, decay, shards)
      for a, b in zip(whole, split):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='8 chunks do not split into 3 equal runs'):
    causal_latent.prefix_scan(triples, None, 3)
  summaries = triples[2]
  for shards in (1, 2, 4):
    shifted = causal_latent.previous_chunk(summaries, shards)
    np.testing.assert_array_equal(shifted[:, 1:], summaries[:, :-1])
    assert not np.any(shifted[:, 0])


def _per_device_bytes(shardings_tree, shapes_tree) -> int:
  return sum(int(np.prod(sh.shard_shape(s.shape))) * s.dtype.itemsize
             for sh, s in zip(jax.tree.leaves(shardings_tree), jax.tree.leaves(shapes_tree)))


@pytest.mark.slow  # compiles three train steps at 4,096 positions
def test_state_and_activation_bytes_per_device_drop_as_the_axes_grow(tmp_path):
  config = helpers.tiny_config(tmp_path)
  config.model.update(emb_dim=64, num_heads=4, chunk_size=32, num_latents=8, mlp_dim=128)
  model = config_lib.build_model(config)
  state_bytes, temp_bytes = {}, {}
  for size in (1, 2, 4):
    config.mesh.update(data=4 // size, fsdp=size, seq=1)
    parallel = Parallel('jit', model, config)
    target = checkpoint.abstract_state(model, config, parallel.shard_state_like)
    state_bytes[size] = _per_device_bytes(parallel.state_shardings, target)
    # One row of 4,096 positions on `size` devices along seq.
    config.mesh.update(data=1, fsdp=1, seq=size)
    parallel = Parallel('jit', model, config, devices=jax.devices()[:size])
    target = checkpoint.abstract_state(model, config, parallel.shard_state_like)
    shapes = {'inputs': ((1, 4096), jnp.int32), 'targets': ((1, 4096), jnp.int32),
              'weights': ((1, 4096), jnp.float32)}
    compiled = parallel.lower_train_step(target, shapes).compile()
    temp_bytes[size] = compiled.memory_analysis().temp_size_in_bytes
  assert state_bytes[2] < 0.55 * state_bytes[1] and state_bytes[4] < 0.3 * state_bytes[1], (
      state_bytes)
  assert temp_bytes[2] < 0.6 * temp_bytes[1] and temp_bytes[4] < 0.35 * temp_bytes[1], (
      temp_bytes)


@pytest.mark.slow  # trains
def test_checkpoint_of_one_mesh_restores_onto_another(tmp_path):
  straight, workdir = _run(tmp_path, 'moved', (4, 1, 1), steps=STEPS)
  shutil.rmtree(workdir / 'checkpoints' / str(STEPS))  # as if stopped after step 2
  resumed, _ = _run(tmp_path, 'moved', (1, 2, 2), per_device=4, steps=STEPS)
  np.testing.assert_allclose(resumed, straight, rtol=1e-5, atol=1e-5)
  # Restored for a (1, 2, 2) mesh, the parameters are split over fsdp as that mesh says.
  config = config_lib.load_saved_config(str(workdir))
  config.mesh.update(data=1, fsdp=2, seq=2)
  model = config_lib.build_model(config)
  parallel = Parallel('jit', model, config)
  restored = checkpoint.restore_workdir(str(workdir), config, model,
                                        sharding=parallel.shard_state_like)
  kernel = restored.params['block_0']['mlp_in']['kernel']
  assert 'fsdp' in kernel.sharding.spec and kernel.addressable_shards[0].data.shape == (16, 16)


def test_bad_mesh_gives_one_line_before_anything_is_written(tmp_path):
  cases = [(dict(data=3), 'does not tile the 4 devices'),
           (dict(data=-1, fsdp=-1), 'more than one -1'),
           (dict(seq=0), 'config.mesh.seq=0 must be an integer >= 1'),
           (dict(data=1, seq=4, parallelism='pmap'), "needs config.parallelism='jit'"),
           (dict(data=1, seq=4, seq_len=48), 'seq_len=48 must be a multiple of 32')]
  for mesh, message in cases:
    config = helpers.tiny_config(tmp_path)
    if 'parallelism' in mesh:
      config.parallelism = mesh.pop('parallelism')
    if 'seq_len' in mesh:
      config.data.seq_len = mesh.pop('seq_len')
    config.mesh.update(mesh)
    workdir = tmp_path / 'never'
    with pytest.raises(ValueError, match=message):
      trainer.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
  config = helpers.tiny_config(tmp_path)
  config.mesh.tensor = 2
  with pytest.raises(ValueError, match="config.mesh has no axis 'tensor'"):
    config_lib.validate_config(config)
  assert sharding.fsdp_spec((6, 8), 4) == jax.sharding.PartitionSpec(None, 'fsdp')
  assert sharding.fsdp_spec((6, 3), 4) == jax.sharding.PartitionSpec()


@pytest.mark.slow  # trains in child processes
def test_sequence_parallel_over_two_processes_equals_one(children, tmp_path):
  """Mesh (1, 1, 4) on 2 processes of 2 devices: every process reads all rows and places
  the positions of its own devices; the losses are those of 1 process of 4 devices."""
  config_path = helpers.write_config_module(
      tmp_path, num_train_steps=STEPS, log_every_steps=1, eval_every_steps=STEPS,
      checkpoint_every_steps=STEPS, per_device_batch_size=8,
      **{'mesh.data': 1, 'mesh.seq': 4})
  one = tmp_path / 'one'
  assert children(helpers.train_argv(config_path, str(one))).finish() == 0
  two = tmp_path / 'two'
  address = f'localhost:{helpers.free_port()}'
  procs = [children(helpers.train_argv(config_path, str(two), f'--coordinator_address={address}',
                                       '--num_processes=2', f'--process_id={i}'), devices=2)
           for i in range(2)]
  for p in procs:
    assert p.finish(timeout=600) == 0, '\n'.join(p.lines[-20:])
  assert any("2 process(es), jit mesh {'data': 1, 'fsdp': 1, 'seq': 4}" in l
             for l in procs[0].lines)
  ours, theirs = helpers.read_metrics(two), helpers.read_metrics(one)
  assert [m['step'] for m in ours] == [m['step'] for m in theirs]
  for a, b in zip(ours, theirs):
    for key in ('train_loss', 'eval_loss'):
      if key in b:
        assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a['step'])
