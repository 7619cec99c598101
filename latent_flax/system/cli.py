"""What every entry point shares: flags parsed with one-line errors, and exit codes.

A bad flag, config file, config argument or override, and any ValueError or OSError
raised by the library, print one line `prog: message` to stderr and exit 2, with no
traceback; nothing has been compiled or written by then.
"""

from __future__ import annotations

import logging as py_logging
import os
import re
import sys
from typing import Callable

from absl import app, flags
from absl import logging

# Errors the library raises for bad input or an unusable filesystem.
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def fail(message: str, code: int = 2):
  """Prints `prog: message` (one line) to stderr and exits. What the failed work left
  behind stays unsaid: orbax's read coroutines that raised, collected at exit, would each
  print an 'Exception ignored in' traceback (sys.unraisablehook) after the line."""
  prog = os.path.basename(sys.argv[0])
  print(f"{prog}: {' '.join(str(message).split())}", file=sys.stderr)
  sys.unraisablehook = lambda unraisable: None
  sys.exit(code)


def _essential_line(text: str) -> str:
  """The line of a (possibly multi-line, traceback-carrying) message that says what is
  wrong: the last `SomeError: message`, an `[Errno ...]` line, or the first line."""
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  for line in reversed(lines):
    m = re.match(r'^[A-Za-z_.]*(Error|Exception): (.+)$', line)
    if m:
      return m.group(2)
  errno = [l for l in lines if l.startswith('[Errno')]
  return errno[-1] if errno else (lines[0] if lines else '')


def describe(e: BaseException) -> str:
  """A one-line description of a user error, without the library's internals."""
  if isinstance(e, OSError) and e.filename:
    what = e.strerror or type(e).__name__
    return f"{what}: {e.filename}"
  text = str(e).strip().strip('"')
  return (text.splitlines()[0] if len(text.splitlines()) == 1 else _essential_line(text)) or (
      type(e).__name__)


def _missing_field(e: Exception) -> tuple[str, str | None]:
  """(the field name, ml_collections' 'Did you mean' suggestion or None) of its error
  for a field a config does not have."""
  while e.args and isinstance(e.args[0], Exception):  # an AttributeError of a KeyError
    e = e.args[0]
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  first, *rest = text.splitlines() or ['']
  suggestion = re.search(r'Did you mean "([^"]+)"', ' '.join(rest))
  return first.strip().strip('"\''), suggestion.group(1) if suggestion else None


def take_config_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(argv without them, [(field, value)]) of the `--config.<field>=<value>` arguments of
  an entry point that reads a workdir's config.json: absl knows such flags only with a
  config file, so they are taken out before it parses argv (left in when --config=FILE
  is given). One line for such an argument without a value."""
  if any(a == '--config' or a.startswith('--config=') for a in argv):
    return argv, []
  rest, overrides = [], []
  for arg in argv:
    if not arg.startswith('--config.'):
      rest.append(arg)
      continue
    field, sep, value = arg[len('--config.'):].partition('=')
    if not sep:
      fail(f"{arg}: give the value as --config.{field}=VALUE.")
    overrides.append((field, value))
  return rest, overrides


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    text = re.sub(r'^flag ', '', str(e))
    first = text.splitlines()[0]
    if len(text.splitlines()) > 1:  # a config file's own error, with its traceback
      first = first.split(': ')[0] + ': ' + _essential_line(text)
    fail(first)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of no field
    name, suggestion = _missing_field(e)
    overrides = [a.split('=')[0] for a in argv if a.startswith('--config.')]
    culprit = next((o for o in overrides if o.split('.')[-1] == name), f'--config...{name}')
    fail(f"{culprit}: {name!r} is not a config field"
         + (f" (did you mean {suggestion!r}?)" if suggestion else '')
         + "; the fields and their defaults are in configs/base.py and latent_flax/model.py "
         "(ModelConfig).")
  except USER_ERRORS as e:  # a config module's get_config(arg) refusing its argument
    fail(describe(e))
  except SyntaxError as e:
    fail(f"{e.filename} does not load (line {e.lineno}): SyntaxError: {e.msg}")


def config_value(flag) -> object:
  """A config flag's value, or one line naming the config file that failed to load."""
  try:
    return flag.value
  except Exception as e:  # ml_collections raises several types for a file that did not load
    fail(f"--config could not be loaded: {_essential_line(str(e))}")


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with one-line errors for flags and for USER_ERRORS raised in main."""
  def wrapped(argv):
    logging.set_verbosity(logging.WARNING)  # progress is printed by the library itself
    py_logging.getLogger('asyncio').setLevel(py_logging.CRITICAL)  # orbax's async noise
    try:
      main(argv)
    except USER_ERRORS as e:
      fail(describe(e))
  app.run(wrapped, flags_parser=_parse_flags)
