"""The documents hold: every relative link resolves, docs/README.md indexes all of docs/, the
README stays a short user's document whose commands exist and run in order, its Python API
example runs on a trained workdir, and the parameter counts it states are the configs' own."""

import importlib
import pathlib
import re
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latent_flax import config_lib, trainer
from latent_flax import model as model_lib
from tests.helpers import REPO, subprocess_env, tiny_config

ROOT = pathlib.Path(REPO)
README = ROOT / 'README.md'
DOCUMENTS = [README, ROOT / 'configs' / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]
ENTRY_POINTS = ('train.py', 'eval.py', 'generate.py', 'sweep.py', 'compare.py', 'probe.py')

_FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.M | re.S)
_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)[^)]*\)|^\[[^\]]+\]:\s*(\S+)', re.M)


def relative_links(path: pathlib.Path) -> list[str]:
  """The link targets of a markdown file outside its fenced code, without URLs or anchors."""
  text = _FENCE.sub('', path.read_text())
  targets = [a or b for a, b in _LINK.findall(text)]
  return [t.split('#')[0] for t in targets
          if not re.match(r'[a-z][a-z+.-]*:', t) and not t.startswith('#')]


def section(path: pathlib.Path, heading: str) -> str:
  """The text under `## heading` up to the next heading of that level."""
  text = path.read_text()
  match = re.search(rf'^## {re.escape(heading)}\n(.*?)(?=^## |\Z)', text, re.M | re.S)
  assert match, f"{path.name} has no '## {heading}' section"
  return match.group(1)


def fenced(text: str, language: str) -> list[str]:
  return [body for lang, body in _FENCE.findall(text) if lang == language]


def test_every_relative_link_resolves():
  broken = [f"{path.relative_to(ROOT)}: {target}" for path in DOCUMENTS
            for target in relative_links(path) if not (path.parent / target).exists()]
  assert not broken, 'links to missing files:\n' + '\n'.join(broken)


def test_docs_index_links_every_document_note_and_result_folder():
  index = ROOT / 'docs' / 'README.md'
  linked = {(index.parent / t).resolve() for t in relative_links(index)}
  docs = ROOT / 'docs'
  wanted = [p for p in sorted(docs.glob('*.md')) if p != index]
  wanted += sorted((docs / 'notes').glob('*.md'))
  missing = [str(p.relative_to(docs)) for p in wanted if p.resolve() not in linked]
  missing += [f"{folder.relative_to(docs)}/" for folder in sorted((docs / 'results').iterdir())
              if folder.is_dir() and not any(folder.resolve() in p.parents for p in linked)]
  assert not missing, f"docs/README.md does not link: {missing}"


def test_readme_is_a_short_document():
  lines = README.read_text().splitlines()
  assert len(lines) <= 150, f"README.md has {len(lines)} lines; keep it to 150 (details in docs/)"


def test_readme_code_map_names_every_folder_and_top_level_module():
  code_map = section(README, 'Code map')
  package = ROOT / 'latent_flax'
  names = [p.name + '/' for p in sorted(package.iterdir())
           if p.is_dir() and (p / '__init__.py').exists()]
  names += [p.name for p in sorted(package.glob('*.py')) if p.name != '__init__.py']
  names += [*ENTRY_POINTS, 'configs/', 'benchmarks/', 'docs/', 'tests/']
  missing = [n for n in names if not re.search(rf'(^|\s){re.escape(n)}(\s|$)', code_map, re.M)]
  assert not missing, f"README.md's code map leaves out {missing}"


def readme_commands() -> list[list[str]]:
  """The README's shell commands in order, continuation lines joined, comments dropped."""
  commands = []
  for block in fenced(README.read_text(), 'bash'):
    for line in block.replace('\\\n', ' ').splitlines():
      words = shlex.split(line, comments=True)
      if words:
        commands.append(words)
  return commands


@pytest.mark.slow  # starts the entry points for their --helpfull
def test_readme_commands_exist_and_run_in_order():
  """Every make target and flag the README's commands use exists, and every workdir a
  command reads was made by an earlier one (make train makes runs/m64)."""
  makefile = (ROOT / 'Makefile').read_text()
  children = {name: subprocess.Popen([sys.executable, name, '--helpfull'], cwd=REPO,
                                     env=subprocess_env(), text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
              for name in ENTRY_POINTS}
  helps = {name: child.communicate(timeout=120)[0] for name, child in children.items()}
  made, shown = set(), set()
  for words in readme_commands():
    if words[0] == 'make':
      for target in words[1:]:
        assert re.search(rf'^{re.escape(target)}:', makefile, re.M), f"no make target {target}"
      if 'train' in words:
        made.add('runs/m64')
      continue
    script = next((w for w in words if w in ENTRY_POINTS), None)
    if script is None:
      continue
    shown.add(script)
    flags = dict(w[2:].split('=', 1) if '=' in w else (w[2:], '') for w in words
                 if w.startswith('--'))
    for flag in flags:
      name = flag.split('.')[0]
      assert re.search(rf'^\s+--(\[no\])?{re.escape(name)}:', helps[script], re.M), \
          f"{script} has no flag --{name} ({' '.join(words)})"
    if 'config' in flags:
      config = _load_config(flags['config'])
      for flag in flags:
        if flag.startswith('config.'):
          assert config_lib.find_field(config, flag[7:]), (
              f"{flags['config']} has no field {flag[7:]}")
    workdirs = [w.split('=', 1)[1] for w in words if w.startswith('--workdir=')]
    writes = script == 'train.py' or (script == 'sweep.py' and 'report' not in flags)
    for workdir in workdirs:
      if writes:
        made.add(workdir)
      else:
        assert workdir in made, f"{' '.join(words)}: no earlier command makes {workdir}"
  assert shown == set(ENTRY_POINTS), f"the README shows no command of {set(ENTRY_POINTS) - shown}"


def _load_config(spec: str):
  path, _, arg = spec.partition(':')
  module = importlib.import_module(path[:-len('.py')].replace('/', '.'))
  return module.get_config(arg or None)


def stated_params() -> dict[str, set[int]]:
  """Parameter counts the README (`configs/X.py` (N params)) and configs/README.md (the
  params column) state, by config name."""
  stated = {}
  for name, n in re.findall(r'`configs/(\w+)\.py` \(([\d,]+) params\)', README.read_text()):
    stated.setdefault(name, set()).add(int(n.replace(',', '')))
  index = (ROOT / 'configs' / 'README.md').read_text()
  for name, n in re.findall(r'^\| `(\w+)\.py` \| ([\d,]+) \|', index, re.M):
    stated.setdefault(name, set()).add(int(n.replace(',', '')))
  return stated


def test_stated_parameter_counts_are_the_configs():
  stated = stated_params()
  assert {'m64', 'full', 'mla', 'mqar', 'listops_m64', 'listops_full'} <= set(stated)
  for name, counts in stated.items():
    config = importlib.import_module(f'configs.{name}').get_config()
    model = config_lib.build_model(config)
    tokens = jax.ShapeDtypeStruct((1, 2 * config.model.chunk_size), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), tokens)['params']
    assert counts == {model_lib.count_params(params)}, name


@pytest.mark.slow  # trains
def test_readme_python_api_example_runs(tmp_path):
  code = '\n'.join(fenced(section(README, 'Python API'), 'python'))
  line = "workdir = 'runs/m64'"
  assert code.count(line) == 1, f"the example should set {line!r} once (the test replaces it)"
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(tiny_config(tmp_path), workdir)
  namespace = {}
  exec(compile(code.replace(line, f'workdir = {workdir!r}'), 'README.md (Python API)', 'exec'),
       namespace)
  n = namespace['tokens_BN'].shape[1]
  bits_N = np.asarray(namespace['bits_N'])
  assert bits_N.shape == (n - 1,) and np.all(np.isfinite(bits_N)) and np.all(bits_N > 0)
  out = namespace['out']
  assert out['tokens'].shape == (2, 200) and len(out['samples']) == 2
