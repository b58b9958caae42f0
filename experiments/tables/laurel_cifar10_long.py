"""LAuReL, Table 1 analogue at a real schedule (the regime issue, item 6):
laurel_cifar10's ResNet-8 at half width on 49,500 CIFAR-10 train images,
trained 10 epochs (3,870 steps of 128) instead of 1.6, the same rows and
3 seeds, with the learned alpha, beta and gamma read back from a
checkpoint every 500 steps (`<table>_trajectory.png`). Cells of its own
(its schedule differs from laurel_cifar10's)."""
TABLE = dict(
    kind='laurel', config='configs/cifar10_teacher.py',
    arg='labeled=-1,validation=500,width=0.5',
    base={'data.unlabeled': 0, 'total_epochs': 10.0, 'total_steps': -1,
          'eval_every_epochs': -1.0, 'log_every_steps': 500,
          'model.residual_kw.rank': 2},
    seeds=(0, 1, 2), metric='test/accuracy', higher=True, trajectory=500,
    rows={'baseline': {},
          'baseline + 1 block': {'model.extra_blocks': (1, 0, 0)},
          'LAuReL-RW': {'model.residual': 'laurel_rw'},
          'LAuReL-RW+LR (r=2)': {'model.residual': 'laurel_rw_lr'},
          'LAuReL-RW+LR+PA (r=2, k=3)': {'model.residual': 'laurel_rw_lr_pa'}})
