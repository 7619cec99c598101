"""The prepared-corpus cache checked against its record: damaged files are said in one line
naming the file and prepared anew; temporary files of dead preparers are removed."""

import fcntl
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from latent_flax.tasks import byte_cache

KEY = {'name': 'toy', 'split': 'train'}
DOCS = [bytes([65 + i]) * (1000 + 37 * i) for i in range(20)]
WANT = b'\0'.join(DOCS)


def _prepare(cache, reads=None):
  """The toy split from `cache`; `reads` counts how often the documents were read."""
  def documents():
    if reads is not None:
      reads.append(1)
    yield from DOCS
  byte_cache._open.cache_clear()  # as a new process opens it
  return byte_cache.prepare(KEY, documents(), str(cache), 'toy')


def _stem(cache) -> str:
  (path,) = [p for p in cache.iterdir() if p.suffix == '.bytes']
  return str(path)[:-len('.bytes')]


def _truncate(path, keep):
  with open(path, 'r+b') as f:
    f.truncate(keep)


def _flip_a_byte(path):
  with open(path, 'r+b') as f:
    f.seek(len(WANT) // 2)
    f.write(b'Z')


def _garble(path):
  with open(path, 'wb') as f:
    f.write(b'\x93NUMPY garbage')


DAMAGE = {
    'truncated': ('.bytes', lambda p: _truncate(p, len(WANT) * 37 // 100),
                  rf'toy-train-\w+\.bytes holds {len(WANT) * 37 // 100:,} bytes but its record '
                  rf'says {len(WANT):,}'),
    'one byte changed': ('.bytes', _flip_a_byte,
                         r'toy-train-\w+\.bytes differs from the checksum in its record'),
    'table cut short': ('.docs.npy', lambda p: _truncate(p, 100),
                        r"document table \S+toy-train-\w+\.docs\.npy cannot be read"),
    'table garbled': ('.docs.npy', _garble,
                      r"document table \S+toy-train-\w+\.docs\.npy cannot be read"),
    'record garbled': ('.json', lambda p: _truncate(p, 5),
                       r'cache record \S+toy-train-\w+\.json cannot be read'),
}


@pytest.mark.parametrize('damage', DAMAGE)
def test_a_damaged_split_is_named_and_prepared_anew(tmp_path, capsys, damage):
  reads = []
  first = _prepare(tmp_path, reads)
  assert bytes(first.data) == WANT and len(reads) == 1
  suffix, spoil, message = DAMAGE[damage]
  spoil(_stem(tmp_path) + suffix)
  capsys.readouterr()
  again = _prepare(tmp_path, reads)
  err = capsys.readouterr().err
  assert len(reads) == 2, 'the damaged split was used'
  assert bytes(again.data) == WANT and [bytes(d) for d in again.documents()] == DOCS
  (line,) = [l for l in err.splitlines() if 'preparing it anew' in l]
  assert line.endswith('; preparing it anew.')
  assert re.search(message, line), line
  _prepare(tmp_path, reads)  # repaired: used as it is
  assert len(reads) == 2


def test_a_record_written_before_checksums_is_checked_by_size(tmp_path):
  reads = []
  _prepare(tmp_path, reads)
  record = _stem(tmp_path) + '.json'
  with open(record) as f:
    meta = json.load(f)
  with open(record, 'w') as f:
    json.dump({k: v for k, v in meta.items() if k != 'sha256'}, f)
  _flip_a_byte(_stem(tmp_path) + '.bytes')  # same size: what the old record cannot see
  assert len(_prepare(tmp_path, reads).data) == len(WANT) and len(reads) == 1
  _truncate(_stem(tmp_path) + '.bytes', 10)
  assert bytes(_prepare(tmp_path, reads).data) == WANT and len(reads) == 2


@pytest.mark.slow  # starts child processes
def test_temporary_files_of_dead_preparers_are_removed_and_live_ones_kept(tmp_path, capsys):
  _prepare(tmp_path)
  stem = _stem(tmp_path)
  gone = subprocess.Popen([sys.executable, '-c', 'pass'])
  gone.wait()
  dead = [f'{stem}.tmp{gone.pid}{suffix}' for suffix in ('.bytes', '.docs.npy')]
  alive = f'{stem}.tmp{os.getpid()}.bytes'  # a process that runs: this one
  for path in dead + [alive]:
    with open(path, 'wb') as f:
      f.write(b'x' * 123)
  # While a preparer holds the split's lock, its files are its own: nothing is removed.
  with open(stem + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    held = subprocess.run([sys.executable, '-c', 'import sys; from latent_flax.tasks import '
                           'byte_cache; print(byte_cache.remove_interrupted(sys.argv[1]))',
                           str(tmp_path)], capture_output=True, text=True, check=True)
    assert held.stdout.strip() == '[]'
  capsys.readouterr()
  assert sorted(byte_cache.remove_interrupted(str(tmp_path))) == sorted(dead)
  assert os.path.exists(alive) and not any(map(os.path.exists, dead))
  err = capsys.readouterr().err
  assert f'Removed {dead[0]} (123 bytes), left by a preparation that was stopped (process ' \
         f'{gone.pid} is gone).' in err
  os.remove(alive)


def test_checksums_are_checked_only_up_to_the_stated_size(tmp_path, monkeypatch):
  """Past CHECKSUM_MAX_BYTES a split is checked by size and table alone (no full read)."""
  reads = []
  _prepare(tmp_path, reads)
  _flip_a_byte(_stem(tmp_path) + '.bytes')
  monkeypatch.setattr(byte_cache, 'CHECKSUM_MAX_BYTES', len(WANT) - 1)
  assert len(reads) == 1 and np.asarray(_prepare(tmp_path, reads).data)[len(WANT) // 2] == ord('Z')
  monkeypatch.setattr(byte_cache, 'CHECKSUM_MAX_BYTES', len(WANT))
  assert bytes(_prepare(tmp_path, reads).data) == WANT and len(reads) == 2


_PREPARE_STDLIB = '''
from configs import base
from latent_flax import tasks
config = base.get_config()
for name, split in (('stdlib', 'train'), ('stdlib', 'validation'), ('stdlib_long', 'validation')):
  config.data.name = name
  tasks.load(config.data, split)
'''


@pytest.mark.slow  # starts a process that prepares the built-in corpus
def test_the_builtin_corpus_is_prepared_silently_inside_the_cache_directory(tmp_path):
  """The stdlib tfds builder is prepared under LATENT_FLAX_CACHE (tfds/), not under
  ~/tensorflow_datasets, and says so in our line alone: no tfds notice of a download
  that does not happen, no warning."""
  from tests import helpers
  home, cache = tmp_path / 'home', tmp_path / 'cache'
  home.mkdir()
  env = dict(helpers.subprocess_env(), HOME=str(home), LATENT_FLAX_CACHE=str(cache))
  env.pop('XDG_CACHE_HOME', None)
  run = lambda: subprocess.run([sys.executable, '-c', _PREPARE_STDLIB], cwd=helpers.REPO,
                               env=env, capture_output=True, text=True, timeout=600)
  first = run()
  assert first.returncode == 0, first.stderr[-2000:]
  lines = (first.stdout + first.stderr).splitlines()
  assert [l for l in lines if not l.startswith('Preparing ')] == [], lines
  assert sum(l.startswith('Preparing the built-in corpus (Python stdlib sources) into '
                          f"{cache / 'tfds'}") for l in lines) == 1, lines
  assert not list(home.rglob('*'))  # nothing under HOME, ~/tensorflow_datasets included
  assert sorted(os.listdir(cache)) == ['corpora', 'tfds']
  again = run()  # prepared: nothing to say
  assert again.returncode == 0 and again.stdout + again.stderr == ''
