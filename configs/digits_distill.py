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
from distill import distillation


def get_config(arg=None):
  arg = common.parse_arg(arg, method='slam', labeled=100, validation=150,
                         teacher='', seed=0, runlocal=False)
  c = common.base_config()
  c.seed = arg.seed
  c.data.name = 'digits'
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1
  c.data.carve_seed = arg.seed
  c.data.train_on = 'unlabeled'
  c.method = arg.method
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

  teacher = digits_teacher.get_config(
      f'labeled={arg.labeled}' + (',runlocal' if arg.runlocal else ''))
  teacher.seed = arg.seed
  teacher.data.validation = arg.validation
  teacher.data.unlabeled = -1
  teacher.data.carve_seed = arg.seed
  teacher.total_epochs = -1.0 if arg.runlocal else 100.0
  c.teacher = dict(workdir=arg.teacher, config=teacher)
  c.distill = distillation.distill_defaults()
  if arg.runlocal:
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c
