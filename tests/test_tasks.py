"""Task data sets and the classifier: MQAR, ListOps, padding masks, accuracy in train and eval."""

import json
import os

import jax
import numpy as np
import pytest

from configs import listops_m64, mqar as mqar_config
from latent_flax import config_lib, tasks, trainer
from latent_flax.evaluation import probes, runs
from latent_flax.tasks import listops, mqar
from latent_flax import model as model_lib


# --------------------------------------------------------------------------- #
# MQAR.
# --------------------------------------------------------------------------- #

def test_mqar_follows_the_definition():
  V, N, D = 64, 96, 12
  d = mqar.generate(300, N, D, V, 0, 'train')
  inputs, targets, weights = d['inputs'], d['targets'], d['weights']
  assert inputs.shape == targets.shape == weights.shape == (300, N)
  gaps = []
  for x, y, w in zip(inputs, targets, weights):
    keys, values = x[0:2 * D:2], x[1:2 * D:2]
    assert len(set(keys)) == D and len(set(values)) == D
    assert np.all((keys >= 1) & (keys < V // 2)) and np.all((values >= V // 2) & (values < V))
    answer = dict(zip(keys, values))
    query_pos = np.flatnonzero(w)
    # Every key is asked exactly once, after the pairs, at an even offset from their end.
    assert sorted(x[query_pos]) == sorted(keys) and np.all(query_pos >= 2 * D)
    assert np.all((query_pos - 2 * D) % 2 == 0)
    assert [answer[k] for k in x[query_pos]] == list(y[query_pos])
    # Nothing else is asked or scored; everything after the pairs but the queries is 0.
    rest = np.ones(N, bool)
    rest[:2 * D] = False
    rest[query_pos] = False
    assert np.all(x[rest] == 0) and np.all(w[~np.isin(np.arange(N), query_pos)] == 0)
    gaps.extend((query_pos - 2 * D) // 2)
  # Power-law gaps: short gaps are much more frequent than long ones.
  slots = (N - 2 * D) // 2
  hist = np.bincount(gaps, minlength=slots)
  assert hist[:slots // 4].sum() > 1.5 * hist[-(slots // 4):].sum()


@pytest.mark.parametrize('chunk', [3, 8, 16, 200])
def test_mqar_across_chunks_keeps_answers_whose_pair_is_in_an_earlier_chunk(chunk):
  d = mqar.generate(50, 64, 6, 32, 0, 'test')
  kept = mqar.across_chunks(d, chunk)
  assert kept['inputs'] is d['inputs'] and kept['targets'] is d['targets']
  assert kept['weights'] is d['weights']
  expected = np.zeros_like(d['weights'])
  for e, (x, w) in enumerate(zip(d['inputs'], d['weights'])):
    for t in np.flatnonzero(w):
      pair = list(x[0:12:2]).index(x[t])  # the queried key's index among the pairs
      expected[e, t] = float((2 * pair) // chunk < t // chunk)
  np.testing.assert_array_equal(kept['weights_across'], expected)
  assert (expected.sum() == 0) == (chunk >= 64)
  # The task's evaluation sets carry these weights where some answer crosses a chunk.
  data_config = mqar_config.get_config().data
  data_config.update(vocab_size=32, seq_len=64, num_kv_pairs=6, eval_pairs='6',
                     num_test_examples=50, seed=0)
  model_config = mqar_config.get_config(f'chunk={chunk}').model
  sets, main = tasks.get('mqar').eval_sets(data_config, model_config, 'validation')
  assert main == '6' and list(sets) == ['6']
  assert ('weights_across' in sets['6'].arrays) == (chunk < 64)
  if chunk < 64:
    np.testing.assert_array_equal(sets['6'].arrays['weights_across'], expected)


def test_slot_statistics_find_held_pairs_and_content_preferences():
  """Slot 0 takes the pair with the largest value, slot 1 spreads thin: held and predicted."""
  rng = np.random.default_rng(0)
  B, P, C = 200, 2, 8
  keys = np.stack([rng.permutation(np.arange(1, 4))[:P] for _ in range(B)])
  values = np.stack([rng.permutation(np.arange(4, 8))[:P] for _ in range(B)])
  attn = np.full((B, 1, 2, C), 1.0 / C)  # [B, H, M, C]
  attn[:, 0, 0] = 0.0
  winner = values.argmax(1)
  attn[np.arange(B), 0, 0, 2 * winner + 1] = 1.0  # all of slot 0 on the winner's value
  stats = probes.slot_statistics(attn, keys, values, 8)
  expected_held = np.zeros((B, P), bool)
  expected_held[np.arange(B), winner] = True  # slot 1 gives each pair 2/8 < HOLD
  np.testing.assert_array_equal(stats['held_BP'], expected_held)
  assert stats['slots_holding_a_pair'] == 0.5
  assert stats['slot_predictability_pair'] == 1.0  # larger value, more attention
  assert stats['slot_predictability_key'] < 0.8  # keys carry no information here
  assert stats['chance_predictability'] == 0.5


def test_mqar_sets_are_fixed_and_distinct():
  a = mqar.generate.__wrapped__(50, 64, 8, 64, 3, 'train')
  b = mqar.generate.__wrapped__(50, 64, 8, 64, 3, 'train')
  test = mqar.generate.__wrapped__(50, 64, 8, 64, 3, 'test')
  other_seed = mqar.generate.__wrapped__(50, 64, 8, 64, 4, 'train')
  np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert not np.array_equal(a['inputs'], test['inputs'])
  assert not np.array_equal(a['inputs'], other_seed['inputs'])


@pytest.mark.parametrize('arg,message', [
    ('pairs=70,seq_len=512', 'needs that many distinct keys'),
    ('pairs=32,seq_len=100', 'cannot hold 32 pairs'),
    ('vocab=512', 'exceeds the model'),
])
def test_mqar_bad_parameters_are_one_line(arg, message):
  with pytest.raises(ValueError) as err:
    config_lib.validate_config(mqar_config.get_config(arg))
  assert message in str(err.value) and '\n' not in str(err.value)


def test_mqar_config_arguments():
  config = mqar_config.get_config('m=8,pairs=32,seq_len=512,chunk=16')
  assert (config.model.num_latents, config.model.chunk_size) == (8, 16)
  assert (config.data.num_kv_pairs, config.data.seq_len) == (32, 512)
  config_lib.validate_config(config)


# --------------------------------------------------------------------------- #
# ListOps.
# --------------------------------------------------------------------------- #

def _value(text_tokens):
  """Independent evaluator: recursive descent over the text tokens."""
  def parse(i):
    t = text_tokens[i]
    if not t.startswith('['):
      return int(t), i + 1
    args, i = [], i + 1
    while text_tokens[i] != ']':
      v, i = parse(i)
      args.append(v)
    op = t[1:]
    s = sorted(args)
    value = {'MAX': max(args), 'MIN': min(args), 'SM': sum(args) % 10,
             'MED': s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) // 2}
    return value[op], i + 1
  v, end = parse(0)
  assert end == len(text_tokens)
  return v


def test_listops_expressions_follow_the_specification():
  examples = list(listops.generate_examples(60, 100, 400, 0, 'train'))
  labels = []
  for tokens, label in examples:
    text = listops.to_text(tokens).split()
    assert 100 <= len(tokens) <= 400 and text[0].startswith('[')
    assert _value(text) == label == listops.evaluate(text)
    depth, max_depth, args = 0, 0, []
    for t in text:
      if t.startswith('['):
        depth += 1
        max_depth = max(max_depth, depth)
        if args:
          args[-1] += 1
        args.append(0)
      elif t == ']':
        depth -= 1
        assert 2 <= args.pop() <= listops.MAX_ARGS
      else:
        args[-1] += 1
    assert depth == 0 and max_depth <= listops.MAX_DEPTH
    labels.append(label)
  assert len(set(labels)) >= 5  # not a constant task
  again = list(listops.generate_examples(60, 100, 400, 0, 'train'))
  assert all(np.array_equal(a[0], b[0]) for a, b in zip(examples, again))
  other = next(listops.generate_examples(1, 100, 400, 0, 'test'))
  assert not np.array_equal(other[0], examples[0][0])


def _tiny_listops(tmp_path, attention='latent', **overrides):
  config = listops_m64.get_config()
  config.model.update(attention=attention, num_latents=4, num_heads=2, emb_dim=16, mlp_dim=32,
                      num_layers=1, dropout_rate=0.0)
  config.data.update(seq_len=48, min_length=8, max_length=40, num_train_examples=64,
                     num_validation_examples=16, num_test_examples=20,
                     data_dir=str(tmp_path / 'tfds'))
  config.update(num_train_steps=4, per_device_batch_size=2, warmup_steps=1, log_every_steps=2,
                eval_every_steps=4, checkpoint_every_steps=4, num_eval_steps=0)
  for key, value in overrides.items():
    config[key] = value
  return config


def test_listops_tfds_builder_pads_and_masks(tmp_path):
  config = _tiny_listops(tmp_path)
  test = tasks.load(config.data, 'test')
  assert test.num_windows == 20
  batch = test.get(np.arange(20))
  assert batch['inputs'].shape == batch['mask'].shape == (20, 48)
  assert batch['targets'].shape == batch['weights'].shape == (20,)
  for x, m, y in zip(batch['inputs'], batch['mask'], batch['targets']):
    n = int(m.sum())
    assert m[:n].all() and not m[n:].any() and np.all(x[n:] == listops.PAD)
    assert 8 <= n <= 40 and _value(listops.to_text(x[:n]).split()) == y
  expected = list(listops.generate_examples(20, 8, 40, 0, 'test'))
  assert [int(y) for y in batch['targets']] == [label for _, label in expected]
  assert os.path.isdir(tmp_path / 'tfds' / 'list_ops')


@pytest.mark.parametrize('overrides,message', [
    ({'model.attention': 'causal_latent'}, "classification reads the whole sequence"),
    ({'data.seq_len': 30}, 'does not fit in config.data.seq_len=30'),
    ({'data.num_train_examples': 0}, 'num_train_examples=0 must be an integer >= 1'),
])
def test_listops_bad_config_is_one_line(tmp_path, overrides, message):
  config = _tiny_listops(tmp_path)
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  with pytest.raises(ValueError) as err:
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  assert message in str(err.value) and '\n' not in str(err.value)
  assert not (tmp_path / 'run').exists()


# --------------------------------------------------------------------------- #
# The classifier.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize('attention,pooling', [('latent', 'mean'), ('full', 'mean'),
                                               ('latent', 'first')])
def test_what_padding_holds_changes_nothing(attention, pooling):
  cfg = model_lib.ModelConfig(attention=attention, num_latents=4, num_heads=2, emb_dim=16,
                              mlp_dim=32, num_layers=2, pooling=pooling)
  model = model_lib.build_model(cfg, task='classify', num_classes=10)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 16, (3, 40)).astype(np.int32)
  mask = np.zeros((3, 40), bool)
  for b, n in enumerate((40, 25, 9)):
    mask[b, :n] = True
  tokens = np.where(mask, tokens, listops.PAD)
  params = model.init(jax.random.key(0), tokens, mask)['params']
  logits = model.apply({'params': params}, tokens, mask)
  assert logits.shape == (3, 10)
  garbage = np.where(mask, tokens, rng.integers(1, 200, tokens.shape)).astype(np.int32)
  np.testing.assert_array_equal(model.apply({'params': params}, garbage, mask), logits)
  # A real token does matter (so the check above could fail).
  changed = tokens.copy()
  changed[1, 3] = 1 + changed[1, 3] % 15
  assert not np.allclose(model.apply({'params': params}, changed, mask)[1], logits[1])
  # Without the mask, padding would leak in.
  assert not np.allclose(model.apply({'params': params}, garbage)[1:],
                         model.apply({'params': params}, tokens)[1:])


def test_latent_classifier_sees_order_only_with_input_positions():
  # The bidirectional latent block has no token-token attention: without input
  # positions, reordering the real tokens gives the same logits (a bag of tokens);
  # with sinusoidal positions it does not. Full attention has rotary positions.
  rng = np.random.default_rng(1)
  tokens = rng.integers(1, 16, (2, 24)).astype(np.int32)
  shuffled = tokens[:, rng.permutation(24)]
  logits = {}
  for attention, positions in (('latent', 'none'), ('latent', 'sinusoidal'), ('full', 'none')):
    cfg = model_lib.ModelConfig(attention=attention, num_latents=4, num_heads=2, emb_dim=16,
                                mlp_dim=32, num_layers=1, input_positions=positions)
    model = model_lib.build_model(cfg, task='classify', num_classes=10)
    params = model.init(jax.random.key(0), tokens)['params']
    logits[attention, positions] = [np.asarray(model.apply({'params': params}, t))
                                    for t in (tokens, shuffled)]
  np.testing.assert_allclose(*logits['latent', 'none'], rtol=1e-5, atol=1e-6)
  for key in (('latent', 'sinusoidal'), ('full', 'none')):
    assert np.abs(logits[key][0] - logits[key][1]).max() > 1e-3, key
  # The encoding itself: sin in the first half of the channels, cos in the second.
  table = np.asarray(model_lib.sinusoidal_positions(5, 8))
  np.testing.assert_allclose(table[3, [0, 4]], [np.sin(3.0), np.cos(3.0)], rtol=1e-6)
  np.testing.assert_allclose(table[2, [1, 5]], [np.sin(2 / 10.0), np.cos(2 / 10.0)], rtol=1e-6)


@pytest.mark.parametrize('attention', ['latent', 'full'])
def test_first_pooling_reads_position_zero(attention):
  # The head sees exactly the final hidden state at position 0; with 'mean' it sees
  # the masked mean. Both are recomputed here from the captured ln_final output.
  rng = np.random.default_rng(2)
  tokens = rng.integers(1, 16, (2, 20)).astype(np.int32)
  mask = np.arange(20)[None] < np.array([[20], [11]])
  for pooling in ('first', 'mean'):
    cfg = model_lib.ModelConfig(attention=attention, num_latents=4, num_heads=2, emb_dim=16,
                                mlp_dim=32, num_layers=2, pooling=pooling)
    model = model_lib.build_model(cfg, task='classify', num_classes=10)
    params = model.init(jax.random.key(0), tokens, mask)['params']
    logits, state = model.apply({'params': params}, tokens, mask,
                                capture_intermediates=lambda mdl, _: mdl.name == 'ln_final')
    hidden_BND = np.asarray(state['intermediates']['ln_final']['__call__'][0])
    w = mask[..., None]
    pooled = hidden_BND[:, 0] if pooling == 'first' else (hidden_BND * w).sum(1) / w.sum(1)
    expected = pooled @ np.asarray(params['head']['kernel']) + np.asarray(params['head']['bias'])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def _accuracy_by_hand(model, params, examples):
  batch = examples.get(np.arange(examples.num_windows))
  extra = (batch['mask'],) if 'mask' in batch else ()
  logits = jax.jit(model.apply)({'params': params}, batch['inputs'], *extra)
  right = (np.argmax(logits, -1) == batch['targets']) * batch['weights']
  return right.sum() / batch['weights'].sum()


@pytest.mark.slow  # trains
def test_listops_trains_and_evaluates_with_the_same_loop(tmp_path):
  config = _tiny_listops(tmp_path)
  workdir = str(tmp_path / 'run')
  final = trainer.train_and_evaluate(config, workdir)
  assert final['step'] == 4 and 0.0 <= final['eval_accuracy'] <= 1.0
  assert 'eval_bits_per_byte' not in final and 'train_accuracy' in final
  # The test split, 20 examples in batches of 8 (the last padded with zero-weight
  # rows), through eval.py's library.
  result = runs.evaluate_checkpoint(workdir, split='test')
  assert result['tokens'] == 20 and result['split'] == 'test'
  with open(os.path.join(workdir, 'eval_test_step_4.json')) as f:
    assert json.load(f)['accuracy'] == result['accuracy']
  restored = runs.restore_checkpoint(workdir, config)
  model = config_lib.build_model(config)
  expected = _accuracy_by_hand(model, restored.state.params,
                               tasks.load(config.data, 'test'))
  assert result['accuracy'] == pytest.approx(float(expected))
  # The probe's predictions of the checkpoint give the same accuracy.
  test = listops.load(config.data, 'test')
  predicted, step = probes.classifier_predictions(workdir, test['inputs'], test['mask'],
                                                  batch=8)
  assert step == 4 and np.mean(predicted == test['targets']) == pytest.approx(result['accuracy'])
  # generate.py on a classifier's workdir says so, in one line, before reading anything.
  with pytest.raises(ValueError, match="holds a classify model of data set 'listops', not a "
                                       "language model"):
    runs.sample_from_checkpoint(workdir, '[MAX', 4)
  rule = listops.rule_predictions(np.array([11, 11, 12, 12, 12]),
                                  np.array([3, 3, 5, 1, 1]), np.array([12, 11]), 10)
  np.testing.assert_array_equal(rule, [1, 3])


@pytest.mark.slow  # trains
def test_mqar_recall_accuracy_counts_only_answers(tmp_path):
  config = mqar_config.get_config('m=4,pairs=4,seq_len=32,dim=16,heads=2,chunk=8,layers=1')
  config.data.update(num_train_examples=64, num_test_examples=20, train_pairs_mix='2,4',
                     eval_pairs='2,4')
  config.update(num_train_steps=4, per_device_batch_size=2, warmup_steps=1, log_every_steps=2,
                eval_every_steps=4, checkpoint_every_steps=4, num_eval_steps=0)
  workdir = str(tmp_path / 'run')
  final = trainer.train_and_evaluate(config, workdir)
  assert 'eval_accuracy' in final
  result = runs.evaluate_checkpoint(workdir)
  assert result['tokens'] == 20 * 4  # 4 answers per example, nothing else counted
  assert result['recall_accuracy'] == result['accuracy'] == pytest.approx(final['eval_accuracy'])
  assert set(result['recall_by_pairs']) == {'2', '4'}
  assert result['recall_by_pairs']['4'] == pytest.approx(result['accuracy'])
  # Chunk 8: 4 pairs fill chunk 0, so every answer is across chunks; 2 pairs leave
  # some queries inside chunk 0.
  assert result['answers_across_chunks_by_pairs']['4'] == 20 * 4
  assert 0 < result['answers_across_chunks_by_pairs']['2'] < 20 * 2
  assert result['recall_across_chunks_by_pairs']['4'] == pytest.approx(result['accuracy'])
  assert set(final['eval_recall_across_chunks_by_pairs']) == {'2', '4'}
  restored = runs.restore_checkpoint(workdir, config)
  expected = _accuracy_by_hand(config_lib.build_model(config), restored.state.params,
                               tasks.load(config.data, 'test'))
  assert result['accuracy'] == pytest.approx(float(expected))
  # The slot analysis reads the same checkpoint and test set: same recall.
  saved, pairs = probes.check_mqar_slots(workdir, None)
  slots = probes.mqar_slots(workdir, saved, pairs, 20)
  assert slots['recall'] == pytest.approx(result['accuracy'])
  assert len(slots['layers']) == 1 and 0.0 <= slots['any_layer']['pairs_held'] <= 1.0
  with pytest.raises(ValueError, match='--pairs=5 needs 10 tokens'):
    probes.check_mqar_slots(workdir, 5)
