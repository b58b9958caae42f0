"""RAD where its claim must show (the papers'-effects issue, item 2): the
teacher's mistakes are concentrated on the 30% of inputs nearest the true
decision boundary, exactly where a student is least sure, so margin and
entropy sampling buy wrong labels; RAD's game should avoid spending the
whole budget there (experiments/theory.py, the active loop). 100 random
queries, then 4 rounds of 100, each round's student trained from scratch
by vanilla distillation on the queried points.

    python -m experiments.run --table=theory_rad   # ~15 min of CPU

Prediction (written with the table, before its 5-seed run):
- margin, entropy and rad_m0 (margin's top-b) query mostly near the
  boundary: a share of teacher-wrong queries well above random's (about
  0.3 x (1 - accuracy));
- RAD with m > 0 spreads its budget past the most uncertain points: a
  lower wrong share than margin, and, the paper's claim, accuracy at or
  above margin's when the teacher is noisy (accuracy 0.2 near the
  boundary), the gap closing at 0.6.
"""
TABLE = dict(
    kind='theory', seeds=(0, 1, 2, 3, 4), sweep=(0.2, 0.6),
    sweep_label='teacher accuracy near the boundary',
    title=('Active distillation: teacher mistakes on the 30% of inputs '
           'nearest the true boundary (elsewhere right 98% of the time), '
           'a linear student, 100 + 4 x 100 queries from a pool of 10,000.'),
    problem=dict(errors='concentrated', region='boundary', fraction=0.3),
    active=dict(initial=100, per_round=100, rounds=4),
    baselines=('random', 'margin'),
    rows=('random', 'margin', 'entropy', 'rad', 'rad_m_round',
          'rad_m_remaining', 'rad_m0'))
