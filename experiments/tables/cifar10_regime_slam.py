"""SLaM studied in the papers' regime (the regime issue, item 3): at one
labeled size where the teacher is usefully noisy, plain SLaM against its
normalised form, an alpha floor of 0.6 (method_kw.alpha_floor, spelled
distill.alpha_floor in the row's name as when its cells were recorded: the
fitted alpha clipped to [0.6, 1], above the 1/2 where the loss stops rewarding the
top-k) and a top-k-renormalised teacher target (method_kw.target=topk,
distill/methods.py: slam), beside vanilla. Shares its cells with
cifar10_regime, so the rows both have are trained once; the report adds
each SLaM row's regime (share of alpha < 1/2, teacher mass outside its
top-k, mean k)."""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py', cells='cifar10_regime',
    labeled=(10000,), seeds=(0, 1, 2),
    extra=',teacher_epochs=30,student_epochs=15',
    methods=('vanilla', 'slam', 'slam[method_kw.normalize=True]',
             'slam[distill.alpha_floor=0.6]',
             'slam[method_kw.target=topk]'))
