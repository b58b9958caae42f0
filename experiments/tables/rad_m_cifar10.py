"""RAD's m readings on CIFAR-10 in the papers' regime (the regime issue,
item 4): a ResNet-8 teacher trained 30 epochs on 10,000 labels (about 70%
accurate: usefully noisy), the four readings of m against random on a
12,000-image pool, with each row's queried-mistake share and the mean
gain of its picks, as rad_m on mnist5k. Every round's student trains 1,000
steps of 128 (32 epochs over the 4,000 points of the last round, more over
the earlier ones): at the CPU tables' 200 steps a student on 4,000 queried
points was 1.5 points above the one on 1,000 (seed 0, 42.8 -> 44.4%), too
under-trained for the choice of points to show."""
TABLE = dict(
    kind='active', dataset='cifar10', seeds=(0, 1, 2),
    extra=',labeled=10000,teacher_epochs=30,steps=1000',
    rows=('random', 'rad', 'rad_m_round', 'rad_m_remaining', 'rad_m0'))
