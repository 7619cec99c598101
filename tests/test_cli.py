"""The entry points as a user types them: one-line errors, huge pages for plain python."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import train_argv, write_config_module

pytestmark = pytest.mark.slow  # every test here starts the entry points as child processes


@pytest.mark.parametrize('case,args,message', [
    ('unknown field', ['--config.model.foo=1'], r"--config.model.foo: 'foo' is not a config field"),
    ('misspelled field', ['--config.model.num_head=3'],
     r"""^train.py: --config.model.num_head: 'num_head' is not a config field \(did you mean """
     r"""'num_heads'\?\); the fields and their defaults are in [^"\\]*$"""),
    ('cudnn on a CPU', ['--config.model.attention_impl=cudnn', '--config.model.dtype=bfloat16'],
     r"attention_impl='cudnn' runs on NVIDIA GPUs, and this machine's devices are CPUs; use"),
    ('bad argument', ['--config=configs/m64.py:m=abc'], r"config argument m='abc' must be an integer"),
    ('missing config', ['--config=configs/no_such_config.py'], r'No such file'),
    ('workdir is a file', ['--workdir={file}'], r'is a file; give a directory'),
    # (as root, a read-only directory is still writable: a path through a file stands in)
    ('unwritable workdir', ['--workdir={unwritable}'],
     r'cannot write to --workdir=.*; give a writable'),
])
def test_bad_invocations_are_one_line_exit_2(children, tmp_path, case, args, message):
  config_path = write_config_module(tmp_path)
  (tmp_path / 'file').write_text('x')
  fill = dict(config=config_path, file=tmp_path / 'file', unwritable=tmp_path / 'file' / 'run')
  argv = train_argv(config_path, str(tmp_path / 'run'))
  for a in args:
    a = a.format(**fill)
    key = a.split('=')[0]
    argv = [x for x in argv if not (x.split('=')[0] == key and '.' not in key[2:])] + [a]
  child = children(argv)
  assert child.finish() == 2, (case, child.lines[-5:])
  errors = [l for l in child.lines if l.startswith('train.py:')]
  assert len(errors) == 1 and re.search(message, errors[0]), (case, child.lines[-5:])
  assert not any('Traceback' in l for l in child.lines), case
  assert not (tmp_path / 'run').exists()


def test_a_one_line_error_stays_one_line_when_failed_work_is_collected_at_exit(tmp_path):
  """orbax's read coroutines that raised on a damaged checkpoint are collected at exit, each
  an 'Exception ignored in' traceback after eval.py's line (1 run in 6 before the fix); an
  object that raises when collected stands in for them deterministically."""
  probe = tmp_path / 'probe.py'
  probe.write_text('from latent_flax.system import cli\n'
                   'class LeftBehind:\n  def __del__(self):\n    raise RuntimeError("left")\n'
                   'kept = LeftBehind()\ncli.fail("the checkpoint cannot be read")\n')
  env = {**os.environ, 'PYTHONPATH': os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
  run = subprocess.run([sys.executable, str(probe)], env=env, capture_output=True, text=True,
                       timeout=60)
  assert run.returncode == 2
  assert run.stderr.splitlines() == ['probe.py: the checkpoint cannot be read'], run.stderr


def test_a_plain_python_entry_point_gets_huge_pages(tmp_path):
  """`python train.py` re-executes itself once with glibc's huge-page tunable (unless the
  variable is set or LF_NO_HUGEPAGES=1), so the memory fix reaches the command users type."""
  from latent_flax.system import hugepages
  probe = tmp_path / 'probe.py'
  probe.write_text('import os\nfrom latent_flax.system import hugepages\nhugepages.ensure()\n'
                   'print(os.getpid(), os.environ.get("GLIBC_TUNABLES"))\n')
  base_env = {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}
  base_env['PYTHONPATH'] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  run = lambda env: subprocess.run([sys.executable, str(probe)], env=env, capture_output=True,
                                   text=True, timeout=60).stdout.split()
  expected = hugepages.TUNABLE if hugepages.thp_available() else 'None'
  assert run(base_env)[1] == expected
  assert run({**base_env, 'LF_NO_HUGEPAGES': '1'})[1] == 'None'
  assert run({**base_env, 'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})[1] == (
      'glibc.malloc.arena_max=2')


def test_train_eval_generate_import_no_tensorflow_and_print_no_foreign_warnings(children,
                                                                                 tmp_path):
  # Checkpoints between evaluations too (steps 2 and 4: saved without metrics).
  config_path = write_config_module(tmp_path, checkpoint_every_steps=2)
  workdir = str(tmp_path / 'run')
  for argv in (train_argv(config_path, workdir), ['eval.py', f'--workdir={workdir}'],
               ['generate.py', f'--workdir={workdir}', '--prompt=ab', '--max_new_tokens=4']):
    child = children(['-m', 'tests.entry_points_probe'] + argv)
    assert child.finish() == 0, (argv[0], child.lines[-10:])
    assert 'PROBE tensorflow modules: []' in child.lines, (argv[0], child.lines[-3:])
    # Nothing but our own lines: no warnings or notices of the libraries underneath.
    foreign = [l for l in child.lines if re.search(r'(?i)warn|onednn|deprecat|^[IWE]\d{4} ', l)]
    assert not foreign, (argv[0], foreign[:5])
