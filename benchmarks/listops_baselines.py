"""Accuracy of two rules that read almost nothing, on our ListOps splits, and how
closely trained classifiers follow the second.

    python benchmarks/listops_baselines.py [--out benchmarks/results/listops_baselines]
        [--workdir runs/listops_m64_first [--workdir ...]] [--max_examples 2000]

- majority: always the most common class of the train split;
- outermost operator: the most common train label among expressions that start
  with the same operator (one look at token 0).
Published ListOps results (Transformer 36.37%) sit near the second rule, so a
model's accuracy means little until it beats it. For each --workdir (a ListOps
train.py run), the latest checkpoint's test predictions are compared with the
rule's: accuracy, agreement with the rule, and accuracy where the rule is wrong.
Writes <out>.json.
"""

from __future__ import annotations

import argparse
import json
import os


import numpy as np  # noqa: E402


def rule_predictions(train_keys, train_labels, keys, num_classes: int) -> np.ndarray:
  """For each key, the commonest train label among train examples with that key."""
  counts = np.zeros((int(max(train_keys.max(), keys.max())) + 1, num_classes), np.int64)
  np.add.at(counts, (train_keys, train_labels), 1)
  return counts.argmax(axis=1)[keys]


def rule_accuracy(train_keys, train_labels, keys, labels, num_classes: int) -> float:
  return float(np.mean(rule_predictions(train_keys, train_labels, keys, num_classes) == labels))


def model_predictions(workdir: str, inputs: np.ndarray, mask: np.ndarray,
                      batch: int = 16) -> tuple[np.ndarray, int]:
  """Latest checkpoint's argmax classes for `inputs` and `mask` (as listops.load gives
  them), and its step."""
  import jax
  from latent_flax import config_lib
  from latent_flax.evaluation import runs
  config = runs.workdir_config(workdir)
  restored = runs.restore_checkpoint(workdir, config)
  model = config_lib.build_model(config)
  apply = jax.jit(lambda p, x, m: model.apply({'params': p}, x, m).argmax(-1))
  out = [np.asarray(apply(restored.state.params, inputs[i:i + batch], mask[i:i + batch]))
         for i in range(0, len(inputs), batch)]
  return np.concatenate(out), restored.step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='benchmarks/results/listops_baselines')
  parser.add_argument('--workdir', action='append', default=[],
                      help='a ListOps train.py run to compare with the rule (repeatable)')
  parser.add_argument('--max_examples', type=int, default=2000,
                      help='test examples per --workdir (the first ones)')
  args = parser.parse_args()
  from configs import listops_m64
  from latent_flax.tasks import listops

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
  test = splits['test']
  rule = rule_predictions(train['inputs'][:, 0], train['targets'], test['inputs'][:, 0], n)
  for workdir in args.workdir:
    k = min(args.max_examples, len(test['targets']))
    predicted, step = model_predictions(workdir, test['inputs'][:k], test['mask'][:k])
    labels, by_rule = test['targets'][:k], rule[:k]
    rule_wrong = by_rule != labels
    result.setdefault('runs', {})[workdir] = run = {
        'step': step, 'test_examples': int(k),
        'accuracy': float(np.mean(predicted == labels)),
        'rule_accuracy': float(np.mean(by_rule == labels)),
        'agreement_with_rule': float(np.mean(predicted == by_rule)),
        'accuracy_where_rule_wrong': float(np.mean(predicted[rule_wrong] == labels[rule_wrong]))}
    print(f"{workdir} (step {step}, {k} test examples): accuracy {run['accuracy']:.4f} "
          f"(rule {run['rule_accuracy']:.4f}); agrees with the rule on "
          f"{run['agreement_with_rule']:.4f}; right on {run['accuracy_where_rule_wrong']:.4f} "
          "of the examples the rule gets wrong")
  os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
  with open(args.out + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  print(f"wrote {args.out}.json")


if __name__ == '__main__':
  main()
