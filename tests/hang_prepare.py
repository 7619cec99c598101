"""train.py with corpus preparation hanging midway: fault injection for test_faults.py.

    LF_HANG_MARKER=/tmp/m python -m tests.hang_prepare --config=... --workdir=...

After the first piece of a split's byte file is written to its temporary file, the path
of that file is written to LF_HANG_MARKER and the process sleeps, so a test can signal
it in the middle of a preparation.
"""

import os
import time

import train
from latent_flax.system import cli
from latent_flax.tasks import byte_cache

_original_copy = byte_cache._copy


def _hanging_copy(part, out):
  _original_copy(part, out)
  out.file.flush()
  with open(os.environ['LF_HANG_MARKER'], 'w') as f:
    f.write(out.file.name)
  time.sleep(3600)


byte_cache._copy = _hanging_copy

if __name__ == '__main__':
  cli.run(train.main)  # as train.py runs it
