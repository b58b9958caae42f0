"""GUIDE + KD on Tiny Shakespeare at CPU scale under three LM distillation
objectives (forward KL, reverse KL, JSD(0.5)), each blended with the
next-token cross-entropy (alpha 0.5), against the random-init and GUIDE
baselines; 3 seeds, one teacher (`experiments/guide.py`); each row's test
loss paired with GUIDE alone's, seed by seed.

    python -m experiments.run --table=guide_objectives
"""
TABLE = dict(
    kind='guide', cells='', scale='cpu', seeds=(0, 1, 2), steps=600,
    teacher_steps=1500, paired_to='guide',
    regimes={
        'random': dict(init='', method='supervised'),
        'guide': dict(init='guide', method='supervised'),
        'guide+fkl': dict(init='guide', method='forward_kl', alpha=0.5),
        'guide+rkl': dict(init='guide', method='reverse_kl', alpha=0.5),
        'guide+jsd': dict(init='guide', method='jsd', alpha=0.5, beta=0.5),
    })
