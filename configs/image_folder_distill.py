"""Your own images: a ResNet teacher (pretrained or from scratch) fine-tunes
on a labeled folder, labels your unlabeled images, and a student learns
from its labels (docs/own_images.md).

    python -m launch.main --config=configs/image_folder_distill.py:\
labeled_dir=/data/flowers,unlabeled=/data/more_flowers,\
weights=/models/resnet50.safetensors,teacher_arch=resnet50,\
student_arch=resnet18,method=vanilla --workdir=/tmp/distill/flowers

`labeled_dir`: <class>/<image> folders (JPEG/PNG, any sizes; test images in
<labeled_dir>/test/<class>/, else a fixed 10% of them). `unlabeled`: a folder
or glob of images without labels ('' : the labeled folder's images beyond
`labeled` and `validation`, their labels hidden). `weights`: a torchvision,
timm or Hugging Face ResNet checkpoint of `teacher_arch` (.safetensors; .pth
with torch; '' trains the teacher from scratch); its head is replaced when
the class count differs (`head`: auto | new | pretrained); `pretrained_on`
declares the dataset those weights were trained on (recorded in the
teacher's inputs.json, not checked: docs/own_images.md). Architectures:
resnet18, resnet34, resnet50, resnet101, resnet152 (resnet_imagenet,
torchvision's padding). Methods: any; the teacher's statistics are fitted on
`validation` labeled images (default 20, held out of its training). Other arguments: labeled (-1 all
but validation), validation, image_size, teacher_epochs, student_epochs,
batch, lr, teacher (a trained teacher's workdir), seed, runlocal (tiny
widths, 2 steps each).
"""
from core.errors import ConfigError
from configs import common

ARCHS = {'resnet18': 18, 'resnet34': 34, 'resnet50': 50, 'resnet101': 101,
         'resnet152': 152}


def _depth(name, key):
  if name not in ARCHS:
    raise ConfigError(f'{key}={name!r}; valid choices: {", ".join(ARCHS)}')
  return ARCHS[name]


def _stage(arg, arch, key, epochs, lr):
  """A stage's config on the image folder: the model, the schedule."""
  c = common.base_config()
  c.seed = arg.seed
  c.data.name = 'image_folder'
  c.data.manual_dir = arg.labeled_dir
  c.data.image_size = arg.image_size
  c.data.labeled = arg.labeled
  c.data.validation = arg.validation
  c.data.unlabeled = 0 if arg.unlabeled else -1
  c.data.unlabeled_from.folder = arg.unlabeled
  c.data.carve_seed = arg.seed
  c.data.augment = 'inception_crop'
  c.model_name = 'resnet_imagenet'
  c.model.depth = _depth(arch, key)
  c.model.width = 1.0
  common.set_residual(c.model)
  common.set_memory(c.model)
  common.set_conv(c.model)
  c.batch_size = arg.batch
  c.eval_batch_size = arg.batch
  c.total_epochs = epochs
  c.optimizer.name = 'sgd'
  c.optimizer.lr = lr
  c.optimizer.weight_decay = 1e-4
  c.schedule.warmup_epochs = -1.0
  c.eval_splits = 'validation,test'
  c.log_every_steps = 20
  c.checkpoint_every_steps = 500
  if arg.runlocal:
    c.model.width = 0.125
    c.batch_size = c.eval_batch_size = 4
    c.total_epochs = -1.0
    c.total_steps = 2
    c.log_every_steps = 1
  return c


def get_config(arg=None):
  arg = common.parse_arg(
      arg, labeled_dir='', unlabeled='', teacher_arch='resnet50',
      student_arch='resnet18', weights='', head='auto', pretrained_on='',
      method='vanilla',
      image_size=224, labeled=-1, validation=20, teacher_epochs=10.0,
      student_epochs=10.0, batch=64, lr=0.01, teacher='', seed=0,
      runlocal=False)
  if arg.runlocal:
    arg.image_size = min(arg.image_size, 32)
  # (without labeled_dir the config loads; running it names data.manual_dir)
  if arg.labeled_dir and not arg.unlabeled and arg.labeled < 0:
    raise ConfigError('without unlabeled=DIR|GLOB set labeled=N: the '
                      'labeled folder\'s images beyond N (and validation) '
                      'are the unlabeled ones')
  teacher = _stage(arg, arg.teacher_arch, 'teacher_arch', arg.teacher_epochs,
                   arg.lr)
  teacher.data.unlabeled = 0     # the teacher's rest is unused
  teacher.data.unlabeled_from.folder = ''
  if arg.weights:
    teacher.init.method = 'pretrained'
    teacher.init.weights = arg.weights
    teacher.init.head = arg.head
    teacher.init.pretrained_on = arg.pretrained_on
  c = _stage(arg, arg.student_arch, 'student_arch', arg.student_epochs,
             10 * arg.lr)
  c.data.train_on = 'unlabeled'
  c.method = arg.method
  c.teacher = dict(workdir=arg.teacher, config=teacher)
  c.distill = common.core_defaults.distill()
  c.distill.predict_batch_size = arg.batch
  return c
