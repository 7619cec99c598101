"""Byte pipelines: tokenizer, windows, deterministic resumable order, sources, errors."""

import os
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from latent_flax.tasks import data
from latent_flax import tasks
from latent_flax.tasks import byte_cache, corpus
from tests import helpers


def _dc(**kw):
  d = dict(name='text_files', path='', text_key='text', data_dir='', seq_len=16)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def test_tokenizer_round_trip_and_separator():
  text = 'héllo, wörld\n'
  tokens = data.encode(text)
  assert tokens.dtype == np.uint8 and len(tokens) == len(text.encode('utf-8'))
  assert data.decode(tokens) == text
  joined = data.join_documents([b'ab', b'cd'])
  assert list(joined) == [97, 98, data.SEPARATOR, 99, 100]


def test_windows_are_shifted_pairs():
  w = data.Windows(np.arange(100, dtype=np.uint8), seq_len=10)
  assert w.num_windows == 9
  batch = w.get(np.array([0, 3]))
  np.testing.assert_array_equal(batch['inputs'][1], np.arange(30, 40))
  np.testing.assert_array_equal(batch['targets'][1], np.arange(31, 41))


def test_order_is_deterministic_resumable_and_process_independent():
  w = data.Windows(np.arange(5000, dtype=np.int64).astype(np.uint8), seq_len=7)
  full = data.TrainIterator(w, 8, seed=3)
  batches = [next(full)['inputs'] for _ in range(200)]  # crosses several epochs
  resumed = data.TrainIterator(w, 8, seed=3, position=137)
  np.testing.assert_array_equal(next(resumed)['inputs'], batches[137])
  halves = [data.TrainIterator(w, 8, seed=3, process_index=i, process_count=2, position=50)
            for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([next(h)['inputs'] for h in halves]), batches[50])
  other_seed = data.TrainIterator(w, 8, seed=4)
  assert not np.array_equal(next(other_seed)['inputs'], batches[0])
  # every window is seen exactly once per epoch
  ids = np.concatenate([full.sample_ids(p) for p in range(w.num_windows // 8)])
  assert len(set(ids.tolist())) == len(ids)


def test_eval_batches_cover_split_once_with_zero_weight_padding():
  w = data.Windows(np.arange(170, dtype=np.uint8), seq_len=10)  # 16 windows
  batches = list(data.eval_batches(w, 6, None))
  assert len(batches) == 3
  assert sum(b['weights'].sum() for b in batches) == 16 * 10


def test_text_files_single_file_splits_90_10(tmp_path):
  f = tmp_path / 'a.txt'
  f.write_bytes(bytes(range(200)) * 5)
  train = corpus.load_split(_dc(path=str(f)), 'train')
  val = corpus.load_split(_dc(path=str(f)), 'validation')
  assert len(train) == 900 and len(val) == 100
  assert bytes(train) + bytes(val) == f.read_bytes()


def test_text_files_folder_splits_by_file(tmp_path):
  for i in range(40):
    (tmp_path / f'f{i}.txt').write_text(f'file {i} ' * 10)
  train = data.decode(corpus.load_split(_dc(path=str(tmp_path)), 'train'))
  val = data.decode(corpus.load_split(_dc(path=str(tmp_path)), 'validation'))
  assert 0 < len(val) < len(train)
  for i in range(40):
    assert (f'file {i} ' in train) != (f'file {i} ' in val)


def test_tfds_catalog_dataset_with_mock_data():
  with tfds.testing.mock_data(num_examples=3):
    train = corpus.load_split(_dc(name='tfds:tiny_shakespeare'), 'train')
  assert len(train) > 0 and train.dtype == np.uint8


def test_stdlib_builder_lists_sources_without_tests():
  files = corpus.stdlib_files()
  assert any(f.endswith('/json/decoder.py') for f in files)
  assert not any('/test/' in f or '/site-packages/' in f for f in files)
  assert corpus.stdlib_builder_class().BUILDER_CONFIGS[0].name.startswith('cpython_')


@pytest.mark.parametrize('kw,message', [
    (dict(name='nope'), "config.data.name='nope' is unknown"),
    (dict(path='/no/such/file*'), 'matches no file'),
    (dict(seq_len=0), 'seq_len=0 must be an integer >= 1'),
    (dict(name='tfds:no_such_dataset_xyz'), "no tfds dataset named 'no_such_dataset_xyz'"),
])
def test_bad_data_config_gives_one_clear_line(kw, message):
  with pytest.raises(ValueError) as err:
    tasks.load(_dc(**kw), 'train')
  assert message in str(err.value)


def test_corpus_shorter_than_one_window():
  with pytest.raises(ValueError, match='fewer than one window'):
    data.Windows(np.zeros(10, np.uint8), seq_len=16)


def test_folder_split_ignores_how_the_path_is_written_and_is_never_empty(tmp_path):
  folder = tmp_path / 'corpus'
  folder.mkdir()
  for i in range(12):
    (folder / f'f{i}.txt').write_text(f'file {i} ' * 10)
  spellings = [str(folder), str(folder) + '/', str(tmp_path / '.' / 'corpus'),
               str(folder / '*.txt')]
  splits = [(bytes(corpus.load_split(_dc(path=p), 'train')),
             bytes(corpus.load_split(_dc(path=p), 'validation'))) for p in spellings]
  assert all(s == splits[0] for s in splits), 'the split depends on how the path is spelled'
  renamed = tmp_path / 'renamed'
  folder.rename(renamed)
  assert (bytes(corpus.load_split(_dc(path=str(renamed)), 'train')),
          bytes(corpus.load_split(_dc(path=str(renamed)), 'validation'))) == splits[0]
  # Two files: one each way, whatever their hashes (10% validation by hash alone would
  # leave validation empty 81% of the time).
  for names in (('a.txt', 'b.txt'), ('x1', 'x2'), ('p', 'q')):
    pair = tmp_path / ('pair_' + names[0])
    pair.mkdir()
    for n in names:
      (pair / n).write_text(n * 50)
    train = data.decode(corpus.load_split(_dc(path=str(pair)), 'train'))
    val = data.decode(corpus.load_split(_dc(path=str(pair)), 'validation'))
    assert train and val and (names[0] * 50 in val) != (names[0] * 50 in train)
  assert corpus.split_files(['only'], 10) in (([], ['only']), (['only'], []))


def test_document_windows_start_at_a_document_and_never_cross_one():
  docs = [bytes([1 + i]) * n for i, n in enumerate((40, 10, 17, 100))]  # doc i is byte i+1
  w = data.DocumentWindows(docs, seq_len=16)
  assert w.num_windows == 3  # the 10-byte document is shorter than seq_len + 1
  batch = w.get(np.arange(3))
  for row, byte in zip(range(3), (1, 3, 4)):
    assert set(batch['inputs'][row]) == {byte} and set(batch['targets'][row]) == {byte}
  with pytest.raises(ValueError, match='no document .* has seq_len \\+ 1 = 101 bytes'):
    data.DocumentWindows(docs, seq_len=100)


def test_min_document_bytes_keeps_long_files_and_document_windows_load(tmp_path):
  lengths = [50, 60, 70] + [2100 + 100 * i for i in range(16)]
  for i, n in enumerate(lengths):
    (tmp_path / f'f{i}.txt').write_bytes(bytes([65 + i]) * n)
  long_only = _dc(path=str(tmp_path), min_document_bytes=1000, eval_windows='documents',
                  seq_len=2000)
  kept = corpus.load_documents(long_only, 'train') + corpus.load_documents(long_only,
                                                                           'validation')
  assert sorted(map(len, kept)) == lengths[3:]
  windows = tasks.load(long_only, 'validation')
  assert isinstance(windows, data.DocumentWindows)
  assert windows.num_windows == len(corpus.load_documents(long_only, 'validation'))
  assert isinstance(tasks.load(long_only, 'train'), data.Windows)  # training still streams
  with pytest.raises(ValueError, match='min_document_bytes=9,000 bytes .* lower it'):
    corpus.load_documents(_dc(path=str(tmp_path), min_document_bytes=9000), 'train')
  with pytest.raises(ValueError, match='no document .* has seq_len \\+ 1 = 4,001 bytes'):
    tasks.load(_dc(path=str(tmp_path), eval_windows='documents', seq_len=4000), 'validation')
  with pytest.raises(ValueError, match="eval_windows='doc' is unknown"):
    tasks.load(_dc(path=str(tmp_path), eval_windows='doc'), 'train')


def test_prepared_split_is_a_map_giving_todays_stream(tmp_path):
  """The stream read from the prepared byte file equals the one of the split joined in
  memory, drawn in the order of runs begun before the maps (numpy's whole permutation)."""
  texts = {f'f{i}.txt': (f'document {i} ' * (3 + i)).encode() for i in range(30)}
  for name, text in texts.items():
    (tmp_path / name).write_bytes(text)
  cfg = _dc(path=str(tmp_path))
  mapped = tasks.load(cfg, 'train')
  assert isinstance(mapped.data, np.memmap) and not mapped.data.flags.writeable
  train_names, _ = corpus.split_files(sorted(texts), corpus.VALIDATION_PERCENT_FILES)
  in_memory = data.join_documents([texts[n] for n in train_names])
  np.testing.assert_array_equal(mapped.data, in_memory)
  seq_len, batch, seed = cfg.seq_len, 4, 7
  num_windows = (len(in_memory) - seq_len - 1) // seq_len + 1
  stream = data.TrainIterator(mapped, batch, seed, shuffle='numpy')
  for position in range(2 * num_windows // batch + 1):  # three epochs
    samples = np.arange(position * batch, (position + 1) * batch)
    ids = [np.random.default_rng([seed, s // num_windows]).permutation(num_windows)[
        s % num_windows] for s in samples]
    want = np.stack([in_memory[i * seq_len:i * seq_len + seq_len + 1] for i in ids])
    got = next(stream)
    np.testing.assert_array_equal(got['inputs'], want[:, :-1])
    np.testing.assert_array_equal(got['targets'], want[:, 1:])
  # A data state saved before 'shuffle' existed resumes on numpy's order.
  old = data.TrainIterator(mapped, batch, seed)
  old.set_state({'position': 5, 'seed': seed})
  assert old.shuffle == 'numpy'
  np.testing.assert_array_equal(next(old)['inputs'],
                                data.TrainIterator(mapped, batch, seed, position=5,
                                                   shuffle='numpy').__next__()['inputs'])


@pytest.mark.parametrize('num_windows', [1, 2, 37, 1000])
def test_index_shuffle_order_is_a_permutation_per_epoch(num_windows):
  w = data.Windows(np.arange(num_windows * 3 + 1, dtype=np.int64).astype(np.uint8), seq_len=3)
  assert w.num_windows == num_windows
  it = data.TrainIterator(w, 1, seed=5)
  assert it.get_state()['shuffle'] == 'index_shuffle'
  epochs = [np.concatenate([it.sample_ids(p) for p in range(e * num_windows,
                                                            (e + 1) * num_windows)])
            for e in range(3)]
  for ids in epochs:
    assert sorted(ids.tolist()) == list(range(num_windows))
  if num_windows > 2:
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(num_windows))
    other = data.TrainIterator(w, 1, seed=6)
    assert not np.array_equal(np.concatenate([other.sample_ids(p) for p in
                                              range(num_windows)]), epochs[0])


def _write_docs(out_dir, fail_after=None):
  """Documents for byte_cache.prepare that leave a mark for each time they are read."""
  with open(os.path.join(out_dir, f'read_{os.getpid()}_{time.time_ns()}'), 'w'):
    pass
  for i in range(5):
    if fail_after is not None and i == fail_after:
      raise RuntimeError('writer died')
    time.sleep(0.2)
    yield bytes([65 + i]) * (10 + i)


@pytest.mark.slow  # starts child processes
def test_split_is_prepared_once_atomically_and_other_processes_wait(tmp_path):
  cache, marks = tmp_path / 'cache', tmp_path / 'marks'
  marks.mkdir()
  key = {'name': 'toy', 'split': 'train'}
  with pytest.raises(RuntimeError, match='writer died'):
    byte_cache.prepare(key, _write_docs(marks, fail_after=3), str(cache), 'toy')
  assert [f.suffix for f in cache.iterdir()] == ['.lock'], 'a failed write left files'
  # Three processes at once: one writes, the others wait for it and map the same bytes.
  code = ("import sys; from tests import test_data as t; from latent_flax.tasks import "
          "byte_cache; p = byte_cache.prepare({'name': 'toy', 'split': 'train'}, "
          f"t._write_docs({str(marks)!r}), {str(cache)!r}, 'toy'); "
          "sys.stdout.write(bytes(p.data).hex())")
  procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                            env=helpers.subprocess_env(1), cwd=helpers.REPO) for _ in range(3)]
  outs = [bytes.fromhex(p.communicate(timeout=120)[0].decode()) for p in procs]
  assert all(p.returncode == 0 for p in procs)
  want = b'\0'.join(bytes([65 + i]) * (10 + i) for i in range(5))
  assert outs == [want] * 3
  assert len(list(marks.iterdir())) == 2  # the failed write, then one of the three
  again = byte_cache.prepare(key, _write_docs(marks), str(cache), 'toy')
  assert len(list(marks.iterdir())) == 2 and bytes(again.data) == want
  assert [bytes(d) for d in again.documents()] == want.split(b'\0')
  # A changed source (another key) is prepared anew.
  byte_cache.prepare({**key, 'version': 2}, _write_docs(marks), str(cache), 'toy')
  assert len(list(marks.iterdir())) == 3


def test_evaluation_windows_are_each_documents_first_bytes_as_eval_reads_them(tmp_path):
  from latent_flax.evaluation import runs
  lengths = [50, 60, 70] + [2100 + 100 * i for i in range(16)]
  (tmp_path / 'docs').mkdir()
  for i, n in enumerate(lengths):
    (tmp_path / 'docs' / f'f{i}.txt').write_bytes(bytes([65 + i]) * n)
  config = helpers.tiny_config(tmp_path)
  config.data.update(name='text_files', path=str(tmp_path / 'docs'), min_document_bytes=1000)
  docs = runs.evaluation_windows(config, 2000)
  validation = corpus.load_documents(config.data, 'validation')
  assert docs.shape == (len(validation), 2001)
  for row, doc in zip(docs, validation):  # one document per row, from its first byte
    assert bytes(row.astype(np.uint8)) == bytes(doc[:2001])
