"""An entry point run as a user runs it, then the TensorFlow modules it imported on the
way (there must be none).

    python -m tests.entry_points_probe train.py --config=... --workdir=...
"""

import runpy
import sys


def main() -> None:
  sys.argv = sys.argv[1:]
  try:
    runpy.run_path(sys.argv[0], run_name='__main__')
  except SystemExit as e:
    if e.code not in (0, None):
      raise
  print('PROBE tensorflow modules:', sorted(m for m in sys.modules if m.split('.')[0] in (
      'tensorflow', 'tensorflow_core', 'tf_keras')), flush=True)


if __name__ == '__main__':
  main()
