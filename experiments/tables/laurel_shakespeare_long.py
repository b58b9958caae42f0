"""LAuReL long enough to move (the regime issue, item 6): the Table 5
analogue's 6-layer character LM trained 10x longer (4,000 AdamW steps of 32
windows of 64 characters, about 7 passes over Tiny Shakespeare's 1.1M
characters), the baseline, naive scaling and three LAuReL variants, 3
seeds, with the learned alpha, beta and gamma read back from a checkpoint
every 500 steps (`<table>_trajectory.png`). Cells of its own: the kept
checkpoints make its configs differ from laurel_shakespeare's."""
TABLE = dict(
    kind='laurel', config='configs/shakespeare_lm.py',
    arg='layers=6,width=64,heads=4,mlp=256,seq_len=64,steps=4000',
    base={'batch_size': 32, 'eval_every_steps': -1, 'log_every_steps': 500,
          'model.residual_kw.rank': 8},
    seeds=(0, 1, 2), metric='test/loss', higher=False, trajectory=500,
    rows={'baseline-6': {},
          'baseline-7': {'model.num_layers': 7},
          'LAuReL-RW': {'model.residual': 'laurel_rw'},
          'LAuReL-RW+PA': {'model.residual': 'laurel_rw_pa'},
          'LAuReL-RW+LR+PA': {'model.residual': 'laurel_rw_lr_pa'}})
