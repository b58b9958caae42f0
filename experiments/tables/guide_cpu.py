"""GUIDE's comparison on Tiny Shakespeare at CPU scale: one teacher LM, then a
smaller student under four regimes (random init, KD, GUIDE, GUIDE + KD)
with the same token budget, per seed. Its runs live in the workdir itself
(`cells=''`)."""
TABLE = dict(kind='guide', cells='', scale='cpu', seeds=(0, 1, 2), steps=600,
             teacher_steps=1500)
