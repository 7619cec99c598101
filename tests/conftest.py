"""Test set-up: 4 fake CPU devices so data-parallel code really runs in parallel."""

import os

from tests import helpers  # imports jax, which reads XLA_FLAGS when it starts a backend

os.environ["XLA_FLAGS"] = helpers.xla_flags(4)  # 4 devices, helpers.FAST_COMPILE
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def _shared_compilation_cache(tmp_path_factory):
  """This process and every process it starts (tests/helpers.Child, sweep jobs) reuse
  each other's compiled programs: a test that trains, resumes and evaluates the same
  config compiles once. Corpora are prepared into this session's folder, not the user's
  cache."""
  settings = {'jax_compilation_cache_dir': str(tmp_path_factory.mktemp('jax_cache')),
              'jax_persistent_cache_min_compile_time_secs': 0,
              'jax_persistent_cache_min_entry_size_bytes': 0}
  env = {name.upper(): str(value) for name, value in settings.items()}
  env['LATENT_FLAX_CACHE'] = str(tmp_path_factory.mktemp('corpus_cache'))
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  for name, value in settings.items():
    jax.config.update(name, value)
  yield
  jax.config.update('jax_compilation_cache_dir', None)
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture
def children():
  """Starts tests/helpers.Child processes (children(argv, ...)); kills any left at the end."""
  started = []
  yield lambda *a, **k: started.append(helpers.Child(*a, **k)) or started[-1]
  for child in started:
    child.kill()
