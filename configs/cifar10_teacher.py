"""CIFAR-10 teacher on a labeled subset, from the offline JPEG archive.

    python -m launch.main \
        --config=configs/cifar10_teacher.py:labeled=5000 \
        --config.data.manual_dir=../shared/datasets \
        --workdir=/tmp/distill/cifar10_teacher

Arguments: labeled (training labels, a seeded sample of the 50k train
images), validation (held out of train, default 500), depth (CIFAR ResNet
depth, 8/20/32/56/110), width (multiplier), epochs, residual (standard or a
LAuReL variant, e.g. laurel_rw_lr), rank (LAuReL's r), runlocal (2 steps).
The archive is prepared once into the TFDS data dir (about a minute).
Figures (2-core CPU) are in docs/experiments.md (Reference runs).
"""
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, labeled=5000, validation=500, depth=8,
                         width=1.0, epochs=50.0, residual='standard',
                         rank=16, runlocal=False,
                         manual_dir='../shared/datasets')
  c = common.base_config()
  c.data.name = 'cifar10_jpeg'
  c.data.manual_dir = arg.manual_dir
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1
  c.data.augment = 'crop_flip'
  c.model_name = 'resnet'
  c.model.depth = arg.depth
  c.model.width = arg.width
  c.model.extra_blocks = (0, 0, 0)   # naive scaling: blocks per stage added
  common.set_residual(c.model, arg.residual, arg.rank)
  common.set_memory(c.model)
  common.set_conv(c.model)
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.total_epochs = arg.epochs
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = 'cosine'
  c.log_every_steps = 40
  c.eval_every_epochs = 5.0
  c.eval_splits = 'validation,test'
  c.checkpoint_every_steps = 200
  if arg.runlocal:
    c.data.in_memory = False            # read only the examples used
    c.data.test_split = 'test[:500]'
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
    c.batch_size = 16
    c.eval_batch_size = 200
    c.data.validation = 200
    c.eval_splits = 'validation'
  return c
