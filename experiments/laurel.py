"""Tables of kind 'laurel': LAuReL's comparisons (Menghani et al., ICML 2025)
at CPU scale.

    python -m experiments.run --table=laurel_cifar10           # Table 1 analogue
    python -m experiments.run --table=laurel_shakespeare       # Table 5 analogue
    python -m experiments.run --table=laurel_shakespeare_rank  # Figure 3 analogue
    python -m experiments.run --table=laurel_quick             # a smoke run
    python -m experiments.laurel --table=quick                 # the same

A table of this kind (experiments/tables/) gives `config` (a config file)
with its `arg`, `base` overrides, `rows` (label -> config overrides),
`seeds`, `metric` and whether `higher` is better; optionally `sweep` (plot
the metric against the number after this text in a row's label),
`timing_rounds` (of the cost pass, default 5), `cells` (the runs'
folder, shared by tables over the same base) and `trajectory` (a step
interval: every cell keeps a checkpoint that often, and the report adds the
learned alpha, beta and gamma over training, read back from them, with a
plot `<table>_trajectory.png`).

Every row trains the same model from scratch with one change (a LAuReL
residual, or one more block/layer: naive scaling) for each seed; quality is
the final test accuracy (CIFAR-10) or test loss in nats per character (Tiny
Shakespeare). Cost columns come from one interleaved timing pass over the
rows on this machine (`experiments/costs.py`): parameters added,
train-step time and XLA's peak-memory estimate, relative to the baseline.
Cells whose result exists are skipped (rerun to resume); cells are keyed by
their config overrides, so tables over the same base share them. Writes
`experiments/results/<table>.{md,json,png}`.
"""
import json
import os
import sys
import time

import numpy as np
from absl import app

from configs import common
from distill import checkpoint
from distill import files
from distill import train
from distill.data import loading
from experiments import costs as cost_lib
from experiments import plotting
from experiments import records as records_lib
from experiments import harness
from models import laurel as laurel_lib

WORKDIR = 'workdirs/laurel'


def base_config(table, manual_dir='../shared/datasets'):
  config = harness.config_getter(table['config'])(
      f'{table["arg"]},manual_dir={manual_dir}')
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


def trajectory(cell):
  """{step: summary of the learned LAuReL weights} of a finished cell, from
  each checkpoint it kept (cached in `<cell>/trajectory.json`): per kind
  (alpha, beta, gamma) the mean, min and max over the model's elements."""
  path = os.path.join(cell, 'trajectory.json')
  if os.path.exists(path):
    return {int(k): v for k, v in files.read_json(path).items()}
  config = checkpoint.read_config(cell)
  rw_mode = dict(config.model.get('residual_kw', {}) or {}).get(
      'rw_mode', 'sigmoid')
  out = {}
  for step in checkpoint.steps_of(cell):
    _, variables, _ = checkpoint.load_trained(cell, step)
    weights = laurel_lib.learned_weights(variables['params'], rw_mode)
    out[step] = {k: dict(mean=float(np.mean(v)), min=float(np.min(v)),
                         max=float(np.max(v)))
                 for k, v in weights.items() if v}
  files.write_json(path, out)
  return out


def run_cells(name, table, workdir, manual_dir, report_only=False,
              records=None):
  """{(row, seed): final metrics or None}, training what is missing; with
  the table's `trajectory`, each finished cell's metrics gain
  'trajectory' (`trajectory(cell)`). A cell in `records`
  (experiments/records.py) made with the same config is not trained; a
  finished one is recorded."""
  base = base_config(table, manual_dir)
  if table.get('trajectory'):
    base.checkpoint_every_steps = int(table['trajectory'])
    base.keep_checkpoints = 10 ** 6
  root = os.path.join(workdir, table.get('cells', name))
  data = None
  cells = {}
  for seed in table['seeds']:
    for row, overrides in table['rows'].items():
      cell = os.path.join(root, cell_name(overrides), f'seed={seed}')
      config = row_config(base, table, overrides, seed)
      key = f'{cell_name(overrides)}/seed={seed}'
      ours = records_lib.holds_run(cell, config, root)
      result = _final(cell) if ours else None   # not another table's run
      if result is None and records is not None and (
          not os.path.exists(cell) or not ours):
        recorded = records.get(key, config)
        if recorded is not None:
          cells[(row, seed)] = _with_int_steps(recorded)
          continue
      if result is None and not report_only:
        print(f'-- {name}: {row} seed={seed}', flush=True)
        if data is None:
          data = loading.load_data(base.data)
        out = train.train(config, cell, data=data)
        if out.get('preempted'):
          print('SIGTERM: stopping; rerun the command to resume.')
          sys.exit(143)
        result = _final(cell)
      if result is not None and table.get('trajectory'):
        result = dict(result, trajectory=trajectory(cell))
      if result is not None and records is not None:
        records.put(key, config, result, cell)
      cells[(row, seed)] = result
  return cells, base, data


def _with_int_steps(result):
  """A recorded result with its trajectory's steps as ints again (JSON
  keys are strings)."""
  if 'trajectory' in result:
    result = dict(result, trajectory={int(k): v for k, v in
                                      result['trajectory'].items()})
  return result


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


def paired_difference(cells, table, row, scale):
  """Per-seed differences of `row` minus the table's first row (its
  baseline), over the seeds where both finished."""
  base = next(iter(table['rows']))
  return [scale * (cells[(row, s)][table['metric']] -
                   cells[(base, s)][table['metric']])
          for s in table['seeds'] if cells.get((row, s)) and
          cells.get((base, s))]


def markdown(name, table, cells, cost, seconds):
  scale = 100.0 if table['higher'] else 1.0
  unit = 'test accuracy (%)' if table['higher'] else 'test loss (nats/char)'
  base = next(iter(table['rows']))
  lines = [f'| row | {unit}, mean ± std | paired difference to {base} '
           '(mean ± std over seeds) | params | params added (%) | '
           'step time (x baseline) | peak memory (x baseline) |',
           '|---|---|---|---|---|---|---|']
  fmt = '{:.2f} ± {:.2f}' if table['higher'] else '{:.4f} ± {:.4f}'
  diff_fmt = '{:+.2f} ± {:.2f}' if table['higher'] else '{:+.4f} ± {:.4f}'
  n_seeds = len(table['seeds'])

  def partial(xs, mean_fmt):   # a partial row: the finished seeds' mean
    return f'({len(xs)}/{n_seeds} seeds)' + (
        ' ' + mean_fmt.format(np.mean(xs)) if xs else '')

  for row in table['rows']:
    xs = _stats(cells, table, row, scale)
    q = (fmt.format(np.mean(xs), np.std(xs)) if len(xs) == n_seeds
         else partial(xs, '{:.2f}' if table['higher'] else '{:.4f}'))
    d = paired_difference(cells, table, row, scale)
    dq = ('' if row == base else diff_fmt.format(np.mean(d), np.std(d))
          if len(d) == n_seeds
          else partial(d, '{:+.2f}' if table['higher'] else '{:+.4f}'))
    c = cost.get(row) if cost else None
    cols = ([f'{c["params"]:,}', f'{c["params_added_pct"]:.2f}',
             f'{c["step_rel"]:.3f}',
             f'{c["mem_rel"]:.3f}' if c['mem_rel'] else 'n/a']
            if c else ['', '', '', ''])
    lines.append(f'| {row} | {q} | {dq} | ' + ' | '.join(cols) + ' |')
  lines += trajectory_lines(table, cells)
  return (f'### LAuReL {name}: {unit} over seeds {list(table["seeds"])}\n\n'
          + '\n'.join(lines) +
          f'\n\nCommand: `python -m experiments.run --table={name}`; '
          + (('a report of the recorded cells, all finished.\n'
               if all(cells.get((r, sd)) for r in table['rows']
                      for sd in table['seeds'])
               else 'a report of the cells finished so far.\n')
             if seconds is None
             else f'this run took {seconds / 60:.1f} min (training the '
             'cells it had to, and the timing pass).\n'))


def _trajectories(table, cells, row):
  """[(steps, {kind: mean over seeds of the elements' mean per step})] of
  `row`'s finished seeds, over the steps they all have."""
  runs = [cells[(row, s)]['trajectory'] for s in table['seeds']
          if (cells.get((row, s)) or {}).get('trajectory')]
  if not runs:
    return None
  steps = sorted(set.intersection(*(set(r) for r in runs)))
  kinds = sorted({k for r in runs for v in r.values() for k in v})
  return steps, {k: [float(np.mean([r[t][k]['mean'] for r in runs
                                    if k in r[t]])) for t in steps]
                 for k in kinds}


def trajectory_lines(table, cells):
  """Rows of the learned weights at the first and last kept steps (mean
  over seeds of the mean over the model's elements), for tables with
  `trajectory`."""
  if not table.get('trajectory'):
    return []
  out = ['', '| row: learned weights (mean over elements and seeds) | '
         'first kept step | last kept step |', '|---|---|---|']
  for row in table['rows']:
    got = _trajectories(table, cells, row)
    if not got or not got[1]:
      continue
    steps, kinds = got
    for kind, values in kinds.items():
      out.append(f'| {row}: {kind} | {values[0]:.4f} (step {steps[0]}) | '
                 f'{values[-1]:.4f} (step {steps[-1]}) |')
  return out


def plot_trajectory(name, table, cells, path):
  """alpha, beta, gamma (mean over elements and seeds) against the step,
  one line per LAuReL row."""
  plt = plotting.pyplot()
  if plt is None or not table.get('trajectory'):
    return
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for i, row in enumerate(table['rows']):   # one color per row, all panels
    got = _trajectories(table, cells, row)
    if not got:
      continue
    steps, kinds = got
    for ax, kind in zip(axes, ('alpha', 'beta', 'gamma')):
      if kind in kinds:
        ax.plot(steps, kinds[kind], marker='.', label=row,
                color=colors[i % len(colors)])
  for ax, kind in zip(axes, ('alpha', 'beta', 'gamma')):
    ax.set_xlabel('step')
    ax.set_title(kind)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  fig.suptitle(f'LAuReL {name}: learned weights during training')
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def _sweep_value(marker):
  """label -> the number after `marker` in it (None without one)."""
  if not marker:
    return None
  return lambda label: (int(label.split(marker)[1].split()[0])
                        if marker in label else None)


def plot(name, table, cells, cost, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  scale = 100.0 if table['higher'] else 1.0
  ylabel = 'test accuracy (%)' if table['higher'] else 'test loss (nats/char)'
  fig, ax = plt.subplots(figsize=(6.5, 4))
  x_of = _sweep_value(table.get('sweep'))
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
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def run_table(name, table, workdir, results, manual_dir='../shared/datasets',
              report_only=False, records=True):
  """Trains (or reads) the table's cells, times its rows, writes its
  report; finished cells are kept in `<results>/cells/<cells>.json`
  (experiments/records.py) unless `records` is False."""
  start = time.time()
  root = os.path.join(workdir, table.get('cells', name))
  kept = records_lib.Records(table.get('cells', name), root, os.path.join(
      results, 'cells')) if records else None
  cells, base, data = run_cells(name, table, workdir, manual_dir, report_only,
                                kept)
  cost_path = os.path.join(results, f'{name}.json')
  cost = None
  if not report_only:
    print(f'-- {name}: timing pass', flush=True)
    cost = costs(table, base, data, table.get('timing_rounds', 5))
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
  with open(os.path.join(results, f'{name}.md'), 'w') as f:
    f.write(md)
  plot(name, table, cells, cost, os.path.join(results, f'{name}.png'))
  plot_trajectory(name, table, cells,
                  os.path.join(results, f'{name}_trajectory.png'))
  print(md)
  return cells, cost


def main(argv):
  """The harness on `laurel_<--table>` (default: laurel_quick)."""
  del argv
  harness.from_flags('quick', prefix='laurel_', workdir=WORKDIR)


if __name__ == '__main__':
  sys.exit(app.run(main))
