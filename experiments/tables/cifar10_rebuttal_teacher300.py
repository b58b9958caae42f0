"""The rebuttal's 5% cell with a teacher trained ten times longer (the
papers'-effects issue, item 3): cifar10_rebuttal_long's labels-only row (a
ResNet-8 on the 2,500 labels for the student's ~15,000 steps: 63.20%) said
its 30-epoch teacher (57.37%) is under-trained, so a student that ends
above it need not have learned from it. Here the teacher trains 300 epochs
over the labels (its validation curve in its workdir's metrics.jsonl), and
the same student as cifar10_rebuttal_long's (ResNet-8, 40 epochs over the
unlabeled rest, the teacher labeling each augmented view) asks again:
does vanilla beat its teacher, and by the rebuttal's margin (theirs:
teacher 51.67, vanilla 54.2)? No labels-only row: it is
cifar10_rebuttal_long's (the same student config, no teacher).

    python -m experiments.run --table=cifar10_rebuttal_teacher300  # ~1 h
"""
TABLE = dict(
    kind='distill', config='configs/cifar10_distill.py',
    labeled=(2500,), seeds=(0,), labels_only=False,
    extra=(',teacher_epochs=300,student_epochs=40,teacher_depth=8,'
           'student=resnet'),
    methods=('vanilla[distill.online=True]',))
