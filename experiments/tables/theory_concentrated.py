"""Weighted distillation and SLaM where their theory says they must help
(the papers'-effects issue, item 1; experiments/theory.py has the setting):
a linear student that can represent the truth, a teacher whose mistakes are
concentrated in a halfspace R (30% of the inputs) where its top-1 is right
with the swept probability and is otherwise the true runner-up class, with
the true class second (k = 2). Inside R it is unsure, outside confident.

    python -m experiments.run --table=theory_concentrated   # ~10 min of CPU

Prediction, from each method's theory (written with the table, before its
5-seed run; a one-seed trial at 0.2 and 0.4 is what added the hard-label
SLaM rows):
- clean labels reach ~100% (the problem is realizable);
- vanilla and hard distillation are not consistent: their population optimum
  is the teacher's noisy posterior, projected on linear models, so they lose
  accuracy as the teacher's accuracy in R falls (the structure learned
  outside R limits the loss; students stay above the teacher);
- weighted (w(x) = P[teacher right | margin], both forms) down-weights R by
  about its accuracy there: at or above vanilla, more so as it falls, equal
  at 0.8 and above;
- SLaM in its theory's form (the teacher's label as a hard sample of the
  mixing model, k = 2 where the normalised and unnormalised forms agree,
  alpha calibrated by the isotonic fit) is consistent for every accuracy
  but 1/2: near the clean ceiling at 0.2 and 0.4, where vanilla is not;
- SLaM on the teacher's soft labels (the paper's experimental form) has no
  such guarantee: the teacher's 10-25% of mass outside its top-2 can only
  be explained by alpha f_i, which pulls the student to classes outside the
  top-k; expected below the hard form.
tests/test_theory.py pins the guaranteed order at 0.2: hard-label SLaM and
weighted above vanilla, clean above all.
"""
TABLE = dict(
    kind='theory', seeds=(0, 1, 2, 3, 4), sweep=(0.2, 0.4, 0.6, 0.8),
    sweep_label='teacher accuracy in R',
    title=('Teacher mistakes concentrated in a halfspace R (30% of inputs; '
           'outside R it is right 98% of the time), a linear student, '
           '10 classes, 16 dimensions, 10,000 unlabeled inputs, 500 '
           'validation.'),
    problem=dict(errors='concentrated', region='halfspace', fraction=0.3),
    rows=('clean', 'teacher', 'vanilla', 'hard', 'weighted',
          'weighted[distill.weight_mode=debiased]',
          'weighted[method_kw.soft=False]', 'slam',
          'slam[method_kw.normalize=True]', 'slam[method_kw.target=hard]',
          'slam[method_kw.normalize=True;method_kw.target=hard]'))
