"""Decoding reproduces the parallel forward pass; sampling is reproducible; generate.py's
defaults give text without degenerate runs."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_flax import attention
from latent_flax.evaluation import decode
from latent_flax import model as model_lib
from latent_flax.attention import registry
from latent_flax.evaluation import runs
from latent_flax import trainer
from tests.helpers import tiny_config

C = 4  # chunk size: a 19-token sequence crosses four chunk boundaries
N = 19
# Every decoding kind, and the variants of one that change how its state evolves.
KINDS = [k for k in registry.names(causal=True) if registry.get(k).decode] + [
    'causal_latent:latent_decay=multiscale']


def _model(kind, dtype='float32'):
  kind, _, field = kind.partition(':')
  extra = dict([field.split('=')]) if field else {}
  cfg = model_lib.ModelConfig(attention=kind, num_latents=4, num_heads=2, chunk_size=C,
                              emb_dim=16, mlp_dim=32, num_layers=2, dtype=dtype, **extra)
  model = model_lib.build_model(cfg)
  tokens = jax.random.randint(jax.random.key(0), (2, N), 0, model_lib.VOCAB_SIZE)
  params = model.init(jax.random.key(1), tokens)['params']
  return model, params, tokens


def _forward(model, params, tokens):
  return jax.jit(model.apply)({'params': params}, tokens)


def _feed(model, params, tokens, prompt_len):
  """Prefill `prompt_len` tokens, then step through the rest: logits [B, N, V] and state."""
  logits, cache = decode.prefill(model, params, tokens[:, :prompt_len], cache_len=N)
  out = [_forward(model, params, tokens[:, :prompt_len])[:, :-1], logits[:, None]]
  for t in range(prompt_len, tokens.shape[1]):
    logits, cache = decode.decode_step(model, params, cache, tokens[:, t])
    out.append(logits[:, None])
  return jnp.concatenate(out, axis=1), cache


@pytest.mark.parametrize('kind', KINDS)
def test_token_by_token_equals_parallel_forward(kind):
  model, params, tokens = _model(kind)
  expected = _forward(model, params, tokens)
  got, cache = _feed(model, params, tokens, prompt_len=1)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
  assert int(cache['block_0']['attention']['index']) == N


def test_token_by_token_equals_parallel_forward_bfloat16():
  model, params, tokens = _model('causal_latent', dtype='bfloat16')
  expected = _forward(model, params, tokens)
  got, _ = _feed(model, params, tokens, prompt_len=1)
  # bf16 rounds differently along the two orders of summation; the argmax must still agree
  # almost everywhere and the logits stay within bf16 resolution of their scale.
  np.testing.assert_allclose(got, expected, atol=0.1 * float(jnp.abs(expected).max()))
  assert np.mean(np.argmax(got, -1) == np.argmax(expected, -1)) > 0.9


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('prompt_len', [C, C + 2, 3 * C - 1])
def test_prefill_leaves_the_state_of_one_by_one_feeding(kind, prompt_len):
  model, params, tokens = _model(kind)
  logits_a, cache_a = _feed(model, params, tokens, prompt_len=prompt_len)
  logits_b, cache_b = _feed(model, params, tokens, prompt_len=1)
  np.testing.assert_allclose(logits_a, logits_b, atol=1e-5, rtol=1e-5)
  # After the same tokens the states agree leaf by leaf, also part-way through.
  _, cache_a = decode.prefill(model, params, tokens[:, :prompt_len], cache_len=N)
  _, cache_b = _feed(model, params, tokens[:, :prompt_len], prompt_len=1)
  assert jax.tree.structure(cache_a) == jax.tree.structure(cache_b)
  for path, a in jax.tree_util.tree_leaves_with_path(cache_a):
    b = dict(jax.tree_util.tree_leaves_with_path(cache_b))[path]
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize('kind', KINDS)
def test_extend_by_one_token_equals_a_step(kind):
  """The two decoding paths for one token ('step', kept because it is the faster, and
  'extend' of length 1) give the same logits and leave the same state, across chunk ends."""
  model, params, tokens = _model(kind)
  (_, cache_a), (_, cache_b) = (decode.prefill(model, params, tokens[:, :2], cache_len=N)
                                for _ in range(2))
  for t in range(2, 2 * C + 2):
    logits_a, cache_a = decode.decode_step(model, params, cache_a, tokens[:, t])
    logits_b, cache_b = decode.extend(model, params, cache_b, tokens[:, t:t + 1])
    np.testing.assert_allclose(logits_b[:, 0], logits_a, atol=1e-5, rtol=1e-5, err_msg=f'{t}')
  assert jax.tree.structure(cache_a) == jax.tree.structure(cache_b)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(cache_a), jax.tree.leaves(cache_b)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_latent_state_size_is_constant_and_kv_cache_grows():
  model, params, tokens = _model('causal_latent')
  sizes = {decode.state_bytes(decode.prefill(model, params, tokens[:, :n], cache_len=n)[1])
           for n in (1, 5, 19)}
  assert len(sizes) == 1
  _, cache = _feed(model, params, tokens, prompt_len=2)
  assert decode.state_bytes(cache) in sizes
  model, params, tokens = _model('full')
  short = decode.state_bytes(decode.prefill(model, params, tokens[:, :2], cache_len=8)[1])
  long = decode.state_bytes(decode.prefill(model, params, tokens[:, :2], cache_len=16)[1])
  assert long > short


@pytest.mark.parametrize('kind', KINDS)
def test_greedy_generation_equals_argmax_of_repeated_forward_passes(kind):
  model, params, tokens = _model(kind)
  prompt = tokens[:, :3]
  new = decode.generate(model, params, prompt, 9, jax.random.key(0), decode.Sampling(0.0))
  seq = prompt
  for _ in range(9):
    nxt = jnp.argmax(_forward(model, params, seq)[:, -1], -1).astype(jnp.int32)
    seq = jnp.concatenate([seq, nxt[:, None]], axis=1)
  np.testing.assert_array_equal(new, seq[:, 3:])


def test_sampling_is_reproducible_and_top_k_1_is_greedy():
  model, params, tokens = _model('causal_latent')
  prompt = tokens[:, :5]
  run = lambda seed, s: np.asarray(decode.generate(model, params, prompt, 12,
                                                   jax.random.key(seed), s))
  hot = decode.Sampling(temperature=1.5, top_p=0.99)
  np.testing.assert_array_equal(run(7, hot), run(7, hot))
  assert not np.array_equal(run(7, hot), run(8, hot))
  np.testing.assert_array_equal(run(3, decode.Sampling(1.0, top_k=1)),
                                run(3, decode.Sampling(0.0)))


def test_filter_logits_keeps_top_k_and_nucleus():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  keep = lambda out: np.isfinite(np.asarray(out))[0].tolist()
  assert keep(decode.filter_logits(logits, top_k=2)) == [False, True, False, True]
  assert keep(decode.filter_logits(logits, top_p=0.5)) == [False, True, False, False]
  assert keep(decode.filter_logits(logits, top_p=0.7)) == [False, True, False, True]
  assert keep(decode.filter_logits(logits, top_p=0.81)) == [False, True, True, True]
  assert keep(decode.filter_logits(logits, top_p=1.0)) == [True] * 4


def test_bad_sampling_values_and_bidirectional_decoding_are_refused():
  with pytest.raises(ValueError, match='temperature'):
    decode.Sampling(temperature=-1.0)
  with pytest.raises(ValueError, match='top_p'):
    decode.Sampling(top_p=0.0)
  with pytest.raises(ValueError, match='top_k'):
    decode.Sampling(top_k=300)
  mod = attention.LatentAttention(num_latents=2, num_heads=2)
  x = jnp.ones((1, 4, 8))
  params = mod.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='bidirectional'):
    mod.apply(params, x, decode='prefill', mutable=['cache'])


@pytest.mark.parametrize('kind', KINDS)
def test_streaming_in_segments_equals_one_pass(kind):
  """Segments of C (at chunk boundaries), C - 1 (inside) and C + 2 (across) tokens."""
  model, params, tokens = _model(kind)
  expected = _forward(model, params, tokens)
  for segment in (C, C - 1, C + 2):
    got = jnp.concatenate([logits for _, logits in decode.stream(model, params, tokens, segment)],
                          axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=f'segment {segment}')


# The longest run of one repeated byte generate.py's defaults may write in a sample from
# a small model of Python sources (whose indentation makes runs of spaces likely): the
# former defaults, temperature 0.8 and top_p 0.95, wrote runs of 48 to 275 spaces from
# `make train`'s model.
LONGEST_RUN = 40


def _longest_run(text) -> int:
  return max((len(list(run)) for _, run in itertools.groupby(text)), default=0)


@pytest.mark.slow  # trains, and runs generate.py
def test_generate_defaults_write_no_long_run_of_one_byte(tmp_path, children):
  config = tiny_config(tmp_path, **{'data.name': 'stdlib', 'data.data_dir': '',
                                    'data.seq_len': 64},
                       num_train_steps=300, warmup_steps=10, log_every_steps=100,
                       eval_every_steps=300, checkpoint_every_steps=300)
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir)
  # The command as a user types it, with generate.py's own defaults (and an override of
  # how it runs on top of the run's config.json).
  child = children(['generate.py', f'--workdir={workdir}', '--num_samples=8',
                    '--max_new_tokens=256', '--config.model.attention_impl=naive'])
  assert child.finish() == 0, child.lines[-10:]
  out = '\n'.join(l for l in child.lines if not re.match(r'^--- [\d.]+ bytes/s', l))
  samples = re.split(r'^--- sample \d+ \(step 300\) ---\n', out, flags=re.M)[1:]
  assert len(samples) == 8, child.lines[:10]
  longest = [_longest_run(s) for s in samples]
  assert max(longest) <= LONGEST_RUN, (longest, samples)
  # The bound tells the defaults apart: the former ones exceed it on this model.
  former = runs.sample_from_checkpoint(workdir, 'def ', 256, decode.Sampling(0.8, top_p=0.95),
                                       num_samples=8)
  assert max(_longest_run(t.tolist()) for t in former['tokens']) > LONGEST_RUN
  # An override of a model field is refused in one line: the overrides are applied.
  refused = children(['generate.py', f'--workdir={workdir}', '--config.model.num_latents=8'])
  assert refused.finish() == 2
  errors = [l for l in refused.lines if l.startswith('generate.py:')]
  assert len(errors) == 1 and 'was trained with model.num_latents=4' in errors[0], errors
