"""The SLaM rebuttal's cells on CIFAR-10 with every method (the papers'-effects
issue, item 3): 5% (2,500) and 1% (500) labels, a CIFAR ResNet-8 teacher
(300 epochs over the labels) and a ResNet-8 student (40 epochs over the
unlabeled rest only), the teacher labeling each augmented view the student
sees (distill.online, which put vanilla 0.17 above its teacher at 15
epochs); 3 seeds, paired differences. Weighted's and SLaM's fits are fitted
on validation and applied to the teacher's outputs on each view
(methods.Method.fit_online). The teacher is cifar10_rebuttal_teacher300's
(its cells shared): at 30 epochs it was under-trained (57.37 against the
labels-only student's 63.20); at 300 its validation accuracy has stopped
rising (65.39 test) and vanilla beats it by 2.00 (docs/regime.md).

    python -m experiments.run --table=cifar10_rebuttal   # ~1 day of CPU
"""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py',
    cells='cifar10_rebuttal_teacher300',
    labeled=(2500, 500), seeds=(0, 1, 2),
    extra=(',teacher_epochs=300,student_epochs=40,teacher_depth=8,'
           'student=resnet'),
    methods=('vanilla[distill.online=True]', 'hard[distill.online=True]',
             'weighted[distill.online=True]',
             'weighted[method_kw.weight_mode=debiased;distill.online=True]',
             'weighted[method_kw.soft=False;distill.online=True]',
             'slam[distill.online=True]',
             'slam[method_kw.normalize=True;distill.online=True]',
             'taylor_ce[distill.online=True]'))
