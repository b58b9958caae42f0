"""theory_rad with harmful mistakes (the papers'-effects issue, item 2): in
theory_rad the teacher's wrong top-1 near the boundary is the true
runner-up, with the truth second, so its soft label still locates the
boundary and a wrong label costs little; margin sampling beat RAD there.
Here the wrong top-1 is a random other class (the truth still second), so
a wrong label pulls the student away from the boundary it is learning.

    python -m experiments.run --table=theory_rad_random   # ~10 min of CPU

Prediction (written with the table, before its run): margin's share of
wrong queries stays about twice random's, and the wrong labels now cost
accuracy, so RAD (m over the pool), which buys fewer of them, closes the
gap to margin at accuracy 0.2 or passes it; at 0.6 margin stays ahead.
"""
TABLE = dict(
    kind='theory', seeds=(0, 1, 2, 3, 4), sweep=(0.2, 0.6),
    sweep_label='teacher accuracy near the boundary',
    title=('Active distillation as theory_rad, but a wrong teacher label is a '
           'random other class (truth second), not the runner-up.'),
    problem=dict(errors='concentrated', region='boundary', fraction=0.3,
                 confusion='random'),
    active=dict(initial=100, per_round=100, rounds=4),
    baselines=('random', 'margin'),
    rows=('random', 'margin', 'entropy', 'rad', 'rad_m_round'))
