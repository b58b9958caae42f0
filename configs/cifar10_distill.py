"""CIFAR-10 distillation with unlabeled examples at CPU scale.

    python -m launch.main --config=configs/cifar10_distill.py:method=slam,labeled=2500 \
        --config.data.manual_dir=../shared/datasets --workdir=/tmp/distill/c10_slam
    python -m experiments.unlabeled_distillation --table=cifar10   # the table

Teacher: CIFAR ResNet-8 (78k parameters) trained on `labeled` images for
`teacher_steps` steps (crop + flip, SGD, cosine). Student: a small CNN
(16-32-64 conv stages, 24k parameters) trained for `student_steps` steps on
the teacher's cached outputs over the unlabeled rest of the 50k train images
(500 validation). Fixed step budgets (not epochs) keep every cell the same
cost so the whole 3 sizes x 3 seeds x 7 rows table fits the CPU budget.
`student=resnet` swaps in a ResNet-8 student whose residual is `residual`
(standard or a LAuReL variant, e.g. laurel_rw_lr) with rank `rank`.
The papers' regime (experiments/unlabeled_distillation.py, table
cifar10_regime) trains by epochs instead: `teacher_epochs` over the labeled
images (a CIFAR ResNet of `teacher_depth`), `student_epochs` over the
unlabeled ones (0: the step budgets above).
"""
from configs import cifar10_teacher
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, method='slam', labeled=2500, validation=500,
                         teacher='', seed=0, teacher_steps=600,
                         student_steps=400, student='cnn',
                         residual='standard', rank=16, runlocal=False,
                         manual_dir='../shared/datasets', teacher_epochs=0.0,
                         student_epochs=0.0, teacher_depth=8)
  teacher = cifar10_teacher.get_config(
      f'manual_dir={arg.manual_dir},depth={arg.teacher_depth}'
      + (',runlocal' if arg.runlocal else ''))
  if arg.runlocal:
    arg.validation = teacher.data.validation
  elif arg.teacher_epochs > 0:
    teacher.total_epochs = arg.teacher_epochs
    teacher.eval_every_epochs = max(1.0, arg.teacher_epochs / 6)
  else:
    teacher.total_epochs = -1.0
    teacher.total_steps = arg.teacher_steps
    teacher.eval_every_epochs = -1.0
  c = common.unlabeled_student(arg, 'cifar10_jpeg', teacher)
  c.data.manual_dir = arg.manual_dir
  c.data.augment = 'crop_flip'
  if arg.student == 'resnet':    # a ResNet-8 student, LAuReL-ready
    c.model_name = 'resnet'
    c.model.depth = 8
    c.model.width = 1.0
    common.set_residual(c.model, arg.residual, arg.rank)
    common.set_memory(c.model)
    common.set_conv(c.model)
  else:
    c.model_name = arg.student
    c.model.widths = (16, 32, 64)
    common.set_conv(c.model)
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.total_steps = arg.student_steps
  if arg.student_epochs > 0:
    c.total_steps = -1
    c.total_epochs = arg.student_epochs
  c.optimizer.name = 'adam'
  c.optimizer.lr = 3e-3
  c.optimizer.weight_decay = 0.0
  c.log_every_steps = 100
  c.checkpoint_every_steps = 300
  c.distill.predict_batch_size = 1000
  if arg.runlocal:                # a 2,000-image pool: a quick labeling pass
    c.data.in_memory = False            # read only the examples used
    c.data.test_split = 'test[:500]'
    c.data.unlabeled = 2000
    c.total_steps = 2
    c.log_every_steps = 1
    c.batch_size = 16
    c.eval_batch_size = 200
    c.eval_splits = 'validation'
    c.distill.predict_batch_size = 200
  return c
