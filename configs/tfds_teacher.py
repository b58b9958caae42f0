"""A teacher on any TFDS catalog image dataset (needs a prepared data_dir or
internet), e.g. CIFAR-10/100 or MNIST as TFDS ships them.

    python -m launch.main \
        --config=configs/tfds_teacher.py:dataset=cifar100,labeled=10000 \
        --config.data.data_dir=$TFDS_DATA_DIR --workdir=/tmp/distill/c100

Arguments: dataset (a TFDS name with `image` and `label` features of a fixed
size), labeled, validation, depth/width of the CIFAR ResNet, epochs,
residual/rank (standard or a LAuReL variant and its rank),
runlocal (2 steps; the tests run it on TFDS mock data).
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset='cifar10', labeled=-1, validation=1000,
                         depth=20, width=1.0, epochs=100.0,
                         residual='standard', rank=16, runlocal=False)
  c = common.base_config()
  c.data.name = arg.dataset
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1 if arg.labeled >= 0 else 0
  c.data.augment = 'crop_flip'
  c.model_name = 'resnet'
  c.model.depth = arg.depth
  c.model.width = arg.width
  common.set_residual(c.model, arg.residual, arg.rank)
  common.set_memory(c.model)
  common.set_conv(c.model)
  c.batch_size = 128
  c.eval_batch_size = 1024          # divides over 8, 32, ... devices
  c.total_epochs = arg.epochs
  c.optimizer.lr = 0.1
  c.optimizer.weight_decay = 5e-4
  c.eval_every_epochs = 10.0
  c.log_every_steps = 100
  if arg.runlocal:
    c.data.validation = 4
    c.data.labeled = 8
    c.data.unlabeled = -1
    c.model.depth = 8
    c.model.width = 0.5
    c.total_epochs = -1.0
    c.total_steps = 2
    c.batch_size = 8
    c.eval_batch_size = 8
    c.log_every_steps = 1
  return c
