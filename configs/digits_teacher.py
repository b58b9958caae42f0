"""Quickstart: a teacher MLP on scikit-learn's digits (offline, ~1 minute).

    python -m launch.main --config=configs/digits_teacher.py \
        --workdir=/tmp/distill/digits_teacher

Arguments (`configs/digits_teacher.py:labeled=500,runlocal`):
  labeled: labeled training examples (-1: all 1,400); validation: 100 held out.
  runlocal: 2 steps, for smoke tests.
Expected: ~97% test accuracy (397 test digits) on a 2-core CPU in well under
a minute of training.
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, labeled=-1, runlocal=False)
  c = common.base_config()
  c.data.name = 'digits'
  c.data.validation = 100
  c.data.labeled = arg.labeled
  c.model_name = 'mlp'
  c.model.hidden = (256, 256)
  c.model.dropout = 0.0
  c.batch_size = 100
  c.total_epochs = 30.0
  c.optimizer.name = 'adam'
  c.optimizer.lr = 2e-3
  c.optimizer.weight_decay = 0.0
  c.schedule.name = 'cosine'
  c.log_every_steps = 50
  c.eval_every_epochs = 10.0
  c.checkpoint_every_steps = 200
  if arg.runlocal:
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c
