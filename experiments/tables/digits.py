"""Weighted distillation / SLaM comparison on scikit-learn's digits."""
TABLE = dict(
    kind='distill', config='configs/digits_distill.py',
    labeled=(50, 100, 200), seeds=(0, 1, 2),
    methods=('vanilla', 'hard', 'weighted', 'slam', 'taylor_ce',
             'pseudo_label'))
