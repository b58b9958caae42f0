"""CIFAR-10 at CPU scale: ResNet-8 teachers of 600 steps, small-CNN students
of 400 steps."""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py',
    labeled=(1000, 2500, 5000), seeds=(0, 1, 2),
    methods=('vanilla', 'hard', 'weighted', 'slam', 'taylor_ce',
             'pseudo_label'))
