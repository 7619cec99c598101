"""Training past the window (config.carry_state): the document stream, and the state each
row carries from one window to the next, tested exactly against one pass and streaming."""

import functools
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latent_flax import config_lib, trainer
from latent_flax import model as model_lib
from latent_flax.experiments import report as report_lib
from latent_flax.training import checkpoint, steps
from tests import helpers
from latent_flax.attention import registry
from latent_flax.attention.full import FullAttention, fresh_memory
from latent_flax.tasks import corpus, haystack
from latent_flax.tasks import data as data_lib
from latent_flax.evaluation import decode

C = 4   # chunk size
W = 8   # window: two chunks
# Every kind that can carry a state, with the fields that make it carry one.
CARRYING = ['causal_latent', 'causal_latent:latent_decay=multiscale', 'full:memory=64',
            'mla:memory=64']


def _documents(lengths, seed=0):
  rng = np.random.default_rng(seed)
  docs = [rng.integers(1, 256, n, dtype=np.uint8).tobytes() for n in lengths]
  data = data_lib.join_documents(docs)
  starts = np.cumsum([0] + [n + 1 for n in lengths[:-1]])
  return docs, data_lib.Documents(data, np.stack([starts, lengths], 1), W)


def _read(stream, steps):
  return [next(stream) for _ in range(steps)]


def test_each_row_reads_whole_documents_in_the_streams_order():
  lengths = [3, 20, 8, 9, 17, 1, 30]
  docs, source = _documents(lengths)
  stream = data_lib.DocumentStream(source, global_batch=2, seed=5)
  order = [stream.document(i) for i in range(2 * len(docs))]
  assert sorted(order[:len(docs)]) == list(range(len(docs)))  # an epoch: each document once
  assert order[len(docs):] != order[:len(docs)]                # reshuffled for the next
  started, read = [], {0: [], 1: []}  # documents in the order rows start them; bytes per row
  for batch in _read(stream, 25):
    for r in range(2):
      real = batch['weights'][r] > 0
      assert not batch['weights'][r][real.sum():].any()  # real targets come first
      if batch['start'][r]:
        read[r].append(b'')
      read[r][-1] += bytes(batch['targets'][r][real].astype(np.uint8).tolist())
  for r in (0, 1):
    for text in read[r][:-1]:  # every finished document: its bytes after the first, then 0
      started.append(text)
  # Each finished document is one of the stream's, whole; rows 0 and 1 began with its first two.
  targets = [docs[d][1:] + b'\0' for d in order]
  assert read[0][0] == targets[0] and read[1][0] == targets[1]
  assert all(text in targets for text in started)
  assert len(started) >= len(docs)


def test_a_document_is_read_window_by_window_and_flagged_at_its_start():
  _, source = _documents([20])
  stream = data_lib.DocumentStream(source, global_batch=1, seed=0)
  batches = _read(stream, 4)
  assert [bool(b['start'][0]) for b in batches] == [True, False, False, True]
  inputs = np.concatenate([b['inputs'][0] for b in batches[:3]])
  np.testing.assert_array_equal(inputs[:20], source.data[:20])
  assert [int(b['weights'][0].sum()) for b in batches[:3]] == [8, 8, 4]


def test_the_stream_is_the_same_for_any_number_of_processes_and_resumes_exactly():
  _, source = _documents([5, 30, 12, 7, 22, 9, 14, 3], seed=1)
  whole = _read(data_lib.DocumentStream(source, 4, seed=3), 12)
  halves = [_read(data_lib.DocumentStream(source, 4, seed=3, process_index=p, process_count=2), 12)
            for p in (0, 1)]
  for b, (h0, h1) in zip(whole, zip(*halves)):
    for key in b:
      np.testing.assert_array_equal(b[key], np.concatenate([h0[key], h1[key]]))
  first = data_lib.DocumentStream(source, 4, seed=3)
  _read(first, 5)
  resumed = data_lib.DocumentStream(source, 4, seed=3, state=first.get_state())
  for b, r in zip(whole[5:], _read(resumed, 7)):
    for key in b:
      np.testing.assert_array_equal(b[key], r[key])
  with pytest.raises(ValueError, match="saved document stream has 4 rows, this run 8"):
    data_lib.DocumentStream(source, 8, seed=3, state=first.get_state())


def _model(kind):
  kind, _, field = kind.partition(':')
  extra = {k: (int(v) if v.isdigit() else v) for k, v in [field.split('=')]} if field else {}
  cfg = model_lib.ModelConfig(attention=kind, num_latents=4, num_heads=2, chunk_size=C,
                              emb_dim=16, mlp_dim=32, num_layers=2, **extra)
  model = model_lib.build_model(cfg)
  params = model.init(jax.random.key(1), jnp.zeros((1, W), jnp.int32))['params']
  return cfg, model, params


@pytest.mark.parametrize('kind', CARRYING)
def test_windows_with_the_carried_state_equal_one_pass_over_the_document(kind):
  """The training forward pass over a document's windows, each from the state the last
  left, gives the logits of one causal pass over the whole document (and so of streaming
  it through evaluation, tests/test_decode.py)."""
  cfg, model, params = _model(kind)
  tokens = jax.random.randint(jax.random.key(0), (2, 5 * W), 0, model_lib.VOCAB_SIZE)
  expected = jax.jit(model.apply)({'params': params}, tokens)
  carry = model_lib.fresh_carry(cfg, 2)
  step = jax.jit(lambda p, x, c: model.apply({'params': p}, x, carry=c))
  got = []
  for start in range(0, tokens.shape[1], W):
    logits, carry = step(params, tokens[:, start:start + W], carry)
    got.append(logits)
  np.testing.assert_allclose(jnp.concatenate(got, 1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # compiles a gradient through 3 windows, 3 ways (~15 s each)
@pytest.mark.parametrize('kind', ['causal_latent', 'full:memory=64', 'mla:memory=64'])
def test_the_gradient_through_k_carried_windows_is_the_gradient_of_one_pass(kind):
  """config.carry_windows=3: a step reads each row's 3 windows in turn through the carried
  state and differentiates through it, so its gradient is that of one pass over the
  3 windows (row 0), or over the windows before and after a document start inside the
  step (row 1: a fresh state at window 2); and not the gradient with the state held
  constant between windows (what carry_windows=1 sums to)."""
  cfg, model, params = _model(kind)
  k = 3
  tokens = jax.random.randint(jax.random.key(4), (2, k * W + 1), 0, model_lib.VOCAB_SIZE)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
           'weights': jnp.ones((2, k * W), jnp.float32),
           'start': jnp.array([[True, False, False], [True, False, True]])}
  state = steps.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(1.0))
  fresh = model_lib.fresh_carry(cfg, 2)
  new_state, carry, metrics = jax.jit(functools.partial(
      steps.carry_train_step, fresh=fresh, schedule=optax.constant_schedule(1.0)))(
          state, fresh, batch, jax.random.key(0))
  got = jax.tree.map(lambda a, b: a - b, params, new_state.params)  # sgd(1): the gradient

  def ce(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({'params': p}, x), y).sum()

  def one_pass(p):  # row 1 starts a document at window 2: its past there is cut
    x, y, cut = batch['inputs'], batch['targets'], 2 * W
    return (ce(p, x[:1], y[:1]) + ce(p, x[1:, :cut], y[1:, :cut])
            + ce(p, x[1:, cut:], y[1:, cut:])) / (2 * k * W)

  loss, expected = jax.jit(jax.value_and_grad(one_pass))(params)
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-5)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, atol=2e-6, rtol=2e-4)

  def held(p):  # the state enters each window as a constant
    c, total = fresh, 0.0
    for w in range(k):
      c = model_lib.reset_carry(c, fresh, batch['start'][:, w])
      logits, c = model.apply({'params': p}, batch['inputs'][:, w * W:(w + 1) * W], carry=c)
      c = jax.lax.stop_gradient(c)
      total += optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['targets'][:, w * W:(w + 1) * W]).sum()
    return total / (2 * k * W)

  truncated = jax.jit(jax.grad(held))(params)
  assert not all(np.allclose(g, t, atol=1e-5) for g, t in
                 zip(jax.tree.leaves(got), jax.tree.leaves(truncated)))
  # The state left for the next step is the one streaming the windows leaves.
  step = jax.jit(lambda p, x, c: model.apply({'params': p}, x, carry=c))
  _, after_two = step(params, batch['inputs'][:, :2 * W], fresh)
  _, streamed = step(params, batch['inputs'][:, 2 * W:],
                     model_lib.reset_carry(after_two, fresh, batch['start'][:, 2]))
  for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(streamed)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_k_windows_per_step_are_k_consecutive_batches_side_by_side():
  _, source = _documents([20, 9, 30])
  stream, joined = (data_lib.DocumentStream(source, global_batch=2, seed=0) for _ in range(2))
  parts = _read(stream, 3)
  got = joined.next_windows(3)
  for key in ('inputs', 'targets', 'weights'):
    np.testing.assert_array_equal(got[key], np.concatenate([b[key] for b in parts], axis=1))
  np.testing.assert_array_equal(got['start'], np.stack([b['start'] for b in parts], axis=1))
  assert got['start'].shape == (2, 3) and joined.get_state() == stream.get_state()


@pytest.mark.parametrize('kind', CARRYING)
def test_a_fresh_state_gives_the_plain_window_bit_for_bit_and_reset_restores_it(kind):
  cfg, model, params = _model(kind)
  tokens = jax.random.randint(jax.random.key(2), (2, 2 * W), 0, model_lib.VOCAB_SIZE)
  fresh = model_lib.fresh_carry(cfg, 2)
  step = jax.jit(lambda p, x, c: model.apply({'params': p}, x, carry=c))
  plain = jax.jit(model.apply)({'params': params}, tokens[:, W:])
  _, carried = step(params, tokens[:, :W], fresh)
  reset = model_lib.reset_carry(carried, fresh, jnp.array([True, False]))
  for leaf, f in zip(jax.tree.leaves(reset), jax.tree.leaves(fresh)):
    np.testing.assert_array_equal(leaf[0], f[0])  # the flagged row: the fresh state exactly
  logits, _ = step(params, tokens[:, W:], reset)
  np.testing.assert_allclose(logits[0], plain[0], atol=1e-5, rtol=1e-5)  # a fresh start
  assert not np.allclose(logits[1], plain[1], atol=1e-3)  # the other row reads its past


def test_full_attention_memory_equals_attention_over_the_memory_and_the_window():
  """One layer with a memory of `mem` tokens: window w's outputs are those of plain causal
  attention over the `mem` tokens before it and the window itself."""
  mem, B, D = 6, 2, 16
  layer = FullAttention(num_heads=2, impl='naive')
  x = jax.random.normal(jax.random.key(0), (B, 4 * W, D))
  params = layer.init(jax.random.key(1), x[:, :W])
  cfg = model_lib.ModelConfig(attention='full', num_heads=2, emb_dim=D, memory=mem)
  carry = fresh_memory(cfg, B, jnp.float32)
  for start in range(0, x.shape[1], W):
    y, carry = layer.apply(params, x[:, start:start + W], carry=carry)
    lo = max(0, start - mem)
    expected = layer.apply(params, x[:, lo:start + W])[:, start - lo:]
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kind', ['full:memory=4', 'mla:memory=4'])
def test_evaluation_streams_a_memory_model_through_its_bounded_memory(kind):
  """decode.stream reads a Transformer-XL model as it was trained (each segment sees the
  last `memory` tokens, not the whole past): the carried training pass, position for
  position, and not the unbounded one pass."""
  cfg, model, params = _model(kind)
  tokens = jax.random.randint(jax.random.key(3), (2, 4 * W), 0, model_lib.VOCAB_SIZE)
  carry = model_lib.fresh_carry(cfg, 2)
  step = jax.jit(lambda p, x, c: model.apply({'params': p}, x, carry=c))
  trained = []
  for start in range(0, tokens.shape[1], W):
    logits, carry = step(params, tokens[:, start:start + W], carry)
    trained.append(logits)
  streamed = [l for _, l in decode.stream(model, params, tokens, W)]
  np.testing.assert_allclose(jnp.concatenate(streamed, 1), jnp.concatenate(trained, 1),
                             atol=1e-5, rtol=1e-5)
  one_pass = jax.jit(model.apply)({'params': params}, tokens)
  assert not np.allclose(streamed[-1], one_pass[:, -W:], atol=1e-3)  # the far past is cut


def test_long_documents_are_read_as_pieces_that_predict_each_byte_once():
  docs = np.array([[0, 10], [10, 4], [14, 1]])
  cut = corpus.pieces(docs, 4)
  assert cut.tolist() == [[0, 5], [4, 5], [8, 2], [10, 4], [14, 1]]
  predicted = [s + k for s, n in cut.tolist() for k in range(1, n)]  # targets inside a piece
  assert sorted(predicted) == [p for s, n in docs.tolist() for p in range(s + 1, s + n)]


def test_probe_documents_join_a_document_stream_at_their_rate_and_span_windows():
  text = np.frombuffer(b'Some sentence of a book. ' * 400, np.uint8)
  base = data_lib.Documents(text, corpus.pieces(np.array([[0, len(text)]]), 512), 64)
  cfg = {'passkey_rate': 0.25, 'probe_document_bytes': 2048, 'seq_len': 64}
  mixed = haystack.mixed_documents(base, cfg)
  probes = range(base.num_documents, mixed.num_documents)
  assert len(probes) == round(base.num_documents / 3)  # a quarter of all documents
  lengths = [mixed.length(i) for i in probes]
  assert min(lengths) >= 65 and max(lengths) <= 2048 and max(lengths) > 4 * 64
  doc = mixed.probe_document(probes[0])
  rows = [mixed.window(probes[0], o)[0] for o in range(0, len(doc.tokens) - 1, 64)]
  read = np.concatenate(rows)[:len(doc.tokens) - 1]
  np.testing.assert_array_equal(read, doc.tokens[:-1])  # read in turn, window by window
  assert doc.answer in doc.tokens[doc.needles[0]:doc.needles[0] + 40].tobytes()
  assert mixed.probe_document(probes[0]).answer == doc.answer  # the same from its number
  # probe_weights='answer': across the document's windows, exactly its answer's bytes.
  answers = haystack.mixed_documents(base, {**cfg, 'probe_weights': 'answer'})
  parts = [answers.window(probes[0], o) for o in range(0, len(doc.tokens) - 1, 64)]
  targets = np.concatenate([p[1] for p in parts])
  weights = np.concatenate([p[2] for p in parts])
  assert bytes(targets[weights > 0].astype(np.uint8).tolist()) == doc.answer
  assert answers.window(0, 0)[2].sum() == 64  # the corpus's documents: every byte


def test_every_kind_that_carries_says_so_in_the_registry():
  carrying = {k for k in registry.names(causal=True) if registry.get(k).fresh_carry}
  assert {'causal_latent', 'full', 'mla'} <= carrying


def _doc_config(tmp_path, attention, **overrides):
  """The tiny config on a folder of documents of varied lengths, carrying state."""
  folder = tmp_path / 'docs'
  if not folder.exists():
    folder.mkdir()
    rng = np.random.default_rng(0)
    words = ['alpha', 'beta', 'gamma', 'delta', 'kappa', 'omega']
    for i, n in enumerate([40, 900, 130, 400, 75, 260, 610, 55, 300, 180, 90, 500]):
      (folder / f'doc{i:02d}.txt').write_text(' '.join(rng.choice(words, n)) + '\n')
  extra = {'model.memory': 16} if attention != 'causal_latent' else {}
  config = helpers.tiny_config(tmp_path, attention=attention, **{
      'data.path': str(folder), 'carry_state': True, 'num_train_steps': 8,
      'log_every_steps': 1, 'eval_every_steps': 8, 'checkpoint_every_steps': 4,
      **extra, **overrides})
  return config


@pytest.mark.slow  # trains
@pytest.mark.parametrize('attention, windows', [('causal_latent', 1), ('full', 1),
                                                ('causal_latent', 2)])
def test_a_stop_in_the_middle_of_documents_resumes_to_the_same_params(tmp_path, attention,
                                                                      windows, monkeypatch):
  config = _doc_config(tmp_path, attention, carry_windows=windows)
  whole = tmp_path / 'whole'
  trainer.train_and_evaluate(config, str(whole))
  next_batch = data_lib.DocumentStream.__next__

  def preempting_next(self):
    if self.position == 3:
      signal.raise_signal(signal.SIGTERM)
    return next_batch(self)

  split = tmp_path / 'split'
  monkeypatch.setattr(data_lib.DocumentStream, '__next__', preempting_next)
  # SIGTERM while the 4th window is drawn: the step reading it finishes and is saved.
  assert trainer.train_and_evaluate(config, str(split))['step'] == 3 // windows + 1
  monkeypatch.setattr(data_lib.DocumentStream, '__next__', next_batch)
  assert trainer.train_and_evaluate(config, str(split))['step'] == 8
  for a, b in zip(jax.tree.leaves(helpers.restored_params(whole, config)[0]),
                  jax.tree.leaves(helpers.restored_params(split, config)[0])):
    np.testing.assert_array_equal(a, b)
  # Reports say the run carried its state.
  assert report_lib.read_run(str(split))['label'].endswith(' carried')
  # The state at step 4 was saved and is what the resumed run read.
  mngr = checkpoint.manager(str(split), config, read_only=True)
  assert 'carry' in mngr.item_metadata(8)
  mngr.close()
  # A resume that would carry state of other shapes is refused in one line.
  other = _doc_config(tmp_path, attention, per_device_batch_size=1, num_train_steps=12)
  with pytest.raises(ValueError, match="saved with a global batch of 8"):
    trainer.train_and_evaluate(other, str(split))
  plain = _doc_config(tmp_path, attention, carry_state=False, num_train_steps=12)
  with pytest.raises(ValueError, match="carry_state: saved True vs new False"):
    trainer.train_and_evaluate(plain, str(split))


@pytest.mark.slow  # trains
@pytest.mark.parametrize('attention, windows, meshes', [
    ('causal_latent', 1, [(2, 2, 1), (1, 1, 4), (2, 1, 2)]),
    ('causal_latent', 2, [(1, 1, 4)]),
    ('full', 1, [(2, 2, 1), (2, 1, 2)])])
def test_meshes_give_the_losses_of_one_device(tmp_path, attention, windows, meshes):
  def losses(mesh, per_device):
    config = _doc_config(tmp_path, attention, per_device_batch_size=per_device,
                         num_train_steps=4, checkpoint_every_steps=4, eval_every_steps=4,
                         carry_windows=windows)
    config.mesh.update(data=mesh[0], fsdp=mesh[1], seq=mesh[2])
    workdir = tmp_path / f'run_{"_".join(map(str, mesh))}'
    trainer.train_and_evaluate(config, str(workdir))
    if windows > 1:  # what a step reads is counted: rows x windows x seq_len
      row = report_lib.read_run(str(workdir))
      assert row['clock'][4]['tokens'] == 4 * 8 * windows * config.data.seq_len
    return [m['train_loss'] for m in helpers.read_metrics(workdir) if 'train_loss' in m]

  one = losses((4, 1, 1), 2)  # data parallel: global batch 8 (tests/test_scale.py: = one device)
  for mesh in meshes:
    np.testing.assert_allclose(losses(mesh, 8 * mesh[2] // 4), one, rtol=2e-5)


def test_bad_carry_settings_are_one_line(tmp_path):
  with pytest.raises(ValueError, match=r"config.model.memory=0: set memory"):
    config_lib.validate_config(_doc_config(tmp_path, 'full', **{'model.memory': 0}))
  with pytest.raises(ValueError, match="must be a multiple of config.model.chunk_size=8"):
    config_lib.validate_config(_doc_config(tmp_path, 'causal_latent', **{'data.seq_len': 36}))
  with pytest.raises(ValueError, match="needs config.parallelism='jit'"):
    config_lib.validate_config(_doc_config(tmp_path, 'causal_latent', parallelism='pmap'))
  with pytest.raises(ValueError, match=r"^config.carry_windows=0 must be a whole number >= 1"):
    config_lib.validate_config(_doc_config(tmp_path, 'causal_latent', carry_windows=0))
  with pytest.raises(ValueError, match=r"^config.carry_windows=2 reads consecutive windows "
                     r"through a carried state: set config.carry_state=True"):
    config_lib.validate_config(_doc_config(tmp_path, 'causal_latent', carry_state=False,
                                           carry_windows=2))


@pytest.mark.slow  # compiles two train steps
def test_k_windows_a_step_keep_the_activations_of_all_k(tmp_path):
  """The cost of the gradient through K windows (design 2b): the compiled step's working
  memory grows with K; the carried state's does not."""
  from latent_flax.training.parallel import Parallel
  temp = {}
  for k in (1, 4):
    config = _doc_config(tmp_path, 'causal_latent', carry_windows=k, per_device_batch_size=1)
    config.mesh.update(data=1, fsdp=1, seq=1)
    model = config_lib.build_model(config)
    parallel = Parallel('jit', model, config, devices=jax.devices()[:1], carry_batch=1)
    target = checkpoint.abstract_state(model, config, parallel.shard_state_like)
    n = k * config.data.seq_len
    shapes = {'inputs': ((1, n), jnp.int32), 'targets': ((1, n), jnp.int32),
              'weights': ((1, n), jnp.float32), 'start': ((1, k) if k > 1 else (1,), bool)}
    compiled = parallel.lower_train_step(target, shapes).compile()
    temp[k] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[4] > 2.5 * temp[1], temp
