"""theory_rad_random with hard labels (the papers'-effects issue, item 2):
each round's student learns the teacher's argmax of the queried points
(`hard`), so a wrong label carries no trace of the truth. In theory_rad and
theory_rad_random the student learns soft labels whose second class is the
truth, and margin sampling beat RAD (pool m) by 0.4-4.8 points although 40-54%
of its queries had a wrong top-1: a soft label with the truth second still
tells the student where the boundary is. RAD's game scores a mislabeled
point as worth nothing; with hard labels it is worse than nothing.

    python -m experiments.run --table=theory_rad_hard   # ~10 min of CPU

Prediction (written with the table, before its run): every row falls
below its theory_rad_random value, margin the most (it buys the most wrong
labels), so RAD's gap to margin narrows at accuracy 0.2; whether RAD (pool
m, nearly uniform over a pool where m is a quarter of it) passes margin is
the open question; rad_m_round stays with margin.
"""
TABLE = dict(
    kind='theory', seeds=(0, 1, 2, 3, 4), sweep=(0.2, 0.6),
    sweep_label='teacher accuracy near the boundary',
    title=('Active distillation as theory_rad_random, each round\'s student '
           'trained on the teacher\'s hard labels.'),
    problem=dict(errors='concentrated', region='boundary', fraction=0.3,
                 confusion='random'),
    active=dict(initial=100, per_round=100, rounds=4, method='hard'),
    baselines=('random', 'margin'),
    rows=('random', 'margin', 'entropy', 'rad', 'rad_m_round'))
