"""Distillation with unlabeled examples on scikit-learn's digits (offline).

    python -m launch.main --config=configs/digits_distill.py:method=slam \
        --workdir=/tmp/distill/digits_slam

A large MLP teacher trains on `labeled` digits; it labels the `unlabeled`
rest of the train split once (cached beside the teacher); the method's state
is fitted on `validation`; a small MLP student learns from the teacher's
outputs. Arguments: method (vanilla, hard, weighted, slam, taylor_ce,
pseudo_label), labeled, validation, teacher (path of a trained teacher
workdir to reuse; default: train it in <workdir>/teacher), seed, runlocal.
"""
from configs import common
from configs import digits_teacher


def get_config(arg=None):
  arg = common.parse_arg(arg, method='slam', labeled=100, validation=150,
                         teacher='', seed=0, runlocal=False)
  teacher = digits_teacher.get_config('runlocal' if arg.runlocal else None)
  teacher.total_epochs = -1.0 if arg.runlocal else 100.0
  c = common.unlabeled_student(arg, 'digits', teacher)
  c.model_name = 'mlp'
  c.model.hidden = (32,)
  c.model.dropout = 0.0
  c.batch_size = 100
  c.total_epochs = 30.0
  c.optimizer.name = 'adam'
  c.optimizer.lr = 3e-3
  c.optimizer.weight_decay = 0.0
  c.eval_every_epochs = 10.0
  c.log_every_steps = 100
  if arg.runlocal:
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c
