"""RAD's m decided: the four readings (over the pool, the round's budget, the
points not yet queried, none) against random, with each row's
queried-mistake share and the mean gain of its picks. Shares its cells with
the active_mnist5k table."""
TABLE = dict(
    kind='active', dataset='mnist5k', cells='mnist5k', seeds=(0, 1, 2),
    rows=('random', 'rad', 'rad_m_round', 'rad_m_remaining', 'rad_m0'))
