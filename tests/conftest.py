"""Test set-up: 4 fake CPU devices so data-parallel code really runs in parallel."""

import os
import resource

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


SLOW_CPU_S = 5.0  # a test over this much process CPU time is slow

# Tests that neither train nor start processes (those carry @pytest.mark.slow in their
# files) but took over SLOW_CPU_S of process CPU time in a `-m "not slow"` run on the
# 2-core machine, 2026-12-06; every run names any others at its end.
# 'file::test' marks every case of a test, 'file::test[id]' one case.
SLOW_TO_RUN = frozenset({
    'test_attention.py::test_decayed_prefix_scan_equals_brute_force_softmax_with_decay',
    'test_attention.py::test_no_nan_at_32k_tokens_with_large_inputs',
    'test_attention.py::test_causal_gradient_to_the_future_is_exactly_zero[causal_latent]',
    'test_attention.py::test_causal_gradient_to_the_future_is_exactly_zero[causal_latent:multiscale]',
    'test_attention.py::test_prefix_of_sequence_gives_same_outputs',
    'test_decode.py::test_greedy_generation_equals_argmax_of_repeated_forward_passes',
    'test_decode.py::test_streaming_in_segments_equals_one_pass',
    'test_decode.py::test_token_by_token_equals_parallel_forward[causal_latent]',
    'test_decode.py::test_token_by_token_equals_parallel_forward[causal_latent:latent_decay=multiscale]',
    'test_decode.py::test_token_by_token_equals_parallel_forward_bfloat16',
    'test_decode.py::test_sampling_is_reproducible_and_top_k_1_is_greedy',
    'test_decode.py::test_latent_state_size_is_constant_and_kv_cache_grows',
    'test_decode.py::test_prefill_leaves_the_state_of_one_by_one_feeding[4-causal_latent]',
    'test_decode.py::test_prefill_leaves_the_state_of_one_by_one_feeding[4-causal_latent:latent_decay=multiscale]',
    'test_mla.py::test_blockwise_and_naive_cores_give_the_same_gradients',
    'test_optim.py::test_a_zero_gradient_step_decays_matrices_and_embeddings_only',
    'test_model.py::test_jit_and_remat_agree_with_plain',
    'test_model.py::test_bfloat16_compute_float32_params',
    'test_model.py::test_dropout_only_when_asked',
    'test_model.py::test_lm_is_causal_bit_exact[causal_latent]',
    'test_model.py::test_latents_are_parameters_with_gradients_in_every_block',
    'test_probes.py::test_streaming_the_probe_equals_one_pass',
    'test_probes.py::test_exact_retrieval_is_what_greedy_decoding_writes',
    'test_scale.py::test_two_level_prefix_scan_and_chunk_shift_equal_the_one_run_forms',
    'test_sweep.py::test_compare_names_what_differs_and_counts_tokens_across_a_batch_change',
})


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(config, items):
  """Marks SLOW_TO_RUN slow; a listed test its file no longer has is an error."""
  modules = {}
  for item in items:
    file = item.path.name
    modules[file] = item.module
    if {f'{file}::{item.originalname}', f'{file}::{item.name}'} & SLOW_TO_RUN:
      item.add_marker(pytest.mark.slow)
  for entry in sorted(SLOW_TO_RUN):
    file, name = entry.split('::')
    if file in modules and not hasattr(modules[file], name.split('[')[0]):
      raise pytest.UsageError(f"tests/conftest.py SLOW_TO_RUN lists {entry}, which {file} "
                              "does not define; rename or remove the entry.")


_over = []  # (CPU s, test) of tests over SLOW_CPU_S not marked slow


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
  """Records the test's process CPU time (all threads) on its report."""
  start = _cpu_s()
  yield
  item.user_properties.append(('cpu_s', _cpu_s() - start))


def _cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def pytest_runtest_logreport(report):
  cpu_s = dict(report.user_properties).get('cpu_s', 0.0)
  if report.when == 'call' and cpu_s > SLOW_CPU_S and 'slow' not in report.keywords:
    _over.append((cpu_s, report.nodeid))


def pytest_terminal_summary(terminalreporter):
  """Names the tests of the fast tier that are not fast, so the tier stays under 2 min."""
  if _over:
    terminalreporter.section(f'not marked slow, over {SLOW_CPU_S:g} s of CPU time')
    for cpu_s, nodeid in sorted(_over, reverse=True):
      terminalreporter.write_line(f'{cpu_s:6.1f} s  {nodeid}')
    terminalreporter.write_line('Add them to SLOW_TO_RUN (tests/conftest.py) or mark them slow.')
