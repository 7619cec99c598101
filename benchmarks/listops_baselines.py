"""Accuracy of two rules that read almost nothing, on our ListOps splits, and how closely
trained classifiers follow the second.

    python benchmarks/listops_baselines.py [--out benchmarks/results/listops_baselines]
        [--workdir runs/listops_m64_first [--workdir ...]] [--max_examples 2000]

- majority: always the most common class of the train split;
- outermost operator: the most common train label among expressions that start with the
  same operator (one look at token 0; latent_flax/tasks/listops.rule_predictions).
Published ListOps results (Transformer 36.37%) sit near the second rule, so a model's
accuracy means little until it beats it. For each --workdir (a ListOps train.py run),
the latest checkpoint's test predictions (latent_flax/evaluation/probes.py) are compared
with the rule's: accuracy, agreement with the rule, and accuracy where the rule is wrong.
--config picks the data set (default configs/listops_m64.py's). Writes <out>.json.
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np

from benchmarks import harness
from latent_flax.evaluation import probes
from latent_flax.tasks import listops


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--out', default='benchmarks/results/listops_baselines')
  ap.add_argument('--workdir', action='append', default=[],
                  help='a ListOps train.py run to compare with the rule (repeatable)')
  ap.add_argument('--max_examples', type=int, default=2000,
                  help='test examples per --workdir (the first ones)')
  ap.add_argument('--config', default='listops_m64',
                  help='NAME[:ARG], a config module of configs/ whose data set to read')
  args = ap.parse_args()
  name, _, arg = args.config.partition(':')
  config = importlib.import_module(f'configs.{name}').get_config(arg or None).data
  splits = {s: listops.load(config, s) for s in listops.SPLITS}
  train = splits['train']
  result = {'data': {k: config[k] for k in ('num_train_examples', 'num_validation_examples',
                                           'num_test_examples', 'min_length', 'max_length',
                                           'seed')}}
  for split in ('validation', 'test'):
    d = splits[split]
    zeros = lambda a: np.zeros(len(a), np.int64)
    majority = listops.rule_predictions(zeros(train['targets']), train['targets'],
                                        zeros(d['targets']))
    outermost = listops.rule_predictions(train['inputs'][:, 0], train['targets'],
                                         d['inputs'][:, 0])
    result[split] = {'majority': float(np.mean(majority == d['targets'])),
                     'outermost_operator': float(np.mean(outermost == d['targets']))}
    print(f"{split:>10s}: majority class {result[split]['majority']:.4f}, "
          f"outermost operator {result[split]['outermost_operator']:.4f}")
  test = splits['test']
  rule = listops.rule_predictions(train['inputs'][:, 0], train['targets'], test['inputs'][:, 0])
  for workdir in args.workdir:
    k = min(args.max_examples, len(test['targets']))
    predicted, step = probes.classifier_predictions(workdir, test['inputs'][:k],
                                                    test['mask'][:k])
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
  harness.write_results(args.out + '.json', args, **result)
  print(f"wrote {args.out}.json")


if __name__ == '__main__':
  main()
