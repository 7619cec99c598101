"""The shared books laid out as a corpus with its own splits (PG-19's layout), split by book:

    python -m latent_flax.tasks.books --src ../shared/data/books --out data/books
    python train.py --config=configs/m64.py --config.data.name=text_files \\
        --config.data.path=data/books --config.data.seq_len=4096 --workdir=runs/books_m64

writes out/train/, out/validation/ and out/test/ with one symbolic link per book (--copy:
copies) and out/SPLITS.json (the split, titles, bytes). The split is fixed below: 18 books
train, 2 validation, 2 test, each of validation and test holding one book over 1 MB
(document-aligned evaluation to 1,048,576 bytes) and one short one; the two Grimm
translations, which overlap, both train. Each book is checked against src/MANIFEST.json
(bytes and sha256) first; nothing is written if one is missing or differs. The books are
never committed: data/ is in .gitignore.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

VALIDATION = ('wss22_pg1259.txt',   # Twenty Years After, 1.42 MB
              'wss22_pg46.txt')     # A Christmas Carol, 158 KB
TEST = ('wss22_pg5197.txt',         # My Life, Volume I, 1.25 MB
        'wss22_pg11.txt')           # Alice's Adventures in Wonderland, 151 KB
TRAIN = ('nanogenmo_HP_lovecraft_completed_works.txt', 'nanogenmo_edgar_allen_poe_completed_works.txt',
         'wss22_2160-0.txt', 'wss22_2591-0.txt', 'wss22_4085-0.txt', 'wss22_98-0.txt',
         'wss22_pg1342.txt', 'wss22_pg16389.txt', 'wss22_pg174.txt', 'wss22_pg19068.txt',
         'wss22_pg25344.txt', 'wss22_pg2542.txt', 'wss22_pg2641.txt', 'wss22_pg394.txt',
         'wss22_pg64317.txt', 'wss22_pg6761.txt', 'wss22_pg67979.txt', 'wss22_pg84.txt')
SPLITS = {'train': TRAIN, 'validation': VALIDATION, 'test': TEST}


def _manifest(src: str) -> dict[str, dict]:
  path = os.path.join(src, 'MANIFEST.json')
  try:
    with open(path) as f:
      return {e['file']: e for e in json.load(f)}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} cannot be read ({type(e).__name__}); --src must be the shared "
                     "books folder with its MANIFEST.json.") from None


def check(src: str) -> dict[str, dict]:
  """Every book of SPLITS in src, as MANIFEST.json lists it (bytes, sha256); one line if not."""
  manifest = _manifest(src)
  for split, files in SPLITS.items():
    for name in files:
      if name not in manifest:
        raise ValueError(f"{name} ({split}) is not in {src}/MANIFEST.json: is --src the shared "
                         "books folder?")
      path = os.path.join(src, name)
      if not os.path.isfile(path):
        raise ValueError(f"{path} is missing; the {split} split needs it.")
      with open(path, 'rb') as f:
        digest = hashlib.file_digest(f, 'sha256').hexdigest()
      if digest != manifest[name]['sha256']:
        raise ValueError(f"{path} differs from its sha256 in MANIFEST.json; restore the book.")
  return manifest


def lay_out(src: str, out: str, copy: bool = False) -> dict:
  """Writes out/<split>/<book> for every book (links to src's files, or copies) and
  out/SPLITS.json; returns what SPLITS.json holds. A book already laid out is replaced."""
  manifest = check(src)
  record = {'src': os.path.realpath(src), 'how': 'copies' if copy else 'symlinks', 'splits': {}}
  for split, files in SPLITS.items():
    folder = os.path.join(out, split)
    os.makedirs(folder, exist_ok=True)
    for name in files:
      target, source = os.path.join(folder, name), os.path.realpath(os.path.join(src, name))
      if os.path.lexists(target):
        os.remove(target)
      if copy:
        shutil.copyfile(source, target)
      else:
        os.symlink(source, target)
    record['splits'][split] = [{k: manifest[n][k] for k in ('file', 'title', 'bytes')}
                               for n in files]
  with open(os.path.join(out, 'SPLITS.json'), 'w') as f:
    json.dump(record, f, indent=2)
  return record


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m latent_flax.tasks.books',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--src', default='../shared/data/books', help='the shared books folder')
  parser.add_argument('--out', default='data/books', help='the corpus folder to write')
  parser.add_argument('--copy', action='store_true', help='copy the books instead of linking')
  args = parser.parse_args(argv)
  try:
    record = lay_out(args.src, args.out, args.copy)
  except (ValueError, OSError) as e:
    print(f"books: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  for split, books in record['splits'].items():
    print(f"{split:10s} {len(books):2d} books, {sum(b['bytes'] for b in books):>10,} bytes: "
          + ', '.join(b['title'] for b in books))
  print(f"wrote {args.out}/ (train/, validation/, test/, SPLITS.json); use "
        f"--config.data.name=text_files --config.data.path={args.out}")


if __name__ == '__main__':
  main()
