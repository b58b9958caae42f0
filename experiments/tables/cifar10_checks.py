"""Looking for the cause of the students' shortfall on CIFAR-10: longer
student training and SLaM's normalised mixing (one seed, 1000 labels).
Shares the cifar10 table's teachers and cells."""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py', cells='cifar10',
    labeled=(1000,), seeds=(0,),
    methods=('vanilla', 'vanilla[total_steps=1600]', 'slam',
             'slam[method_kw.normalize=True]',
             'slam[method_kw.normalize=True;total_steps=1600]'))
