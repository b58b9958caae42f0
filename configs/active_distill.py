"""Active distillation under a teacher-query budget (RAD and baselines).

    python -m launch.main --config=configs/active_distill.py:dataset=mnist5k,strategy=rad \
        --workdir=/tmp/distill/active_rad

Builds on the dataset's distillation config (teacher on `labeled` examples,
student architecture, validation split) and adds the `active` block
(distill/active_distillation.py). Arguments: dataset (digits | mnist5k |
cifar10), strategy (random | margin | entropy | kcenter | rad), method (the
student's loss: vanilla, hard, slam, ...), budget (total pool queries),
per_round, initial, steps (student steps per round), pool (unlabeled pool
size; -1: all the rest of the train split; default 12000 for cifar10,
all the rest for the others), m_over (pool | round | remaining: what RAD's
expected error count is taken over), m (a fixed count instead; 0: no
adversary; -1: from m_over), round0_from (another run of
the same seed whose round-0 student is reused), warm_start, labeled, seed, teacher (a
trained teacher's workdir), teacher_epochs (cifar10: the teacher trained
this many epochs over its labels, as in the regime tables, instead of the
default 300 steps), runlocal, manual_dir; student (the dataset's
own, or resnet: a CIFAR ResNet-8) with residual and rank (its residual
connection, e.g. laurel_rw_lr), e.g. a LAuReL student trained by SLaM on
RAD's queries:

    python -m launch.main --config=configs/active_distill.py:dataset=mnist5k,strategy=rad,method=slam,student=resnet,residual=laurel_rw_lr \
        --workdir=/tmp/distill/active_laurel_slam
"""
import ml_collections

from configs import cifar10_distill
from configs import common
from configs import digits_distill
from configs import mnist5k_distill
from core import defaults
from core.errors import ConfigError, check_choice

BASES = {'digits': digits_distill, 'mnist5k': mnist5k_distill,
         'cifar10': cifar10_distill}
DEFAULTS = {  # labeled, budget (initial included), per_round, initial,
              # student steps per round, pool (-1: the rest)
    'digits': (100, 400, 100, 100, 150, -1),
    'mnist5k': (200, 1500, 300, 300, 300, -1),
    'cifar10': (2500, 4000, 1000, 1000, 200, 12000),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, dataset='mnist5k', strategy='rad',
                         method='vanilla', budget=-1, per_round=-1,
                         initial=-1, steps=-1, labeled=-1, pool=-2,
                         m_over='pool', m=-1, round0_from='',
                         warm_start=False,
                         seed=0, teacher='', teacher_epochs=0,
                         runlocal=False,
                         manual_dir='../shared/datasets', student='',
                         residual='standard', rank=16)
  check_choice('active_distill dataset', arg.dataset, BASES)
  for name in ('budget', 'per_round', 'initial', 'steps', 'labeled'):
    if arg[name] < -1 or arg[name] == 0:
      raise ConfigError(f'active_distill {name}={arg[name]} must be positive '
                        "(or -1: the dataset's default)")
  labeled, budget, per_round, initial, steps, pool = DEFAULTS[arg.dataset]
  pick = lambda v, d: d if v < 0 else v  # noqa: E731
  base_arg = (f'method={arg.method},labeled={pick(arg.labeled, labeled)},'
              f'seed={arg.seed}' + (f',teacher={arg.teacher}'
                                    if arg.teacher else '')
              + (',runlocal' if arg.runlocal else ''))
  if arg.teacher_epochs < 0 or (arg.teacher_epochs and
                                 arg.dataset != 'cifar10'):
    raise ConfigError(f'active_distill teacher_epochs={arg.teacher_epochs}: '
                      'a positive epoch count, for dataset=cifar10 only')
  if arg.dataset == 'cifar10':   # by default a 300-step teacher: noisy
    # labels, and the 3-seed table within 90 minutes on 2 CPU cores
    base_arg += f',manual_dir={arg.manual_dir},' + (
        f'teacher_epochs={arg.teacher_epochs}' if arg.teacher_epochs
        else 'teacher_steps=300')
  c = BASES[arg.dataset].get_config(base_arg)
  c.data.unlabeled = pool if arg.pool == -2 else arg.pool
  c.total_epochs = -1.0
  c.total_steps = pick(arg.steps, steps)
  c.eval_every_epochs = -1.0
  c.eval_every_steps = -1
  c.eval_splits = 'test'
  if arg.student:
    check_choice('active_distill student', arg.student, ['resnet'])
    c.model_name = 'resnet'
    c.model = ml_collections.ConfigDict(dict(depth=8, width=1.0))
    common.set_residual(c.model, arg.residual, arg.rank)
    common.set_memory(c.model)
    common.set_conv(c.model)
  elif arg.residual != 'standard':
    raise ConfigError('active_distill residual needs student=resnet (the '
                      "datasets' own students have no residual connections)")
  c.active = defaults.active()
  c.active.strategy = arg.strategy
  c.active.budget = pick(arg.budget, budget)
  c.active.per_round = pick(arg.per_round, per_round)
  c.active.initial = pick(arg.initial, initial)
  c.active.warm_start = arg.warm_start
  c.active.m_over = arg.m_over
  c.active.m = arg.m
  c.active.round0_from = arg.round0_from
  if arg.runlocal:
    c.total_steps = 2
    c.active.budget, c.active.per_round, c.active.initial = 8, 4, 4
  # A round-0 student trains on the initial queries alone: no batch larger.
  c.batch_size = min(c.batch_size, c.active.initial)
  return c
