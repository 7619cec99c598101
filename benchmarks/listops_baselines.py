"""Accuracy of two rules that read almost nothing, on our ListOps splits.

    python benchmarks/listops_baselines.py [--out benchmarks/results/listops_baselines]

- majority: always the most common class of the train split;
- outermost operator: the most common train label among expressions that start
  with the same operator (one look at token 0).
Published ListOps results (Transformer 36.37%) sit near the second rule, so a
model's accuracy means little until it beats it. Writes <out>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def rule_accuracy(train_keys, train_labels, keys, labels, num_classes: int) -> float:
  """Accuracy of predicting, for each key, the commonest train label with that key."""
  counts = np.zeros((int(max(train_keys.max(), keys.max())) + 1, num_classes), np.int64)
  np.add.at(counts, (train_keys, train_labels), 1)
  return float(np.mean(counts.argmax(axis=1)[keys] == labels))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='benchmarks/results/listops_baselines')
  args = parser.parse_args()
  from configs import listops_m64
  from latent_flax import listops

  config = listops_m64.get_config().data
  splits = {s: listops.load(config, s) for s in listops.SPLITS}
  train = splits['train']
  n = listops.NUM_CLASSES
  result = {'data': {k: config[k] for k in ('num_train_examples', 'num_validation_examples',
                                           'num_test_examples', 'min_length', 'max_length',
                                           'seed')}}
  for split in ('validation', 'test'):
    d = splits[split]
    zeros = np.zeros(len(train['targets']), np.int64)
    result[split] = {
        'majority': rule_accuracy(zeros, train['targets'], np.zeros(len(d['targets']), np.int64),
                                  d['targets'], n),
        'outermost_operator': rule_accuracy(train['inputs'][:, 0], train['targets'],
                                            d['inputs'][:, 0], d['targets'], n)}
    print(f"{split:>10s}: majority class {result[split]['majority']:.4f}, "
          f"outermost operator {result[split]['outermost_operator']:.4f}")
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}.json")


if __name__ == '__main__':
  main()
