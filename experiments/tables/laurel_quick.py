"""A smoke run of the LAuReL machinery (tiny LM, 30 steps, one seed)."""
TABLE = dict(
    kind='laurel', cells='quick', config='configs/shakespeare_lm.py',
    arg='layers=2,width=32,heads=2,mlp=64,seq_len=32,steps=30',
    base={'batch_size': 16, 'eval_every_steps': -1, 'log_every_steps': 10,
          'checkpoint_every_steps': 30, 'model.residual_kw.rank': 4},
    seeds=(0,), metric='test/loss', higher=False,
    rows={'baseline-2': {}, 'baseline-3': {'model.num_layers': 3},
          'LAuReL-RW+LR': {'model.residual': 'laurel_rw_lr'},
          'LAuReL-RW+LR+PA': {'model.residual': 'laurel_rw_lr_pa'}})
