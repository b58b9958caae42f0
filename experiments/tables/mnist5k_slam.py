"""Looking for SLaM's low-label failure on mnist5k (docs/methods/slam.md):
its normalised form, per-example k and a smaller k, beside vanilla. Shares
the mnist5k table's teachers and cells."""
TABLE = dict(
    kind='distill', config='configs/mnist5k_distill.py', cells='mnist5k',
    labeled=(100, 200), seeds=(0, 1, 2),
    methods=('vanilla', 'slam', 'slam[method_kw.normalize=True]',
             'slam[distill.k=per_example]', 'slam[distill.k_delta=0.2]'))
