"""The SLaM rebuttal's cells on CIFAR-10, go/no-go (the papers'-effects
issue, item 3): at 1% (500) and 5% (2,500) labels, a CIFAR ResNet-8 teacher
(30 epochs over the labels) and a student of the teacher's own size
(ResNet-8, 15 epochs over the unlabeled rest only), one seed, vanilla and
labels-only. The question is the rebuttal's precondition: does the vanilla
student beat its teacher (theirs: CIFAR-10 5% teacher 51.67, vanilla 54.2;
1% teacher 10.07, vanilla 11.75)? It did not (docs/regime.md); with a
teacher trained 300 epochs it does (cifar10_rebuttal_teacher300), and
cifar10_rebuttal runs every method on that recipe.

    python -m experiments.run --table=cifar10_rebuttal_go   # ~1 h of CPU
"""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py',
    cells='cifar10_rebuttal',
    labeled=(2500, 500), seeds=(0,),
    extra=(',teacher_epochs=30,student_epochs=15,teacher_depth=8,'
           'student=resnet'),
    methods=('vanilla',))
