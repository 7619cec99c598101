"""How long a user waits: `train.py --help`, and `train.py` to its first logged step, for
one or more Python environments, paired and alternating.

    python benchmarks/startup.py --pythons OLD/bin/python@OLD_CHECKOUT,.venv/bin/python [--rounds 3]

An entry PYTHON@DIR runs the checkout in DIR (another commit's code) with that Python.
Each round runs every environment once per command, in alternating order: `train.py
--help` (wall seconds and peak RSS of the process), then `train.py --config=configs/m64.py`
for one logged step in a fresh workdir (wall seconds from process start to the line of
step 1, which includes imports, data preparation or loading, compilation and that step).
Writes <out>.json (every round, medians) and <out>.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time


from benchmarks import common  # noqa: E402
from latent_flax.system import io_utils  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(argv: list[str], until: str | None = None, cwd: str = REPO,
          ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
  """(wall seconds to exit, or to the first output line containing `until`; the child's
  peak RSS in MiB, from wait4's accounting of that one process)."""
  t0 = time.perf_counter()
  proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  seconds = None
  for line in proc.stdout:
    if until and until in line and seconds is None:
      seconds = time.perf_counter() - t0
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode not in ok:
    raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
  return (seconds if until else time.perf_counter() - t0), usage.ru_maxrss / 1024


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--pythons', required=True, help='comma-separated python executables')
  ap.add_argument('--rounds', type=int, default=3)
  ap.add_argument('--out', default='benchmarks/results/startup')
  args = ap.parse_args()
  pythons = args.pythons.split(',')
  runs = {p: {'help_s': [], 'help_rss_mb': [], 'first_step_s': []} for p in pythons}
  for r in range(args.rounds):
    for p in (pythons if r % 2 == 0 else pythons[::-1]):
      python, _, cwd = p.partition('@')
      python, cwd = os.path.abspath(python), os.path.abspath(cwd or REPO)
      s, rss = timed([python, 'train.py', '--help'], cwd=cwd, ok=(0, 1))  # absl: 1
      runs[p]['help_s'].append(s)
      runs[p]['help_rss_mb'].append(rss)
      with tempfile.TemporaryDirectory() as workdir:
        runs[p]['first_step_s'].append(timed(
            [python, 'train.py', '--config=configs/m64.py', f'--workdir={workdir}',
             '--config.num_train_steps=1', '--config.log_every_steps=1',
             '--config.eval_every_steps=1000', '--config.checkpoint_every_steps=1000'],
            until='step      1/1', cwd=cwd)[0])
      print(f"round {r + 1} {p}: --help {runs[p]['help_s'][-1]:.2f} s, first step "
            f"{runs[p]['first_step_s'][-1]:.1f} s", flush=True)
  records = [{'python': p, **{k: statistics.median(v) for k, v in m.items()}, 'rounds': m}
             for p, m in runs.items()]
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  common.write_records(args, records)
  plt = io_utils.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3))
  for ax, key, label in zip(axes, ('help_s', 'first_step_s'),
                            ('train.py --help (s)', 'start to first step (s)')):
    ax.barh([r['python'] for r in records], [r[key] for r in records])
    ax.set_xlabel(label)
  common.save_figure(fig, 'Start-up, median of paired rounds', args.out + '.png')
  print(f'wrote {args.out}.json and .png')


if __name__ == '__main__':
  main()
