"""The papers' regime (the regime issue): teachers trained by epochs on 4k-25k
labels (60-80% test accuracy), students trained 15 epochs over the unlabeled
rest, every method plus the weighted variants (debiased weights, hard
labels) and SLaM's normalised form. Days of background CPU; resumable cell
by cell."""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py',
    labeled=(4000, 10000, 25000), seeds=(0, 1, 2),
    extra=',teacher_epochs=30,student_epochs=15',
    methods=('vanilla', 'hard', 'weighted', 'slam', 'taylor_ce',
             'pseudo_label', 'weighted[distill.weight_mode=debiased]',
             'weighted[method_kw.soft=False]',
             'slam[method_kw.normalize=True]'))
