"""The papers' regime with a student of more capacity (the regime issue's
finding): in cifar10_regime every student ends at 62-64%, about where the
24k-parameter CNN lands on the labels alone, so the methods cannot show
their effect. Here the pair is the papers' shape, a deeper ResNet teaching a
shallower one (their ResNet-110 -> ResNet-56 at CPU scale): a CIFAR
ResNet-20 teacher (270k parameters) 30 epochs over 10,000 labels, a
ResNet-8 student (78k) 15 epochs over the unlabeled rest.

    python -m experiments.run --table=cifar10_regime_resnet   # hours of CPU
"""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py',
    labeled=(10000,), seeds=(0, 1, 2),
    extra=',teacher_epochs=30,student_epochs=15,teacher_depth=20,student=resnet',
    methods=('vanilla', 'hard', 'weighted', 'slam',
             'slam[method_kw.normalize=True]'))
