"""LAuReL, Table 5 analogue: a 6-layer character LM (width 64, 4 heads, MLP
256, 64-character windows, batch 32, 400 AdamW steps); naive scaling is a
7th layer (+16%); LAuReL with r=8 and k=3 on every block."""
TABLE = dict(
    kind='laurel', cells='shakespeare', config='configs/shakespeare_lm.py',
    arg='layers=6,width=64,heads=4,mlp=256,seq_len=64,steps=400',
    base={'batch_size': 32, 'eval_every_steps': -1, 'log_every_steps': 100,
          'checkpoint_every_steps': 400, 'model.residual_kw.rank': 8},
    seeds=(0, 1, 2), metric='test/loss', higher=False,
    rows={'baseline-6': {},
          'baseline-7': {'model.num_layers': 7},
          'LAuReL-RW': {'model.residual': 'laurel_rw'},
          'LAuReL-LR': {'model.residual': 'laurel_lr'},
          'LAuReL-PA': {'model.residual': 'laurel_pa'},
          'LAuReL-RW+LR': {'model.residual': 'laurel_rw_lr'},
          'LAuReL-RW+PA': {'model.residual': 'laurel_rw_pa'},
          'LAuReL-LR+PA': {'model.residual': 'laurel_lr_pa'},
          'LAuReL-RW+LR+PA': {'model.residual': 'laurel_rw_lr_pa'}})
