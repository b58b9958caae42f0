"""Paper-scale distillation with unlabeled examples on a TFDS catalog set,
for machines with the data prepared (TPU VMs, GPU boxes): the CIFAR-10/100
settings of Weighted Distillation and SLaM (ResNet teacher -> smaller
ResNet student; 500 validation examples; the rest of the train split
unlabeled).

    python -m launch.main \
        --config=configs/tfds_distill.py:dataset=cifar100,labeled=5000,method=slam \
        --config.data.data_dir=$TFDS_DATA_DIR --workdir=$WORKDIR/c100_slam

Arguments: dataset (cifar10, cifar100, svhn_cropped, ...), labeled,
validation, method, teacher_depth / student_depth (CIFAR ResNets; default
110 -> 56 as in the papers' CIFAR pairs, [R] in papers.md 1.3), epochs
(teacher and student), batch, seed, teacher (path of a trained teacher),
runlocal (2 steps, tiny nets; the tests run it on TFDS mock data).
On a pod slice set `--config.mesh.data=-1` (default) and, for large
models, `--config.mesh.fsdp=N`; teacher and student use the same mesh.
"""
from core import defaults
from configs import common
from configs import tfds_teacher


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset='cifar100', labeled=5000,
                         validation=500, method='slam', teacher_depth=110,
                         student_depth=56, epochs=200.0, batch=1024, seed=0,
                         teacher='', runlocal=False)
  teacher = tfds_teacher.get_config(
      f'dataset={arg.dataset},labeled={arg.labeled},validation='
      f'{arg.validation},depth={arg.teacher_depth},epochs={arg.epochs}'
      + (',runlocal' if arg.runlocal else ''))
  teacher.seed = arg.seed
  teacher.data.carve_seed = arg.seed
  teacher.data.unlabeled = -1
  if not arg.runlocal:
    teacher.batch_size = arg.batch
    teacher.optimizer.lr = 0.1 * arg.batch / 128

  c = common.base_config()
  c.seed = arg.seed
  c.data = teacher.data.copy_and_resolve_references()
  c.data.train_on = 'unlabeled'
  c.method = arg.method
  c.model_name = 'resnet'
  c.model.depth = arg.student_depth
  c.model.width = 1.0
  common.set_residual(c.model)
  common.set_memory(c.model)
  common.set_conv(c.model)
  c.batch_size = arg.batch
  c.eval_batch_size = 1024
  c.total_epochs = arg.epochs
  c.optimizer.lr = 0.1 * arg.batch / 128
  c.optimizer.weight_decay = 5e-4
  c.schedule.warmup_epochs = 5.0
  c.eval_every_epochs = 20.0
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.teacher = dict(workdir=arg.teacher, config=teacher)
  c.distill = defaults.distill()
  c.distill.predict_batch_size = 1024
  if arg.runlocal:
    c.model.depth = 8
    c.model.width = 0.5
    c.total_epochs = -1.0
    c.total_steps = 2
    c.batch_size = teacher.batch_size
    c.eval_batch_size = teacher.eval_batch_size
    c.schedule.warmup_epochs = -1.0
    c.log_every_steps = 1
    c.distill.predict_batch_size = 8
  return c
