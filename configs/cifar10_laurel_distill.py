"""Distillation into a LAuReL student: CIFAR-10, ResNet-8 teacher on
`labeled` images, ResNet-8 student with LAuReL residuals trained on the
teacher's outputs over the unlabeled rest (shows the pieces compose).

    python -m launch.main \
        --config=configs/cifar10_laurel_distill.py:method=slam,residual=laurel_rw_lr \
        --config.data.manual_dir=../shared/datasets --workdir=/tmp/distill/c10_laurel

Arguments: as configs/cifar10_distill.py (method, labeled, validation,
teacher, seed, teacher_steps, student_steps, runlocal, manual_dir), plus
residual (the student's: standard or laurel_rw, laurel_lr, laurel_pa,
laurel_rw_lr, laurel_rw_pa, laurel_lr_pa, laurel_rw_lr_pa) and rank.
"""
from configs import cifar10_distill
from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, method='vanilla', residual='laurel_rw_lr',
                         rank=16, labeled=2500, validation=500, teacher='',
                         seed=0, teacher_steps=600, student_steps=400,
                         runlocal=False, manual_dir='../shared/datasets')
  return cifar10_distill.get_config(
      ','.join(f'{k}={v}' for k, v in arg.items()
               if k != 'runlocal' and v != '') + ',student=resnet'
      + (',runlocal' if arg.runlocal else ''))
