"""The package's import graph: no cycle (imports inside functions included), and the layers
of latent_flax/__init__.py imported only downward."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'latent_flax'
# Lowest first: a module may import from its own layer and the layers before it.
LAYERS = ('system', 'attention', 'model', 'tasks', 'config_lib', 'training', 'evaluation',
          'trainer', 'experiments')


def module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports_of(path: pathlib.Path, modules: set[str]) -> set[str]:
  """Every latent_flax module `path` imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found.update(f'{node.module}.{a.name}' for a in node.names)
  return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
  paths = {module_name(p): p for p in PACKAGE.rglob('*.py')}
  graph = {m: imports_of(p, set(paths)) - {m} for m, p in paths.items()}
  # Importing a.b.c runs a/b/__init__ first, unless the importer is inside a.b (then that
  # __init__ is already running: a package importing its own modules is no cycle).
  for m, deps in graph.items():
    for d in list(deps):
      parts = d.split('.')
      deps.update('.'.join(parts[:i]) for i in range(2, len(parts)))
    deps.difference_update(d for d in list(deps) if d == m or m.startswith(d + '.'))
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state, stack = {}, []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 'open':
        return stack[stack.index(d):] + [d]
      if d not in state and (cycle := visit(d)):
        return cycle
    state[m] = 'done'
    stack.pop()
    return None

  for m in sorted(graph):
    if m not in state and (cycle := visit(m)):
      return cycle
  return None


def layer(module: str) -> int | None:
  parts = module.split('.')
  return LAYERS.index(parts[1]) if len(parts) > 1 else None


def test_no_import_cycle():
  cycle = find_cycle(import_graph())
  assert cycle is None, ' -> '.join(cycle)


def test_cycle_finder_finds_a_hidden_cycle():
  graph = import_graph()
  graph['latent_flax.attention.softmax'].add('latent_flax.attention.primitives')
  assert find_cycle(graph) is not None


def test_layers_import_downward_only():
  graph = import_graph()
  assert {m.split('.')[1] for m in graph if '.' in m} == set(LAYERS)
  upward = [f'{m} imports {d}' for m, deps in graph.items() for d in deps
            if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]
  assert not upward, upward


@pytest.mark.parametrize('sub', ['system', 'attention', 'tasks', 'training', 'evaluation',
                                 'experiments'])
def test_every_subpackage_says_what_it_is_for(sub):
  doc = ast.get_docstring(ast.parse((PACKAGE / sub / '__init__.py').read_text()))
  assert doc and len(doc.split()) > 5
