"""Retrieval probes: passkey and bAbI documents, their mixing into a corpus, the grid scorer
(oracle and constant "models"), streaming through the decoding state, corpora with their
own split folders, the books layout, and probe.py on a trained workdir."""

import hashlib
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from latent_flax import model as model_lib
from latent_flax import tasks, trainer
from latent_flax.evaluation import decode, retrieval
from latent_flax.experiments import report
from latent_flax.tasks import babi, books, corpus, haystack, passkey
from latent_flax.tasks import data as data_lib
from tests import helpers

PASSKEY, BABI = haystack.get_probe('passkey'), haystack.get_probe('babi')
FILLER_SENTENCE = max(len(s) + 2 for s in haystack.FILLER.decode().split('. '))
FACT = re.compile(rb'(Mary|John|Daniel|Sandra) (?:went to|moved to|travelled to|journeyed to|'
                  rb'went back to) the (\w+)\. ')


def _sentences(n_bytes: int, seed: int = 0) -> np.ndarray:
  """Text of short sentences of words, no digits: a stand-in for a book."""
  rng = np.random.default_rng(seed)
  words = ['alpha', 'beta', 'gamma', 'delta', 'kappa', 'omega', 'sigma']
  out = b''
  while len(out) < n_bytes:
    out += (' '.join(rng.choice(words, rng.integers(3, 8))).capitalize() + '. ').encode()
  return np.frombuffer(out[:n_bytes], np.uint8)


TEXT = _sentences(20000)
TEXT_SENTENCE = 8 * 6 + 2  # longest sentence of _sentences


def _hay_position(doc, index):
  """Where needle `index` sits in haystack bytes (the needles before it taken out)."""
  lengths = [len(n) for n in _needle_texts(doc)]
  return doc.needles[index] - sum(lengths[:index])


def _needle_texts(doc):
  text = doc.tokens.tobytes()
  needle = re.compile(FACT.pattern + rb'|The pass key is \d+\. Remember it\. ')
  return [needle.match(text, o)[0] for o in doc.needles]


# --------------------------------------------------------------------------- #
# Documents.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize('hay_kind', ['filler', 'text'])
@pytest.mark.parametrize('depth', [0.0, 0.37, 1.0])
def test_passkey_documents_are_deterministic_and_well_formed(hay_kind, depth):
  length = 3000
  hay = haystack.filler if hay_kind == 'filler' else haystack.text_haystack(TEXT, 777)
  make = lambda seed: PASSKEY.document(haystack.rng_for(seed), length, hay, depth)
  doc = make(1)
  np.testing.assert_array_equal(doc.tokens, make(1).tokens)
  assert not np.array_equal(doc.tokens, make(2).tokens)
  key = doc.answer
  assert len(doc.tokens) == length and len(key) == passkey.DIGITS and key.isdigit()
  prompt = doc.tokens[:doc.answer_start].tobytes()
  assert prompt.count(key) == 1 and prompt.endswith(passkey.QUESTION)
  assert prompt[doc.needles[0]:].startswith(passkey.needle(key))
  # At the stated depth of the haystack, within one sentence.
  hay_bytes = length - len(passkey.needle(key)) - len(passkey.QUESTION) - len(key)
  tolerance = FILLER_SENTENCE if hay_kind == 'filler' else TEXT_SENTENCE
  assert abs(_hay_position(doc, 0) - depth * hay_bytes) <= tolerance
  assert doc.depth == depth and doc.target == 0


@pytest.mark.parametrize('hay_kind', ['filler', 'text'])
def test_babi_answer_is_the_latest_fact_about_the_person_asked(hay_kind):
  length, facts = 4000, 6
  for seed in range(30):
    depth = [0.0, 0.2, 0.5, 0.9, 1.0][seed % 5]
    hay = haystack.filler if hay_kind == 'filler' else haystack.text_haystack(TEXT, 31 * seed)
    doc = babi.document(haystack.rng_for(seed), length, hay, depth, facts=facts)
    again = babi.document(haystack.rng_for(seed), length, hay, depth, facts=facts)
    np.testing.assert_array_equal(doc.tokens, again.tokens)
    prompt = doc.tokens[:doc.answer_start].tobytes()
    asked = re.search(rb'\nWhere is (\w+)\? \1 is in the $', prompt)[1]
    found = [(m.start(), m[1], m[2]) for m in FACT.finditer(prompt)]
    assert [o for o, _, _ in found] == list(doc.needles) and len(found) == facts
    about = [(o, place) for o, person, place in found if person == asked]
    assert about[-1][1] == doc.answer and about[-1][0] == doc.needles[doc.target]
    # Earlier facts about the person asked name other places; the deciding one's place in
    # the haystack is the depth, within one sentence; round(depth x (F-1)) facts precede it.
    assert all(place != doc.answer for _, place in about[:-1])
    assert doc.target == round(depth * (facts - 1))
    hay_bytes = doc.answer_start - sum(map(len, _needle_texts(doc))) - len(
        b'\nWhere is ' + asked + b'? ' + asked + b' is in the ')
    tolerance = FILLER_SENTENCE if hay_kind == 'filler' else TEXT_SENTENCE
    assert abs(_hay_position(doc, doc.target) - depth * hay_bytes) <= tolerance


def test_documents_too_short_and_bad_options_are_one_line():
  with pytest.raises(ValueError, match=r'at least \d+') as e:
    PASSKEY.document(haystack.rng_for(0), 40)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='passkey_digits'):
    PASSKEY.options({'passkey_digits': 0})
  with pytest.raises(ValueError, match='babi_facts'):
    BABI.options({'babi_facts': 'four'})


# --------------------------------------------------------------------------- #
# Training data: probe tasks of their own, and probes mixed into a corpus.
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize('name', ['passkey', 'babi'])
def test_probe_task_weights_only_the_answer(name):
  config = base.get_config()
  config.data.update(name=name, seq_len=255)
  source = tasks.load(config.data, 'train')
  batch = source.get(np.array([3, 5, 3]))
  np.testing.assert_array_equal(batch['inputs'][0], batch['inputs'][2])
  assert batch['inputs'].shape == batch['weights'].shape == (3, 255)
  for row in range(3):
    doc = source.document([3, 5, 3][row])
    np.testing.assert_array_equal(batch['targets'][row], doc.tokens[1:])
    answer = bytes(batch['targets'][row][batch['weights'][row] > 0].astype(np.uint8).tolist())
    assert answer == doc.answer
  val = tasks.load(config.data, 'validation').get(np.array([3]))
  assert not np.array_equal(val['inputs'], batch['inputs'][:1])
  config.data.seq_len = 64
  with pytest.raises(ValueError, match='too short'):
    tasks.validate(config.data)


def test_probes_mixed_into_a_corpus_at_their_rates(tmp_path):
  config = helpers.tiny_config(tmp_path, **{'data.seq_len': 256, 'data.passkey_rate': 0.2,
                                            'data.babi_rate': 0.1})
  tasks.validate(config.data)
  mixed = tasks.load(config.data, 'train')
  plain = corpus.load_split(config.data, 'train')
  W = (len(plain) - 257) // 256 + 1
  assert mixed.base.num_windows == W
  assert mixed.num_windows == W + round(W * 0.2 / 0.7) + round(W * 0.1 / 0.7)
  ids = np.arange(mixed.num_windows)
  batch = mixed.get(ids)
  again = mixed.get(ids[::-1])
  np.testing.assert_array_equal(batch['inputs'], again['inputs'][::-1])
  np.testing.assert_array_equal(batch['inputs'][:W], mixed.base.get(ids[:W])['inputs'])
  assert np.all(batch['weights'] == 1)  # every byte weighted
  probes = batch['inputs'][W:]
  kinds = [p.name for p, n in mixed.counts for _ in range(n)]  # rows of each probe, in order
  assert sorted(set(kinds)) == ['babi', 'passkey'] and kinds.count('passkey') == round(W * 0.2 / 0.7)
  words = set(open(config.data.path).read().split())
  for i, (row, targets) in enumerate(zip(probes, batch['targets'][W:])):
    text = bytes(np.concatenate([row[:1], targets]).astype(np.uint8).tolist())
    # Each probe's documents at its ids; the haystack is the corpus's text.
    assert (passkey.QUESTION in text) == (kinds[i] == 'passkey')
    assert (b'\nWhere is ' in text) == (kinds[i] == 'babi')
    assert any(w.encode() in text for w in words)
  # The validation split is not mixed.
  assert not isinstance(tasks.load(config.data, 'validation'), haystack.Mixed)
  # probe_weights='answer': probe rows weight their answers' bytes only, corpus rows all.
  config.data.probe_weights = 'answer'
  answered = tasks.load(config.data, 'train').get(ids)
  assert np.all(answered['weights'][:W] == 1)
  for i, (row, targets, w) in enumerate(zip(probes, answered['targets'][W:],
                                            answered['weights'][W:])):
    doc = mixed.document(W + i)
    np.testing.assert_allclose(w.sum(), 256)  # the answer counts as a window of text
    assert bytes(targets[w > 0].astype(np.uint8).tolist()) == doc.answer


@pytest.mark.parametrize('fields, match', [
    ({'data.passkey_rate': -0.1}, 'passkey_rate'),
    ({'data.babi_rate': 1.0}, 'babi_rate'),
    ({'data.passkey_rate': 0.6, 'data.babi_rate': 0.5}, 'sum to 1.1'),
    ({'data.passkey_rate': 0.1, 'data.seq_len': 32}, 'too short'),
    ({'data.probe_weights': 'answers'}, "probe_weights='answers' is unknown"),
])
def test_bad_probe_rates_are_one_line(tmp_path, fields, match):
  config = helpers.tiny_config(tmp_path, **fields)
  with pytest.raises(ValueError, match=match) as e:
    tasks.validate(config.data)
  assert '\n' not in str(e.value)


def test_carrying_state_reads_probe_documents_among_the_corpus_documents(tmp_path):
  config = helpers.tiny_config(tmp_path, **{'data.seq_len': 256, 'data.passkey_rate': 0.25,
                                            'data.probe_document_bytes': 1024,
                                            'data.document_bytes': 512})  # pieces: documents
  source = tasks.get(config.data.name).documents(config.data, 'train')
  assert isinstance(source, haystack.MixedDocuments)
  assert source.num_documents > source.base.num_documents
  stream = data_lib.DocumentStream(source, 2, seed=0)
  rows = [b'', b'']
  for _ in range(source.num_documents * 4):
    for r, targets in enumerate(next(stream)['targets']):
      rows[r] += bytes(targets.astype(np.uint8).tolist())
  assert any(passkey.QUESTION in text for text in rows)  # read in turn, window by window
  assert not isinstance(tasks.get(config.data.name).documents(config.data, 'validation'),
                        haystack.MixedDocuments)


# --------------------------------------------------------------------------- #
# Corpora with their own splits, and the books laid out as one.
# --------------------------------------------------------------------------- #

def _split_folder(root, splits=('train', 'validation', 'test')):
  texts = {}
  for split in splits:
    for i in range(2):
      path = root / split / f'{split}_{i}.txt'
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(f'{split} book {i}. '.encode() * (50 + 10 * i))
      texts.setdefault(split, []).append(path.read_bytes())
  return texts


def test_a_folder_with_split_folders_uses_them(tmp_path):
  texts = _split_folder(tmp_path / 'corpus')
  config = helpers.tiny_config(tmp_path, **{'data.path': str(tmp_path / 'corpus')})
  for split, docs in texts.items():
    got = [d.tobytes() for d in corpus.load_documents(config.data, split)]
    assert got == docs
  assert tasks.load(config.data, 'test').num_windows > 0
  # Without split folders there is no test split; a train/ without validation/ is refused.
  config.data.path = str(tmp_path / 'corpus' / 'train')
  with pytest.raises(ValueError, match='no test split'):
    tasks.load(config.data, 'test')
  _split_folder(tmp_path / 'half', splits=('train',))
  config.data.path = str(tmp_path / 'half')
  with pytest.raises(ValueError, match='no validation/'):
    tasks.load(config.data, 'validation')


def test_books_are_laid_out_by_a_fixed_split(tmp_path, capsys):
  src = tmp_path / 'books'
  src.mkdir()
  manifest = []
  for split, names in books.SPLITS.items():
    for name in names:
      body = f'{name}: a book of the {split} split. '.encode() * 20
      (src / name).write_bytes(body)
      manifest.append({'file': name, 'title': name[:-4], 'bytes': len(body),
                       'sha256': hashlib.sha256(body).hexdigest()})
  (src / 'MANIFEST.json').write_text(json.dumps(manifest))
  all_names = [n for names in books.SPLITS.values() for n in names]
  assert len(all_names) == len(set(all_names)) == 22
  assert (len(books.TRAIN), len(books.VALIDATION), len(books.TEST)) == (18, 2, 2)
  books.main(['--src', str(src), '--out', str(tmp_path / 'out')])
  assert 'train      18 books' in capsys.readouterr().out
  for split, names in books.SPLITS.items():
    assert sorted(os.listdir(tmp_path / 'out' / split)) == sorted(names)
    assert os.path.islink(tmp_path / 'out' / split / names[0])
  config = helpers.tiny_config(tmp_path, **{'data.path': str(tmp_path / 'out')})
  assert len(corpus.load_documents(config.data, 'validation')) == 2
  (src / books.TEST[0]).write_bytes(b'changed')
  with pytest.raises(ValueError, match='sha256'):
    books.lay_out(str(src), str(tmp_path / 'again'))
  os.remove(src / books.TEST[0])
  with pytest.raises(ValueError, match='missing'):
    books.lay_out(str(src), str(tmp_path / 'again'))
  assert not os.path.exists(tmp_path / 'again')  # nothing written


# --------------------------------------------------------------------------- #
# The scorer, with fake models that read as decode.stream does.
# --------------------------------------------------------------------------- #

def _fake_reader(answer_of, segment=37):
  """A "model" reading inputs [B, N] in segments: after the question it writes the answer
  `answer_of(prefix bytes)` gives (None: nothing known), byte by byte; uniform elsewhere."""
  def read(tokens_BN):
    B, N = tokens_BN.shape
    logits = np.zeros((B, N, 256), np.float32)
    for b in range(B):
      text = bytes(np.asarray(tokens_BN[b], np.uint8).tolist())
      ask = max(text.rfind(q) + len(q) for q in (passkey.QUESTION, b' is in the '))
      answer = answer_of(text[:ask])
      for i, byte in enumerate(answer or b''):
        if ask - 1 + i < N:
          logits[b, ask - 1 + i, byte] = 40.0
    for start in range(0, N, segment):
      yield start, logits[:, start:start + segment]
  return read


def _copy_key(prefix):
  m = re.search(rb'The pass key is (\d+)\. Remember it', prefix)
  return m[1] if m else None


def _latest_place(prefix):
  asked = re.search(rb'\nWhere is (\w+)\? \1 is in the $', prefix)[1]
  places = [m[2] for m in FACT.finditer(prefix) if m[1] == asked]
  return places[-1] if places else None


def test_an_oracle_retrieves_everything_and_a_constant_model_is_at_chance():
  lengths, depths = [300, 1000], [0.0, 0.5, 1.0]
  grid = retrieval.run_grid(_fake_reader(_copy_key), PASSKEY, lengths, depths, 4, batch=3)
  assert grid['accuracy'] == [[1.0] * 3] * 2
  assert np.allclose(grid['answer_logprob'], 0.0, atol=1e-12)
  grid = retrieval.run_grid(_fake_reader(_latest_place), BABI, lengths, depths, 4, batch=5)
  assert grid['accuracy'] == [[1.0] * 3] * 2
  # A constant answer: the pass key 77777, the kitchen.
  grid = retrieval.run_grid(_fake_reader(lambda p: b'77777'), PASSKEY, lengths, depths, 20)
  assert np.max(grid['accuracy']) == 0.0
  assert abs(np.mean(grid['byte_accuracy']) - 0.1) < 0.05  # a digit in ten
  grid = retrieval.run_grid(_fake_reader(lambda p: b'kitchen'), BABI, [400], [0.0, 0.5, 1.0],
                            100, batch=50)
  assert abs(np.mean(grid['accuracy']) - 1 / len(babi.PLACES)) < 0.06
  # Uniform logits: each byte of the answer costs ln 256; the argmax (byte 0) is never right.
  grid = retrieval.run_grid(_fake_reader(lambda p: None), PASSKEY, [300], [0.5], 3)
  assert grid['accuracy'] == [[0.0]]
  np.testing.assert_allclose(grid['answer_logprob'], [[-5 * math.log(256)]], rtol=1e-6)


def _tiny_model(kind):
  cfg = model_lib.ModelConfig(attention=kind, num_latents=4, num_heads=2, chunk_size=4,
                              emb_dim=16, mlp_dim=32, num_layers=2)
  model = model_lib.build_model(cfg)
  params = model.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params']
  return model, params


# causal_latent's decode path compiles for about 15 s of CPU: slow tier.
@pytest.mark.parametrize('kind', [pytest.param('causal_latent', marks=pytest.mark.slow), 'full'])
def test_streaming_the_probe_equals_one_pass(kind):
  model, params = _tiny_model(kind)
  docs = [PASSKEY.document(haystack.rng_for(s), 150, depth=d) for s, d in ((0, 0.1), (1, 0.9))]
  inputs = np.stack([d.tokens[:-1] for d in docs]).astype(np.int32)
  one_pass = np.asarray(jax.jit(model.apply)({'params': params}, inputs))[:, -5:]
  # Segments of 13 bytes: across chunk boundaries (C = 4), the last one 6 bytes.
  read = retrieval.model_reader(model, params, 13)
  np.testing.assert_allclose(retrieval.tail_logits(read, inputs, 5), one_pass, atol=1e-5,
                             rtol=1e-5)
  once = retrieval.score(lambda x: [(0, np.asarray(model.apply({'params': params}, x)))],
                         docs, 2)
  streamed = retrieval.score(read, docs, 2)
  np.testing.assert_allclose(streamed['logprob'], once['logprob'], atol=1e-4)


@pytest.mark.slow  # compiles a latent model's decode steps
def test_exact_retrieval_is_what_greedy_decoding_writes():
  model, params = _tiny_model('causal_latent')
  doc = PASSKEY.document(haystack.rng_for(3), 120, depth=0.5)
  prompt = doc.tokens[:doc.answer_start]
  greedy = np.asarray(decode.generate(model, params, jnp.asarray(prompt[None], jnp.int32), 5,
                                      jax.random.key(0), decode.Sampling(0.0)))[0]
  read = retrieval.model_reader(model, params, 32)
  as_written = haystack.Document(np.concatenate([prompt, greedy.astype(np.uint8)]),
                                 doc.answer_start, doc.needles, 0, 0.5)
  other = greedy.astype(np.uint8).copy()
  other[2] = (int(other[2]) + 1) % 256
  one_off = haystack.Document(np.concatenate([prompt, other]), doc.answer_start, doc.needles,
                              0, 0.5)
  s = retrieval.score(read, [as_written, one_off], 2)
  assert s['exact'].tolist() == [True, False]
  assert s['byte_accuracy'][1] < 1.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(lengths=[2 ** 20 + 1]), 'up to 1,048,576'),
    (dict(lengths=[50]), 'too short'),
    (dict(depths=[1.5]), r'\[0, 1\]'),
    (dict(samples=0), '--samples'),
    (dict(segment=0), '--segment'),
    (dict(lengths=[]), 'at least one'),
])
def test_bad_grid_arguments_are_one_line(kwargs, match):
  args = {**dict(lengths=[512], depths=[0.5], samples=2, batch=2, segment=64), **kwargs}
  with pytest.raises(ValueError, match=match) as e:
    retrieval.check_grid(PASSKEY, **args)
  assert '\n' not in str(e.value)
  with pytest.raises(ValueError, match='--depths'):
    retrieval.parse_list('0,half', '--depths', float)
  with pytest.raises(ValueError, match="use one of"):
    haystack.get_probe('needle')


# --------------------------------------------------------------------------- #
# On a trained workdir: the library, the report and probe.py.
# --------------------------------------------------------------------------- #

@pytest.mark.slow  # trains, and runs probe.py
def test_probe_a_trained_workdir_and_report_it(tmp_path):
  sweep = tmp_path / 'sweep'
  workdir = str(sweep / 'run')
  config = helpers.tiny_config(tmp_path, **{'data.seq_len': 128, 'data.passkey_rate': 0.25,
                                            'num_train_steps': 3, 'eval_every_steps': 3,
                                            'checkpoint_every_steps': 3})
  trainer.train_and_evaluate(config, workdir)
  r = retrieval.probe_checkpoint(workdir, 'passkey', [128, 256], [0.0, 1.0], 2, batch=4,
                                 command='test')
  assert r['path'] == os.path.join(workdir, 'probe_passkey_validation_step_3.json')
  saved = json.load(open(r['path']))
  assert saved['lengths'] == [128, 256] and saved['depths'] == [0.0, 1.0]
  assert np.array(saved['accuracy']).shape == (2, 2) and saved['step'] == 3
  assert saved['segment'] == 128 and saved['decode'] == 'state' and saved['date']
  assert os.path.exists(r['path'][:-len('.json')] + '.png')
  rows = report.collect(str(sweep))
  assert rows[0]['probes'] == {'passkey_validation': saved['mean_accuracy']}
  paths = report.write_report(rows, str(tmp_path / 'report'))
  assert 'passkey_validation retrieval' in open(paths[0]).read()
  assert 'probe_passkey_validation' in open(paths[1]).readline()
  env = {**os.environ, 'XLA_FLAGS': helpers.xla_flags(1), 'JAX_PLATFORMS': 'cpu'}
  bad = subprocess.run([sys.executable, os.path.join(helpers.REPO, 'probe.py'),
                        f'--workdir={workdir}', '--depths=0,2'], capture_output=True,
                       text=True, env=env, timeout=300)
  assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
  assert '--depths' in bad.stderr
  good = subprocess.run([sys.executable, os.path.join(helpers.REPO, 'probe.py'),
                         f'--workdir={workdir}', '--probe=babi', '--lengths=256',
                         '--depths=0.5', '--samples=2', '--haystack=filler'],
                        capture_output=True, text=True, env=env, timeout=300)
  assert good.returncode == 0, good.stderr
  saved = json.load(open(os.path.join(workdir, 'probe_babi_filler_step_3.json')))
  assert saved['command'].startswith('python ') and '--probe=babi' in saved['command']
