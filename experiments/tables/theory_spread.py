"""The opposite case (the papers'-effects issue, item 1): the teacher's
mistakes spread evenly over the input and over its top-k (k = 3: the true
class and two random others), with the same unsure profile everywhere, so
its margin says nothing about where it errs (experiments/theory.py).

    python -m experiments.run --table=theory_spread   # ~8 min of CPU

Prediction (written with the table, before its 5-seed run):
- reweighting has nothing to fix: the fitted w(x) is about constant, and
  weighted equals vanilla within the seeds' spread (both forms);
- the expected target's argmax is the true class whenever the accuracy a
  exceeds (1 - a) / 2, true at every swept value, so every distilled
  student ends above its teacher (the students-beat-teachers regime of the
  SLaM rebuttal);
- SLaM's normalised form on hard labels is the forward model that holds
  here (a distribution over the top-k), so it is consistent: near the clean
  ceiling at every accuracy;
- the unnormalised form (Remark B.1, the paper's experiments) is a
  distribution only for k = 2; with k = 3 and alpha < 1/2 its per-example
  optimum leaves the teacher's top-k, which holds the true class: expected
  to collapse at 0.4 and to recover above 1/2.
"""
TABLE = dict(
    kind='theory', seeds=(0, 1, 2, 3, 4), sweep=(0.4, 0.6, 0.8),
    sweep_label='teacher accuracy',
    title=('Teacher mistakes spread over all inputs and over its top-3, '
           'margin uninformative, a linear student, 10 classes.'),
    problem=dict(errors='spread', k=3),
    rows=('clean', 'teacher', 'vanilla', 'hard', 'weighted',
          'weighted[distill.weight_mode=debiased]',
          'weighted[method_kw.soft=False]', 'slam',
          'slam[method_kw.normalize=True]', 'slam[method_kw.target=hard]',
          'slam[method_kw.normalize=True;method_kw.target=hard]'))
