"""The README's quickstart: the pipeline on digits, one seed, three methods."""
TABLE = dict(
    kind='distill', config='configs/digits_distill.py', labeled=(100,),
    seeds=(0,), methods=('vanilla', 'weighted', 'slam'))
