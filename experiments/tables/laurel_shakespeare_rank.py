"""LAuReL, Figure 3 analogue: LAuReL-RW+LR against the rank r on the
laurel_shakespeare LM (shares its cells). `sweep` plots the metric against
the number after 'r=' in a row's name."""
TABLE = dict(
    kind='laurel', cells='shakespeare', config='configs/shakespeare_lm.py',
    arg='layers=6,width=64,heads=4,mlp=256,seq_len=64,steps=400',
    base={'batch_size': 32, 'eval_every_steps': -1, 'log_every_steps': 100,
          'checkpoint_every_steps': 400, 'model.residual_kw.rank': 8},
    seeds=(0, 1, 2), metric='test/loss', higher=False, sweep='r=',
    rows={'baseline-6': {},
          'LAuReL-RW': {'model.residual': 'laurel_rw'},
          'LAuReL-RW+LR r=1': {'model.residual': 'laurel_rw_lr',
                               'model.residual_kw.rank': 1},
          'LAuReL-RW+LR r=2': {'model.residual': 'laurel_rw_lr',
                               'model.residual_kw.rank': 2},
          'LAuReL-RW+LR r=4': {'model.residual': 'laurel_rw_lr',
                               'model.residual_kw.rank': 4},
          'LAuReL-RW+LR r=8': {'model.residual': 'laurel_rw_lr',
                               'model.residual_kw.rank': 8},
          'LAuReL-RW+LR r=16': {'model.residual': 'laurel_rw_lr',
                                'model.residual_kw.rank': 16},
          'LAuReL-RW+LR r=32': {'model.residual': 'laurel_rw_lr',
                                'model.residual_kw.rank': 32}})
