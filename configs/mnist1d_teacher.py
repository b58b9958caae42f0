"""A 1-D CNN teacher on MNIST-1D from its procedural generator (offline).

    python -m launch.main --config=configs/mnist1d_teacher.py:num_samples=10000 \
        --workdir=/tmp/distill/mnist1d_teacher

Arguments: num_samples (generated size; 80% train, 20% test), labeled (of the
train part; -1 all), validation (200), runlocal (2 steps).
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, num_samples=5000, labeled=1000, validation=200,
                         runlocal=False)
  c = common.base_config()
  c.data.name = 'mnist1d'
  c.data.num_samples = arg.num_samples
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1 if arg.labeled >= 0 else 0
  c.model_name = 'cnn'
  c.model.widths = (32, 64, 64)
  common.set_conv(c.model)
  c.model.dense = 128
  c.batch_size = 100
  c.total_epochs = 60.0
  c.optimizer.name = 'adam'
  c.optimizer.lr = 3e-3
  c.optimizer.weight_decay = 0.0
  c.eval_every_epochs = 20.0
  c.log_every_steps = 100
  if arg.runlocal:
    c.data.num_samples = 1000
    c.data.validation = 100
    c.data.labeled = 200
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c
