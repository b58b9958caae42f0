"""Paper-scale ImageNet distillation with unlabeled examples (TPU/GPU with
`imagenet2012` prepared for TFDS): a ResNet-50 teacher trained on a labeled
subset labels the rest; a ResNet-18 student learns from it.

    python -m launch.main \
        --config=configs/imagenet_distill.py:labeled=128116,method=slam \
        --config.data.data_dir=$TFDS_DATA_DIR --workdir=$WORKDIR/in_slam

Sizes follow the family the papers use ([R] papers.md 1.3: larger -> smaller
ResNet on ImageNet; the exact pair and schedule are not verified). Choices
here [I]: 10,000 validation examples (1000 classes make a 500-example
isotonic fit too noisy), top-10 teacher logits in the cache (the full
1.28M x 1000 float32 would be 5 GB), 224px inception crops, SGD with
batch 1024, lr 0.4, 5 warmup epochs, cosine, label smoothing off.
Arguments: labeled, validation, method, teacher_depth, student_depth,
epochs, batch, seed, teacher, runlocal (tiny nets on TFDS mock data).
"""
from core import defaults
from configs import common


def _base(arg, depth):
  c = common.base_config()
  c.seed = arg.seed
  c.data.name = 'imagenet2012'
  c.data.in_memory = False
  c.data.test_split = 'validation'   # ImageNet's test labels are hidden
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = -1
  c.data.carve_seed = arg.seed
  c.data.image_size = 224
  c.data.augment = 'inception_crop'
  c.model_name = 'resnet_imagenet'
  c.model.depth = depth
  c.model.width = 1.0
  common.set_residual(c.model)
  common.set_memory(c.model)
  common.set_conv(c.model)
  c.model_dtype = 'bfloat16'
  c.batch_size = arg.batch
  c.eval_batch_size = 1024          # divides over 8, 32, ... devices
  c.total_epochs = arg.epochs
  c.optimizer.lr = 0.1 * arg.batch / 256
  c.optimizer.weight_decay = 1e-4
  c.schedule.warmup_epochs = 5.0
  c.eval_every_epochs = 10.0
  c.log_every_steps = 200
  c.checkpoint_every_steps = 2000
  c.data.prefetch = 4
  if arg.runlocal:
    c.data.image_size = 32
    c.model.depth = 18
    c.model.width = 0.125
    c.model_dtype = 'float32'
    c.batch_size = 8
    c.eval_batch_size = 8
    c.total_epochs = -1.0
    c.total_steps = 2
    c.schedule.warmup_epochs = -1.0
    c.log_every_steps = 1
  return c


def get_config(arg=None):
  arg = common.parse_arg(arg, labeled=128116, validation=10000,
                         method='slam', teacher_depth=50, student_depth=18,
                         epochs=90.0, batch=1024, seed=0, teacher='',
                         runlocal=False)
  if arg.runlocal:
    arg.labeled, arg.validation = 8, 8
  teacher = _base(arg, arg.teacher_depth)
  if not arg.runlocal:       # 128 images per chip: 18.5 GiB without, 8.5 with
    teacher.model.remat = 'dots'
  c = _base(arg, arg.student_depth)
  c.data.train_on = 'unlabeled'
  c.method = arg.method
  c.teacher = dict(workdir=arg.teacher, config=teacher)
  c.distill = defaults.distill()
  c.distill.cache_topk = 10
  c.distill.predict_batch_size = 8 if arg.runlocal else 1024
  return c
