"""Tables of kind 'active': Robust Active Distillation against active-learning
baselines: student test accuracy against the number of teacher queries, and
the share of queried points the teacher labels wrongly.

    python -m experiments.run --table=active_mnist5k
    python -m experiments.run --table=active_digits     # 3-minute check
    python -m experiments.active_distillation --table=mnist5k   # the same

A table of this kind (experiments/tables/) gives `dataset` (of
configs/active_distill.py), `seeds`, `rows` (names in ROWS; random first),
optionally `extra` (more config arguments), `method` (the student's loss,
default vanilla) and `cells` (another table's runs to share).

For each seed: one teacher on the labeled part (shared by the strategies),
then one active run per strategy (configs/active_distill.py): the same
random initial set, then rounds of `per_round` queries chosen by the
strategy from the student's outputs, up to the budget; each round's student
is trained from scratch on the points queried so far (identical for every
strategy; the round-0 student, on the shared initial set, is trained once
per seed and copied to the other strategies). Runs that finished are
skipped, unfinished ones resume at their last round. Writes
`experiments/results/<table>.{md,json,png}`.
"""
import json
import os
import sys
import time

import numpy as np
from absl import app

from configs import active_distill
from distill import active_distillation
from distill import files
from distill import train
from experiments import plotting
from experiments import records as records_lib
from experiments import harness

# (row name, strategy, extra config arguments); the row name is the cell's
# folder, so rows can be added without rerunning the others.
ROWS = (('random', 'random', ''), ('margin', 'margin', ''),
        ('entropy', 'entropy', ''), ('kcenter', 'kcenter', ''),
        ('rad', 'rad', ''),
        # m = teacher error x this round's b instead of x the pool: the
        # spec's open alternative (papers.md section 3).
        ('rad_m_round', 'rad', ',m_over=round'),
        # the other readings of m (the regime issue): over the points not
        # yet queried, and no adversary at all
        ('rad_m_remaining', 'rad', ',m_over=remaining'),
        ('rad_m0', 'rad', ',m=0'))
PAPER_ROWS = ('random', 'margin', 'entropy', 'kcenter', 'rad', 'rad_m_round')
M_ROWS = ('random', 'rad', 'rad_m_round', 'rad_m_remaining', 'rad_m0')
WORKDIR = 'workdirs/active'


def _config(table, strategy, seed, manual_dir, teacher='', extra=''):
  return active_distill.get_config(
      f'dataset={table["dataset"]},strategy={strategy},seed={seed},'
      f'method={table.get("method", "vanilla")},manual_dir={manual_dir}'
      + (f',teacher={teacher}' if teacher else '') + table.get('extra', '')
      + extra)


def device_config(table):
  """A config of the table's runs (its first seed's random row), from which
  the harness picks the CPU device count before JAX starts: the image
  models' runs take one device (distill/host_devices.py)."""
  return _config(table, 'random', table['seeds'][0], '../shared/datasets')


class _Clock:
  """Seconds spent per cell, summed over resumptions, kept in
  `<root>/seconds.json` so a table finished in several sittings reports
  its whole cost."""

  def __init__(self, root):
    self.path = os.path.join(root, 'seconds.json')
    self.seconds = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.seconds = json.load(f)

  def add(self, cell, seconds):
    self.seconds[cell] = self.seconds.get(cell, 0.0) + seconds
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    files.write_json(self.path, self.seconds)

  def total(self):
    return sum(self.seconds.values())


def _done(state_path):
  if not os.path.exists(state_path):
    return False
  with open(state_path) as f:
    return 'final' in json.load(f)


def compact(state):
  """A rounds state without its selections (lists of pool indices): what a
  report reads, small enough to record."""
  def small(d):
    return {k: v for k, v in d.items()
            if not (isinstance(v, list) and len(v) > 16)}
  out = small({k: v for k, v in state.items() if k not in ('rounds',
                                                           'final')})
  out['rounds'] = [small(r) for r in state['rounds']]
  if 'final' in state:
    out['final'] = small(state['final'])
  return out


def _read_state(path):
  with open(path) as f:
    return json.load(f)


def run_cells(name, table, workdir, manual_dir, report_only=False,
              records=None):
  """{(row, seed): rounds state} of the finished runs (training the rest
  unless `report_only`), and the seconds they took.

  With `records` (experiments/records.py) a seed's rows come from their
  records when made with the same config and the same teacher run as the
  rest of the seed (`teacher_run`); a seed that trains anything needs the
  teacher (trained again from its seed when its run is not here) and the
  first row's run (its round 0 is every row's), and retrains the rows
  recorded from another teacher run. Every finished row is recorded,
  without its selections (`compact`)."""
  root = os.path.join(workdir, table.get('cells', name))
  rows = table_rows(table)
  out, recorded_seconds = {}, 0.0
  clock = _Clock(root)
  for seed in table['seeds']:
    teacher = os.path.join(root, f'seed={seed}', 'teacher')
    t_done = os.path.join(teacher, 'final_metrics.json')
    first = os.path.join(root, f'seed={seed}', rows[0][0])
    configs, paths = {}, {}
    for row, strategy, extra in rows:
      cell = os.path.join(root, f'seed={seed}', row)
      if cell != first:           # round 0 is the same for every strategy
        extra += f',round0_from={first}'
      configs[row] = _config(table, strategy, seed, manual_dir, teacher,
                             extra)
      paths[row] = (cell, os.path.join(cell, 'rounds.json'))
    # A run of another config in a row's folder (another table's, sharing
    # it) is not this row's: neither read nor recorded as it.
    ours = {row: records_lib.holds_run(paths[row][0], configs[row], root)
            for row in configs}
    finished = {row: _read_state(paths[row][1]) for row in configs
                if ours[row] and _done(paths[row][1])}
    usable = {}
    if records is not None:
      recorded = {row: records.get(f'seed={seed}/{row}', configs[row])
                  for row in configs
                  if not os.path.exists(paths[row][0]) or not ours[row]}
      recorded = {k: v for k, v in recorded.items() if v is not None}
      current = records_lib.teacher_run_of(teacher) or (
          records_lib.most_common(r.get('teacher_run')
                                  for r in recorded.values()))
      usable = {k: v for k, v in recorded.items()
                if v.get('teacher_run') == current}
    missing = [row for row in configs
               if row not in finished and row not in usable]
    if report_only or not missing:
      out.update({(row, seed): v for row, v in {**usable,
                                                **finished}.items()})
      recorded_seconds += _seconds(records, seed, usable)
      if report_only:
        _record(records, seed, configs, paths, finished, teacher, clock)
        continue
    if missing:
      if not os.path.exists(t_done):
        print(f'-- teacher seed={seed}', flush=True)
        start = time.time()
        t_cfg = _config(table, 'random', seed, manual_dir).teacher.config
        result = train.train(t_cfg, teacher)
        clock.add(f'seed={seed}/teacher', time.time() - start)
        if result.get('preempted'):
          sys.exit(143)
      current = records_lib.teacher_run_of(teacher)
      usable = {k: v for k, v in usable.items()
                if v.get('teacher_run') == current and k != rows[0][0]}
      for row in configs:
        if row in finished or row in usable:
          continue
        print(f'-- {row} seed={seed}', flush=True)
        start = time.time()
        result = active_distillation.run(configs[row], paths[row][0])
        clock.add(f'seed={seed}/{row}', time.time() - start)
        if result.get('preempted'):
          sys.exit(143)
        finished[row] = _read_state(paths[row][1])
        _record(records, seed, configs, paths, {row: finished[row]},
                teacher, clock)   # at once: a session may end mid-seed
      out.update({(row, seed): v for row, v in {**usable,
                                                **finished}.items()})
      recorded_seconds += _seconds(records, seed, usable)
    _record(records, seed, configs, paths, finished, teacher, clock)
  return out, clock.total() + recorded_seconds


def _record(records, seed, configs, paths, finished, teacher, clock):
  """Records the rows finished in this root, with their teacher run and
  the seconds they took (the teacher's with the first row's)."""
  run = records_lib.teacher_run_of(teacher)
  if records is None or run is None:
    return
  first = next(iter(configs))
  for row, state in finished.items():
    seconds = clock.seconds.get(f'seed={seed}/{row}', 0.0) + (
        clock.seconds.get(f'seed={seed}/teacher', 0.0) if row == first
        else 0.0)
    records.put(f'seed={seed}/{row}', configs[row],
                dict(compact(state), teacher_run=run), paths[row][0],
                seconds=seconds)


def _seconds(records, seed, usable):
  """Seconds the rows taken from records took when they ran (the
  teacher's counted with the first row)."""
  return sum(records.cells[f'seed={seed}/{row}'].get('seconds', 0.0)
             for row in usable)


def table_rows(table):
  """The table's (row, strategy, extra) entries of ROWS, random first."""
  rows = [r for r in ROWS if r[0] in table['rows']]
  assert rows and rows[0][0] == 'random', table['rows']
  return rows


def mean_gains(states, seeds, row):
  """(picks, pool): mean RAD gain over the rounds and seeds, or None."""
  recs = [r for s in seeds for r in states[(row, s)]['rounds']
          if 'chosen_mean_gain' in r]
  if not recs:
    return None
  return (np.mean([r['chosen_mean_gain'] for r in recs]),
          np.mean([r['pool_mean_gain'] for r in recs]))


def curves(states, seeds):
  """{strategy: (queries, acc mean, acc std, wrong-share mean)}."""
  res = {}
  rows = sorted({row for row, _ in states}, key=[r[0] for r in ROWS].index)
  for row in rows:
    per_seed = []
    for s in seeds:
      st = states[(row, s)]
      recs = st['rounds'] + [st['final']]
      per_seed.append([(r['queries'], 100 * r['test_accuracy'],
                        100 * r['teacher_wrong_share']) for r in recs])
    arr = np.array(per_seed)          # seeds x rounds x 3
    res[row] = (arr[0, :, 0].astype(int), arr[:, :, 1].mean(0),
                     arr[:, :, 1].std(0), arr[:, :, 2].mean(0))
  return res


def paired_differences(states, seeds, strategy, baseline='random'):
  """Per-seed test accuracy differences (points) of `strategy` minus
  `baseline` at each query count: an array seeds x rounds."""
  acc = lambda row, s: [100 * r['test_accuracy'] for r in (
      states[(row, s)]['rounds'] + [states[(row, s)]['final']])]
  return np.array([np.subtract(acc(strategy, s), acc(baseline, s))
                   for s in seeds])


def paired_lines(states, seeds, queries):
  """Table rows: each strategy's paired difference to random (mean ± std
  over seeds of the per-seed differences, same seed = same initial set and
  teacher)."""
  strategies = [r for r in sorted({row for row, _ in states},
                                  key=[r[0] for r in ROWS].index)
                if r != 'random']
  if not strategies:
    return []
  lines = ['| **paired difference to random** (mean ± std over seeds of the '
           'per-seed differences) |' + ' |' * (len(queries) + 3)]
  for strategy in strategies:
    d = paired_differences(states, seeds, strategy)
    lines.append(f'| {strategy} − random | ' + ' | '.join(
        f'{m:+.2f} ± {s:.2f}' for m, s in zip(d.mean(0), d.std(0))) +
                 ' | | | |')
  return lines


def markdown(name, states, seeds, seconds):
  c = curves(states, seeds)
  queries = c['random'][0]
  head = '| strategy | ' + ' | '.join(f'{q} queries' for q in queries) + (
      ' | teacher wrong on queried points (%), at the end | m | mean gain '
      'of picks / of the pool |')
  lines = [head, '|---' * (len(queries) + 4) + '|']
  for strategy, (_, mean, std, wrong) in c.items():
    m_row = np.mean([states[(strategy, s)]['m'] for s in seeds])
    gains = mean_gains(states, seeds, strategy)
    lines.append(f'| {strategy} | ' + ' | '.join(
        f'{m:.2f} ± {s:.2f}' for m, s in zip(mean, std)) +
                 f' | {wrong[-1]:.1f} | {m_row:.0f} | ' + (
                     f'{gains[0]:.3f} / {gains[1]:.3f}' if gains else '-')
                 + ' |')
  lines += paired_lines(states, seeds, queries)
  t_acc = np.mean([states[('random', s)]['teacher_val_accuracy']
                   for s in seeds])
  m = np.mean([states[('random', s)]['m'] for s in seeds])
  return (f'### Active distillation, {name}: student test accuracy (%), mean '
          f'± std over seeds {list(seeds)}\n\n' + '\n'.join(lines) +
          f'\n\nTeacher validation accuracy {100 * t_acc:.1f}% (m: the '
          'expected mislabeled points RAD plays against: the error rate over '
          'the pool (rad), a round\'s b (rad_m_round), the points not yet '
          'queried (rad_m_remaining), or 0 (rad_m0); the random row shows '
          f'the pool reading, {m:.0f}). The first column is the shared '
          'random initial set.\nCommand: '
          f'`python -m experiments.run --table={name}`; its '
          f'cells took {seconds / 60:.1f} min in all.\n')


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


def run_table(name, table, workdir, results, manual_dir='../shared/datasets',
              report_only=False, records=True):
  """Runs (or, `report_only`, reads) the table's cells and writes its
  report; rows with a seed unfinished are left out of a report. Finished
  rows are kept in `<results>/cells/<cells>.json` (experiments/records.py)
  unless `records` is False."""
  root = os.path.join(workdir, table.get('cells', name))
  kept = records_lib.Records(table.get('cells', name), root, os.path.join(
      results, 'cells')) if records else None
  states, seconds = run_cells(name, table, workdir, manual_dir, report_only,
                              kept)
  seeds = table['seeds']
  rows = {row for row, _ in states
          if all((row, s) in states for s in seeds)}
  states = {k: v for k, v in states.items() if k[0] in rows}
  if 'random' not in rows:
    print(f'{name}: no finished random row yet, nothing to report')
    return states, seconds
  md = markdown(name, states, seeds, seconds)
  os.makedirs(results, exist_ok=True)
  base = os.path.join(results, name)
  with open(base + '.md', 'w') as f:
    f.write(md)
  with open(base + '.json', 'w') as f:
    json.dump({f'{k[0]}/seed={k[1]}': active_distillation.summary(v)
               for k, v in states.items()}, f, indent=1, sort_keys=True)
  plot(name, states, seeds, base + '.png')
  print(md)
  return states, seconds


def main(argv):
  """The harness on `active_<--table>` (default: active_digits)."""
  del argv
  harness.from_flags('digits', prefix='active_|rad_', workdir=WORKDIR)


if __name__ == '__main__':
  sys.exit(app.run(main))
