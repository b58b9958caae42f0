"""Robust Active Distillation against active-learning baselines: student test
accuracy against the number of teacher queries, and the share of queried
points the teacher labels wrongly.

    python -m experiments.active_distillation --table=mnist5k
    python -m experiments.active_distillation --table=cifar10
    python -m experiments.active_distillation --table=digits   # 3-minute check

For each seed: one teacher on the labeled part (shared by the strategies),
then one active run per strategy (configs/active_distill.py): the same
random initial set, then rounds of `per_round` queries chosen by the
strategy from the student's outputs, up to the budget; each round's student
is trained from scratch on the points queried so far (identical for every
strategy). Runs that finished are skipped, unfinished ones resume at their
last round. Writes `experiments/results/active_<table>.{md,json,png}`.
"""
import json
import os
import sys
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging

from configs import active_distill
from distill import active_distillation
from distill import train
from experiments import plotting

STRATEGIES = ('random', 'margin', 'entropy', 'kcenter', 'rad')
TABLES = {
    'digits': dict(dataset='digits', seeds=(0, 1, 2), extra=''),
    'mnist5k': dict(dataset='mnist5k', seeds=(0, 1, 2), extra=''),
    'cifar10': dict(dataset='cifar10', seeds=(0, 1, 2), extra=''),
}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')

_TABLE = flags.DEFINE_enum('table', 'digits', list(TABLES), 'Which table.')
_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/active',
                               'Where runs live (resumable).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', '../shared/datasets',
                                  'Folder of cifar10_jpeg.tar.gz.')
_RESULTS = flags.DEFINE_string('results', RESULTS, 'Where the table goes.')
_METHOD = flags.DEFINE_string('method', 'vanilla', "The student's loss.")


def _config(table, strategy, seed, teacher=''):
  return active_distill.get_config(
      f'dataset={table["dataset"]},strategy={strategy},seed={seed},'
      f'method={_METHOD.value},manual_dir={_MANUAL_DIR.value}'
      + (f',teacher={teacher}' if teacher else '') + table['extra'])


def run_table(name, workdir):
  table = TABLES[name]
  root = os.path.join(workdir, name)
  out = {}
  for seed in table['seeds']:
    teacher = os.path.join(root, f'seed={seed}', 'teacher')
    if not os.path.exists(os.path.join(teacher, 'final_metrics.json')):
      print(f'-- teacher seed={seed}', flush=True)
      t_cfg = _config(table, 'random', seed).teacher.config
      if train.train(t_cfg, teacher).get('preempted'):
        sys.exit(143)
    for strategy in STRATEGIES:
      cell = os.path.join(root, f'seed={seed}', strategy)
      state_path = os.path.join(cell, 'rounds.json')
      done = os.path.exists(state_path) and 'final' in json.load(
          open(state_path))
      if not done:
        print(f'-- {strategy} seed={seed}', flush=True)
        result = active_distillation.run(_config(table, strategy, seed,
                                                 teacher), cell)
        if result.get('preempted'):
          sys.exit(143)
      with open(state_path) as f:
        state = json.load(f)
      out[(strategy, seed)] = state
  return out


def curves(states, seeds):
  """{strategy: (queries, acc mean, acc std, wrong-share mean)}."""
  res = {}
  for strategy in STRATEGIES:
    per_seed = []
    for s in seeds:
      st = states[(strategy, s)]
      recs = st['rounds'] + [st['final']]
      per_seed.append([(r['queries'], 100 * r['test_accuracy'],
                        100 * r['teacher_wrong_share']) for r in recs])
    arr = np.array(per_seed)          # seeds x rounds x 3
    res[strategy] = (arr[0, :, 0].astype(int), arr[:, :, 1].mean(0),
                     arr[:, :, 1].std(0), arr[:, :, 2].mean(0))
  return res


def markdown(name, states, seeds, seconds):
  c = curves(states, seeds)
  queries = c['random'][0]
  head = '| strategy | ' + ' | '.join(f'{q} queries' for q in queries) + (
      ' | teacher wrong on queried points (%), at the end |')
  lines = [head, '|---' * (len(queries) + 2) + '|']
  for strategy, (_, mean, std, wrong) in c.items():
    lines.append(f'| {strategy} | ' + ' | '.join(
        f'{m:.2f} ± {s:.2f}' for m, s in zip(mean, std)) +
                 f' | {wrong[-1]:.1f} |')
  t_acc = np.mean([states[('random', s)]['teacher_val_accuracy']
                   for s in seeds])
  m = np.mean([states[('random', s)]['m'] for s in seeds])
  return (f'### Active distillation, {name}: student test accuracy (%), mean '
          f'± std over seeds {list(seeds)}\n\n' + '\n'.join(lines) +
          f'\n\nTeacher validation accuracy {100 * t_acc:.1f}% (m = {m:.0f} '
          'expected mislabeled pool points for RAD). The first column is the '
          'shared random initial set.\nCommand: `python -m '
          f'experiments.active_distillation --table={name}`; this run took '
          f'{seconds / 60:.1f} min.\n')


def plot(name, states, seeds, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
  for strategy, (q, mean, std, wrong) in curves(states, seeds).items():
    ax.errorbar(q, mean, yerr=std, marker='o', capsize=3, label=strategy)
    bx.plot(q, wrong, marker='o', label=strategy)
  ax.set_xlabel('teacher queries')
  ax.set_ylabel('student test accuracy (%)')
  bx.set_xlabel('teacher queries')
  bx.set_ylabel('queried points the teacher labels wrongly (%)')
  ax.set_title(f'active distillation, {name}')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  start = time.time()
  states = run_table(_TABLE.value, _WORKDIR.value)
  seeds = TABLES[_TABLE.value]['seeds']
  md = markdown(_TABLE.value, states, seeds, time.time() - start)
  os.makedirs(_RESULTS.value, exist_ok=True)
  base = os.path.join(_RESULTS.value, f'active_{_TABLE.value}')
  with open(base + '.md', 'w') as f:
    f.write(md)
  with open(base + '.json', 'w') as f:
    json.dump({f'{k[0]}/seed={k[1]}': active_distillation.summary(v)
               for k, v in states.items()}, f, indent=1, sort_keys=True)
  plot(_TABLE.value, states, seeds, base + '.png')
  print(md)


if __name__ == '__main__':
  sys.exit(app.run(main))
