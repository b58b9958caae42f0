"""Robust Active Distillation against active-learning baselines on digits:
student test accuracy against teacher queries (experiments/active_distillation.py)."""
TABLE = dict(
    kind='active', dataset='digits', cells='digits', seeds=(0, 1, 2),
    rows=('random', 'margin', 'entropy', 'kcenter', 'rad', 'rad_m_round'))
