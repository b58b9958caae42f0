"""LAuReL, Table 1 analogue: ResNet-8 at half width (20k parameters) on 49,500
CIFAR-10 train images, 600 steps of 128 (1.6 epochs), r=2 on channel widths
8/16/32. Naive scaling adds one block to the first stage (+5.9% parameters,
the nearest to the paper's +4.37%)."""
TABLE = dict(
    kind='laurel', cells='cifar10', config='configs/cifar10_teacher.py',
    arg='labeled=-1,validation=500,width=0.5',
    base={'data.unlabeled': 0, 'total_epochs': -1.0, 'total_steps': 600,
          'eval_every_epochs': -1.0, 'log_every_steps': 100,
          'checkpoint_every_steps': 300, 'model.residual_kw.rank': 2},
    seeds=(0, 1, 2), metric='test/accuracy', higher=True,
    rows={'baseline': {},
          'baseline + 1 block': {'model.extra_blocks': (1, 0, 0)},
          'LAuReL-RW': {'model.residual': 'laurel_rw'},
          'LAuReL-RW+LR (r=2)': {'model.residual': 'laurel_rw_lr'},
          'LAuReL-RW+LR+PA (r=2, k=3)': {'model.residual': 'laurel_rw_lr_pa'}})
