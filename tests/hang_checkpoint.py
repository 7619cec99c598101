"""train.py with one checkpoint's commit hanging: fault injection for test_faults.py.

    LF_HANG_STEP=6 LF_HANG_MARKER=/tmp/m python -m tests.hang_checkpoint --config=... --workdir=...

When the asynchronous save of step LF_HANG_STEP has written its files and is about
to commit (Orbax's atomic rename of the temporary directory), it writes the
temporary path to LF_HANG_MARKER and sleeps, so a test can SIGKILL the process
in the middle of that checkpoint write.
"""

import os
import time

from absl import app
from orbax.checkpoint._src.path import atomicity

import train

_original_finalize = atomicity.AtomicRenameTemporaryPath.finalize


async def _hanging_finalize(self):
  if self._final_path.name == os.environ['LF_HANG_STEP']:
    with open(os.environ['LF_HANG_MARKER'], 'w') as f:
      f.write(str(self.get()))
    time.sleep(3600)
  return await _original_finalize(self)


atomicity.AtomicRenameTemporaryPath.finalize = _hanging_finalize

if __name__ == '__main__':
  app.run(train.main)
