"""Reproduces LAuReL's comparisons (Menghani et al., ICML 2025) at CPU scale.

    python -m experiments.laurel --table=cifar10           # Table 1 analogue
    python -m experiments.laurel --table=shakespeare       # Table 5 analogue
    python -m experiments.laurel --table=shakespeare_rank  # Figure 3 analogue
    python -m experiments.laurel --table=quick             # a 2-minute smoke run

Every row trains the same model from scratch with one change (a LAuReL
residual, or one more block/layer: naive scaling) for each seed; quality is
the final test accuracy (CIFAR-10) or test loss in nats per character (Tiny
Shakespeare). Cost columns come from one interleaved timing pass over the
rows on this machine (`experiments/costs.py`): parameters added,
train-step time and XLA's peak-memory estimate, relative to the baseline.
Cells whose result exists are skipped (rerun to resume); cells are keyed by
their config overrides, so tables over the same base share them. Writes
`experiments/results/laurel_<table>.{md,json,png}`.
"""
import json
import os
import sys
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging

from configs import cifar10_teacher, common, shakespeare_lm
from distill import train
from distill.data import loading
from experiments import costs as cost_lib
from experiments import plotting

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def _laurel(kind, rank=None):
  out = {'model.residual': kind}
  if rank is not None:
    out['model.residual_kw.rank'] = rank
  return out


_LM_VARIANTS = ('laurel_rw', 'laurel_lr', 'laurel_pa', 'laurel_rw_lr',
                'laurel_rw_pa', 'laurel_lr_pa', 'laurel_rw_lr_pa')

TABLES = {
    # Table 1 analogue. ResNet-8 at half width (20k parameters) on 49,500
    # CIFAR-10 train images, 600 steps of 128 (1.6 epochs), r=2 on channel
    # widths 8/16/32. Naive scaling adds one block to the first stage
    # (+5.9% parameters, the nearest to the paper's +4.37%).
    'cifar10': dict(
        config=cifar10_teacher, arg='labeled=-1,validation=500,width=0.5',
        base={'data.unlabeled': 0, 'total_epochs': -1.0, 'total_steps': 600,
              'eval_every_epochs': -1.0, 'log_every_steps': 100,
              'checkpoint_every_steps': 300,
              'model.residual_kw.rank': 2},
        seeds=(0, 1, 2), metric='test/accuracy', higher=True,
        rows={'baseline': {},
              'baseline + 1 block': {'model.extra_blocks': (1, 0, 0)},
              'LAuReL-RW': _laurel('laurel_rw'),
              'LAuReL-RW+LR (r=2)': _laurel('laurel_rw_lr'),
              'LAuReL-RW+LR+PA (r=2, k=3)': _laurel('laurel_rw_lr_pa')}),
    # Table 5 analogue: a 6-layer character LM (width 64, 4 heads, MLP 256,
    # 64-character windows, batch 32, 400 AdamW steps); naive scaling is a
    # 7th layer (+16%); LAuReL with r=8 and k=3 on every block.
    'shakespeare': dict(
        config=shakespeare_lm,
        arg='layers=6,width=64,heads=4,mlp=256,seq_len=64,steps=400',
        base={'batch_size': 32, 'eval_every_steps': -1,
              'log_every_steps': 100, 'checkpoint_every_steps': 400,
              'model.residual_kw.rank': 8},
        seeds=(0, 1, 2), metric='test/loss', higher=False,
        rows=dict([('baseline-6', {}),
                   ('baseline-7', {'model.num_layers': 7})] +
                  [('LAuReL-' + v[7:].upper().replace('_', '+'), _laurel(v))
                   for v in _LM_VARIANTS])),
    # Figure 3 analogue: LAuReL-RW+LR against the rank r (same LM).
    'shakespeare_rank': dict(
        config=shakespeare_lm, share='shakespeare',
        arg='layers=6,width=64,heads=4,mlp=256,seq_len=64,steps=400',
        base={'batch_size': 32, 'eval_every_steps': -1,
              'log_every_steps': 100, 'checkpoint_every_steps': 400,
              'model.residual_kw.rank': 8},
        seeds=(0, 1, 2), metric='test/loss', higher=False,
        rows=dict([('baseline-6', {}), ('LAuReL-RW', _laurel('laurel_rw'))] +
                  [(f'LAuReL-RW+LR r={r}', _laurel('laurel_rw_lr', r))
                   for r in (1, 2, 4, 8, 16, 32)]),
        x_of_row=lambda label: int(label.split('r=')[1]) if 'r=' in label
        else None),
    # A smoke run of the machinery (tiny LM, 30 steps, one seed).
    'quick': dict(
        config=shakespeare_lm,
        arg='layers=2,width=32,heads=2,mlp=64,seq_len=32,steps=30',
        base={'batch_size': 16, 'eval_every_steps': -1,
              'log_every_steps': 10, 'checkpoint_every_steps': 30,
              'model.residual_kw.rank': 4},
        seeds=(0,), metric='test/loss', higher=False,
        rows={'baseline-2': {}, 'baseline-3': {'model.num_layers': 3},
              'LAuReL-RW+LR': _laurel('laurel_rw_lr'),
              'LAuReL-RW+LR+PA': _laurel('laurel_rw_lr_pa')}),
}

_TABLE = flags.DEFINE_enum('table', 'quick', list(TABLES), 'Which table.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/laurel',
                               'Where runs live (resumable).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/datasets',
                                  'Folder of cifar10_jpeg / tiny_shakespeare.')
_RESULTS = flags.DEFINE_string('results', RESULTS,
                               'Where the table, JSON and plot go.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False,
                                 'Only tabulate finished cells; train nothing.')
_TIMING_ROUNDS = flags.DEFINE_integer('timing_rounds', 5,
                                      'Interleaved rounds of the cost pass.')


def base_config(table, manual_dir='../shared/datasets'):
  config = table['config'].get_config(f'{table["arg"]},manual_dir='
                                      f'{manual_dir}')
  config.tensorboard = False
  return common.override(config, table['base'])


def row_config(base, table, overrides, seed=0):
  del table
  config = common.override(base.copy_and_resolve_references(), overrides)
  config.seed = seed
  config.data.carve_seed = 0      # the same data split for every seed
  return config


def cell_name(overrides):
  """A directory name from a row's overrides ('base' for none)."""
  if not overrides:
    return 'base'
  return '_'.join(f'{k.split(".")[-1]}-{v}' for k, v in sorted(
      overrides.items())).replace(' ', '').replace('(', '').replace(
          ')', '').replace(',', '-')


def _final(workdir):
  path = os.path.join(workdir, 'final_metrics.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def run_cells(name, table, workdir, manual_dir, report_only=False):
  """{(row, seed): final metrics or None}, training what is missing."""
  base = base_config(table, manual_dir)
  root = os.path.join(workdir, table.get('share', name))
  data = None
  cells = {}
  for seed in table['seeds']:
    for row, overrides in table['rows'].items():
      cell = os.path.join(root, cell_name(overrides), f'seed={seed}')
      result = _final(cell)
      if result is None and not report_only:
        print(f'-- {name}: {row} seed={seed}', flush=True)
        if data is None:
          data = loading.load_data(base.data)
        out = train.train(row_config(base, table, overrides, seed), cell,
                          data=data)
        if out.get('preempted'):
          print('SIGTERM: stopping; rerun the command to resume.')
          sys.exit(143)
        result = _final(cell)
      cells[(row, seed)] = result
  return cells, base, data


def costs(table, base, data, rounds):
  configs = {row: row_config(base, table, o)
             for row, o in table['rows'].items()}
  first = next(iter(configs))
  if data is None:
    data = loading.load_data(base.data)
  return cost_lib.relative(cost_lib.measure(configs, data, rounds=rounds),
                           first)


def _stats(cells, table, row, scale):
  xs = [scale * cells[(row, s)][table['metric']] for s in table['seeds']
        if cells.get((row, s))]
  return xs


def markdown(name, table, cells, cost, seconds):
  scale = 100.0 if table['higher'] else 1.0
  unit = 'test accuracy (%)' if table['higher'] else 'test loss (nats/char)'
  lines = [f'| row | {unit}, mean ± std | params | params added (%) | '
           'step time (x baseline) | peak memory (x baseline) |',
           '|---|---|---|---|---|---|']
  for row in table['rows']:
    xs = _stats(cells, table, row, scale)
    fmt = '{:.2f} ± {:.2f}' if table['higher'] else '{:.4f} ± {:.4f}'
    q = (fmt.format(np.mean(xs), np.std(xs)) if len(xs) == len(
        table['seeds']) else f'({len(xs)}/{len(table["seeds"])} seeds)')
    c = cost.get(row) if cost else None
    cols = ([f'{c["params"]:,}', f'{c["params_added_pct"]:.2f}',
             f'{c["step_rel"]:.3f}',
             f'{c["mem_rel"]:.3f}' if c['mem_rel'] else 'n/a']
            if c else ['', '', '', ''])
    lines.append(f'| {row} | {q} | ' + ' | '.join(cols) + ' |')
  return (f'### LAuReL {name}: {unit} over seeds {list(table["seeds"])}\n\n'
          + '\n'.join(lines) +
          f'\n\nCommand: `python -m experiments.laurel --table={name}`; '
          + ('a report of the cells finished so far.\n' if seconds is None
             else f'this run took {seconds / 60:.1f} min (training the '
             'cells it had to, and the timing pass).\n'))


def plot(name, table, cells, cost, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  scale = 100.0 if table['higher'] else 1.0
  ylabel = 'test accuracy (%)' if table['higher'] else 'test loss (nats/char)'
  fig, ax = plt.subplots(figsize=(6.5, 4))
  x_of = table.get('x_of_row')
  if x_of:          # a sweep: metric against the swept value
    pts = sorted((x_of(r), r) for r in table['rows'] if x_of(r) is not None)
    ys = [_stats(cells, table, r, scale) for _, r in pts]
    ax.errorbar([p[0] for p in pts], [np.mean(y) if y else np.nan
                                      for y in ys],
                yerr=[np.std(y) if y else 0 for y in ys], marker='o',
                capsize=3, label='LAuReL-RW+LR')
    for r in table['rows']:
      if x_of(r) is None and _stats(cells, table, r, scale):
        ax.axhline(np.mean(_stats(cells, table, r, scale)), linestyle='--',
                   color='gray' if 'baseline' in r else 'tab:orange',
                   label=r)
    ax.set_xscale('log', base=2)
    ax.set_xlabel('rank r')
  else:             # quality against parameters added
    for r in table['rows']:
      xs = _stats(cells, table, r, scale)
      if not xs or not cost:
        continue
      ax.errorbar(cost[r]['params_added_pct'], np.mean(xs), yerr=np.std(xs),
                  marker='s' if 'baseline' in r else 'o', capsize=3,
                  linestyle='', label=r)
    ax.set_xlabel('parameters added over the baseline (%)')
  ax.set_ylabel(ylabel)
  ax.set_title(f'LAuReL, {name}')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def run_table(name, workdir, results, manual_dir, report_only=False,
              rounds=3):
  table = TABLES[name]
  start = time.time()
  cells, base, data = run_cells(name, table, workdir, manual_dir, report_only)
  cost_path = os.path.join(results, f'laurel_{name}.json')
  cost = None
  if not report_only:
    print(f'-- {name}: timing pass', flush=True)
    cost = costs(table, base, data, rounds)
  elif os.path.exists(cost_path):
    with open(cost_path) as f:
      cost = json.load(f).get('cost')
  seconds = None if report_only else time.time() - start
  md = markdown(name, table, cells, cost, seconds)
  os.makedirs(results, exist_ok=True)
  out = {'cells': {f'{r}/seed={s}': v for (r, s), v in cells.items()},
         'cost': cost, 'metric': table['metric'], 'seconds': seconds}
  tmp = cost_path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(out, f, indent=1, sort_keys=True)
  os.replace(tmp, cost_path)
  with open(os.path.join(results, f'laurel_{name}.md'), 'w') as f:
    f.write(md)
  plot(name, table, cells, cost, os.path.join(results, f'laurel_{name}.png'))
  print(md)
  return cells, cost


def main(argv):
  del argv
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  host_devices.configure()          # CPU: data parallel over the cores
  logging.set_verbosity(logging.WARNING)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  run_table(_TABLE.value, _WORKDIR.value, _RESULTS.value, _MANUAL_DIR.value,
            _REPORT_ONLY.value, _TIMING_ROUNDS.value)


if __name__ == '__main__':
  sys.exit(app.run(main))
