"""Tables of kind 'distill': the Weighted-Distillation / SLaM comparison.

    python -m experiments.run --table=digits     # experiments/tables/digits.py
    python -m experiments.unlabeled_distillation --table=quickstart  # the same

A table of this kind (experiments/tables/) gives `config` (a distillation
config file taking method, labeled and seed arguments), `labeled` sizes,
`seeds`, `methods` (registered names, optionally with config overrides:
'slam[method_kw.normalize=True]'), optionally `extra` (more config
arguments), `cells` (another table's runs to share: their cells must have
the same configs, or each table's runs replace the other's records) and
`labels_only` (False: no labels-only row).

For every labeled size and seed: one teacher (trained on the labeled part,
shared by all methods), one cached teacher-labeling pass, a student per
method, and a "labels only" student (the student architecture trained on the
labeled part alone). A finished run in a cell's workdir is read only when
the workdir holds that cell's config (experiments/records.py:
workdir_identity). Cells whose result exists are skipped, so an interrupted
run continues where it stopped. Writes `experiments/results/<table>.md`
(mean ± std test accuracy over seeds), `.json` (every cell) and `.png`
(accuracy against labeled size).
"""
import ast
import json
import functools
import os
import sys
import time

import numpy as np
from absl import app

from configs import common
from distill import distillation
from distill import train
from distill.data import loading
from experiments import plotting
from experiments import records as records_lib
from experiments import harness

WORKDIR = 'workdirs/experiments'


def _json(path):
  with open(path) as f:
    return json.load(f)


def parse_method(spec):
  """'slam[method_kw.normalize=True;distill.k=per_example]' -> name and
  config overrides (values as Python literals, else strings)."""
  name, _, rest = spec.partition('[')
  overrides = {}
  for item in filter(None, rest.rstrip(']').split(';')):
    key, _, value = item.partition('=')
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return name, overrides


def _finished(result):
  """Stops the whole table on SIGTERM (the run saved; rerun to resume)."""
  if result.get('preempted'):
    print('SIGTERM: stopping the table; rerun the command to resume.')
    sys.exit(143)
  return result


def _cell(root, labeled, seed):
  return os.path.join(root, f'labeled={labeled}', f'seed={seed}')


def _teacher_config(get_config, labeled, seed, extra):
  return get_config(f'method=vanilla,labeled={labeled},seed={seed}'
                    f'{extra}').teacher.config


def _labels_only_config(get_config, labeled, seed, extra):
  """The labels-only student's config and data: the student trained on the
  labeled part alone, for the same number of steps as a distilled student
  (more epochs of the smaller labeled part), so it is not under-trained."""
  config = get_config(f'method=vanilla,labeled={labeled},seed={seed}{extra}')
  student = distillation.student_config(config)
  student.method = 'supervised'
  student.data.train_on = 'labeled'
  data = loading.load_data(student.data)
  n_labeled = len(data.parts['labeled'])
  if config.total_epochs > 0:
    ratio = len(data.parts['unlabeled']) / n_labeled
    student.total_epochs = config.total_epochs * max(1.0, ratio)
  student.batch_size = min(student.batch_size, n_labeled)
  return student, data


def _method_config(get_config, root, labeled, seed, method, extra):
  name, overrides = parse_method(method)
  teacher_dir = os.path.join(_cell(root, labeled, seed), 'teacher')
  config = get_config(f'method={name},labeled={labeled},seed={seed},'
                      f'teacher={teacher_dir}{extra}')
  common.override(config, overrides)
  return config


def _cell_config(get_config, root, labeled, seed, method, extra):
  """(config, data or None) of a cell: what its workdir's run computes."""
  if method == 'labels_only':
    return _labels_only_config(get_config, labeled, seed, extra)
  return _method_config(get_config, root, labeled, seed, method, extra), None


def _read_done(cell, method, teacher_accuracy):
  """A finished cell's numbers from its workdir, or None."""
  if method == 'labels_only':
    done = os.path.join(cell, 'labels_only', 'final_metrics.json')
    if not os.path.exists(done):
      return None
    result = _json(done)
    return {'teacher': teacher_accuracy, 'student': result['test/accuracy'],
            'validation': result.get('validation/accuracy')}
  done = os.path.join(cell, _cell_dir(method), 'summary.json')
  if not os.path.exists(done):
    return None
  summary = _json(done)
  out = {'teacher': teacher_accuracy,
         'student': summary['student/test/accuracy'],
         'validation': summary.get('student/validation/accuracy'),
         'agreement': summary.get('student/test_agreement')}  # not online
  out.update({k: v for k, v in summary.items() if k.startswith('fit/')})
  return out


def _train_seconds(workdir):
  """Seconds a finished run in `workdir` trained (0 if it does not say)."""
  for name, key in (('summary.json', 'student/train_seconds'),
                    ('final_metrics.json', 'train_seconds')):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      return float(_json(path).get(key, 0.0))
  return 0.0


def _workdir_of(cell, method):
  return os.path.join(cell, 'labels_only' if method == 'labels_only'
                      else _cell_dir(method))


def _cell_dir(method):
  return (method.replace('[', '_').replace(']', '').replace(';', '_')
          .replace('=', '-'))


def _teacher_done(cell):
  """The teacher run's final metrics in `cell`, or None."""
  done = os.path.join(cell, 'teacher', 'final_metrics.json')
  return _json(done) if os.path.exists(done) else None


def run_group(get_config, root, labeled, seed, methods, extra='',
              records=None, report_only=False):
  """The cells of one labeled size and seed: {method: numbers or None}.

  Every student of the group is distilled from one teacher run. A cell
  comes from its workdir if it finished there, else from `records`
  (experiments/records.py) when its record was made with the same config
  and, for a student, from the same teacher run (`teacher_run`) as the
  rest of the group; the others are trained (nothing, `report_only`).
  A group that trains a student needs the teacher: trained here from its
  seed when its run is not in `root`, and then every recorded student of
  another teacher run is trained again. Every cell read is recorded.
  """
  cell = _cell(root, labeled, seed)
  configs = {m: _cell_config(get_config, root, labeled, seed, m, extra)
             for m in methods}
  t_config = _teacher_config(get_config, labeled, seed, extra)
  t_key = f'{labeled}/{seed}/teacher'

  def ours(workdir, config):
    """Whether `workdir` holds `config`'s run, or none yet: a run of
    another config there (another table's, sharing the folder) is not this
    cell's, and is neither read nor recorded as it."""
    return records_lib.holds_run(workdir, config, root)

  def from_workdir(method, teacher):
    if not ours(_workdir_of(cell, method), configs[method][0]):
      return None
    got = _read_done(cell, method, teacher and teacher['test/accuracy'])
    if got is not None and method != 'labels_only':
      got['teacher_run'] = records_lib.teacher_run(teacher)
    return got

  def fresh(method):
    workdir = _workdir_of(cell, method)
    return os.path.exists(workdir) and ours(workdir, configs[method][0])

  def record(method, got):
    """A cell's record; the labels-only row's without the teacher it does
    not read (the group's teacher is added when reported)."""
    if records is not None:
      workdir = _workdir_of(cell, method)
      if method == 'labels_only':
        got = {k: v for k, v in got.items() if k != 'teacher'}
      records.put(f'{labeled}/{seed}/{method}', configs[method][0], got,
                  workdir, seconds=_train_seconds(workdir))

  def record_teacher():
    if records is not None and teacher is not None:
      t_dir = os.path.join(cell, 'teacher')
      records.put(t_key, t_config, {
          'teacher': teacher['test/accuracy'],
          'teacher_run': records_lib.teacher_run(teacher)}, t_dir,
                  seconds=_train_seconds(t_dir))

  teacher = (_teacher_done(cell) if ours(os.path.join(cell, 'teacher'),
                                          t_config) else None)
  record_teacher()
  out, recorded = {}, {}
  for m in methods:
    got = from_workdir(m, teacher) if teacher else None
    if got is not None:
      out[m] = got
    elif records is not None and not fresh(m):
      rec = records.get(f'{labeled}/{seed}/{m}', configs[m][0])
      if rec is not None:
        recorded[m] = rec
  runs = {m: r.get('teacher_run') for m, r in recorded.items()
          if m != 'labels_only'}
  current = (records_lib.teacher_run(teacher) if teacher else
             records_lib.most_common(runs.values()))
  usable = {m: r for m, r in recorded.items()
            if m == 'labels_only' or runs[m] == current}
  needed = [m for m in methods if m not in out and m not in usable]
  if needed and not report_only:
    if teacher is None and needed != ['labels_only']:
      print(f'-- teacher labeled={labeled} seed={seed}', flush=True)
      _finished(train.train(t_config, os.path.join(cell, 'teacher')))
      teacher = _teacher_done(cell)
      current = records_lib.teacher_run(teacher)
      record_teacher()
      usable = {m: r for m, r in recorded.items()
                if m == 'labels_only' or runs[m] == current}
    for m in methods:
      if m in recorded and m not in usable:
        print(f'-- {labeled}/{seed}/{m}: recorded from another run of the '
              'teacher; training it again', flush=True)
    for m in methods:
      if m in out or m in usable:
        continue
      print(f'-- {m} labeled={labeled} seed={seed}', flush=True)
      config, data = configs[m]
      workdir = _workdir_of(cell, m)
      if m == 'labels_only':
        _finished(train.train(config, workdir, data=data))
      else:
        _finished(distillation.run(config, workdir))
      out[m] = from_workdir(m, teacher)
      record(m, out[m])         # at once: a session may end mid-group
  out.update(usable)
  if teacher is not None:
    t_accuracy = teacher['test/accuracy']
  else:       # the recorded students' teacher
    t_accuracy = next((r['teacher'] for m, r in usable.items()
                       if m != 'labels_only'), None)
    if t_accuracy is None and records is not None:
      t_accuracy = (records.get(t_key, t_config) or {}).get('teacher')
  for m, got in out.items():
    if fresh(m):
      record(m, got)
  if 'labels_only' in out:
    out['labels_only'] = dict(out['labels_only'], teacher=t_accuracy)
  return {m: out.get(m) for m in methods}


def paired_differences(cells, labeled, seeds, row, baseline):
  """Per-seed student accuracy differences (points) of `row` minus
  `baseline` at `labeled`, over the seeds where both finished."""
  out = []
  for s in seeds:
    a, b = cells.get(f'{labeled}/{s}/{row}'), cells.get(
        f'{labeled}/{s}/{baseline}')
    if a and b:
      out.append(100 * (a['student'] - b['student']))
  return out


SLAM_REGIME = (('fit/alpha_below_half_fraction', 'share of alpha < 1/2'),
               ('fit/teacher_mass_outside_topk_mean',
                "teacher's mass outside its top-k"),
               ('fit/k_mean', 'mean k'))


def slam_regime_lines(spec, cells):
  """Rows of SLaM's fitted regime per labeled size (mean over seeds), for
  the SLaM rows whose cells recorded it (methods.slam_regime_stats)."""
  out = []
  for row in (m for m in spec['methods'] if m.startswith('slam')):
    for key, label in SLAM_REGIME:
      vals = []
      for n in spec['labeled']:
        xs = [cells[f'{n}/{s}/{row}'][key] for s in spec['seeds']
              if (cells.get(f'{n}/{s}/{row}') or {}).get(key) is not None]
        vals.append(f'{np.mean(xs):.3f}' if xs else '-')
      if any(v != '-' for v in vals):
        out.append(f'| {row}: {label} | ' + ' | '.join(vals) + ' |')
    vals = []
    for n in spec['labeled']:                 # the k histogram
      found = [cells[f'{n}/{s}/{row}'] for s in spec['seeds']
               if cells.get(f'{n}/{s}/{row}')]
      ks = sorted({int(k.rsplit('_', 1)[1]) for c in found for k in c
                   if k.startswith('fit/k_fraction_')})
      share = lambda k: np.mean([c.get(f'fit/k_fraction_{k}', 0.0)
                                 for c in found])
      vals.append(', '.join(f'{k}: {share(k):.2f}' for k in ks) or '-')
    if any(v != '-' for v in vals):
      out.append(f'| {row}: share of examples per k | ' + ' | '.join(vals)
                 + ' |')
  return out


def validation_lines(spec, cells):
  """Each row's student accuracy on the validation split (what a default is
  chosen on: the test split only reports), mean ± std over seeds."""
  out = ['| **validation accuracy** (the split defaults are chosen on) |'
         + ' |' * len(spec['labeled'])]
  for row in _students(spec):
    vals = []
    for n in spec['labeled']:
      xs = [100 * cells[f'{n}/{s}/{row}']['validation'] for s in spec['seeds']
            if (cells.get(f'{n}/{s}/{row}') or {}).get('validation')
            is not None]
      vals.append(f'{np.mean(xs):.2f} ± {np.std(xs):.2f}'
                  if len(xs) == len(spec['seeds']) else
                  f'({len(xs)}/{len(spec["seeds"])} seeds)' + (
                      f' {np.mean(xs):.2f}' if xs else ''))
    label = {'labels_only': 'student on labels only'}.get(row, row)
    out.append(f'| {label} (validation) | ' + ' | '.join(vals) + ' |')
  return out


def _students(spec):
  """A table's student rows: the labels-only student (unless the spec
  says `labels_only=False`) and its methods."""
  return (['labels_only'] if spec.get('labels_only', True) else []) + list(
      spec['methods'])


def _teacher_of(spec, cells, n, s):
  """A group's teacher accuracy, from whichever of its cells has it."""
  for r in _students(spec):
    got = (cells.get(f'{n}/{s}/{r}') or {}).get('teacher')
    if got is not None:
      return got
  return None


def table_markdown(name, spec, cells, seconds, trained=None):
  rows = ['teacher'] + _students(spec)
  head = '| method | ' + ' | '.join(f'{n} labeled' for n in spec['labeled'])
  lines = [head + ' |', '|---' * (len(spec['labeled']) + 1) + '|']
  teacher_of = functools.partial(_teacher_of, spec, cells)

  for row in rows:
    vals = []
    for n in spec['labeled']:
      if row == 'teacher':
        xs = [100 * t for t in (teacher_of(n, s) for s in spec['seeds'])
              if t is not None]
      else:
        xs = [100 * cells[f'{n}/{s}/{row}']['student'] for s in spec['seeds']
              if (cells.get(f'{n}/{s}/{row}') or {}).get('student')
              is not None]
      if len(xs) == len(spec['seeds']):
        vals.append(f'{np.mean(xs):.2f} ± {np.std(xs):.2f}')
      else:
        vals.append(f'({len(xs)}/{len(spec["seeds"])} seeds done)' + (
            f' {np.mean(xs):.2f}' if xs else ''))
    label = {'labels_only': 'student on labels only'}.get(row, row)
    lines.append(f'| {label} | ' + ' | '.join(vals) + ' |')
  if 'vanilla' in spec['methods']:
    lines.append('| **paired difference to vanilla** (mean ± std over '
                 'seeds of the per-seed differences) |' + ' |' * len(
                     spec['labeled']))
    for row in [m for m in _students(spec) if m != 'vanilla']:
      vals = []
      for n in spec['labeled']:
        d = paired_differences(cells, n, spec['seeds'], row, 'vanilla')
        vals.append(f'{np.mean(d):+.2f} ± {np.std(d):.2f}' if len(d) == len(
            spec['seeds']) else f'({len(d)}/{len(spec["seeds"])} seeds)' + (
                f' {np.mean(d):+.2f}' if len(d) else ''))
      label = {'labels_only': 'labels only'}.get(row, row)
      lines.append(f'| {label} − vanilla | ' + ' | '.join(vals) + ' |')
  lines += validation_lines(spec, cells)
  lines += slam_regime_lines(spec, cells)
  finished = all(cells.get(f'{n}/{sd}/{r}') for n in spec['labeled']
                 for sd in spec['seeds'] for r in rows[1:])
  return (f'### {name}: student test accuracy (%), mean ± std over seeds '
          f'{list(spec["seeds"])}\n\n' + '\n'.join(lines) +
          f'\n\nCommand: `python -m experiments.run --table={name}`; config '
          f'`{spec["config"]}`; ' + (
              ('a report of the recorded cells, all finished' if finished
               else 'a report of the cells finished so far')
              if seconds is None
              else f'this run took {seconds / 60:.1f} min of compute for '
              'the cells it ran') + (
                  f'; the cells trained {trained / 60:.1f} min in all '
                  '(teachers included, as recorded per cell)' if trained
                  else '') + '.\n')


def plot(name, spec, cells, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, ax = plt.subplots(figsize=(6, 4))
  for row in ['teacher'] + _students(spec):
    got = ((lambda n, s: _teacher_of(spec, cells, n, s)) if row == 'teacher'
           else (lambda n, s, r=row: (cells.get(f'{n}/{s}/{r}') or {}).get(
               'student')))
    ys = [[100 * got(n, s) for s in spec['seeds'] if got(n, s) is not None]
          or [np.nan] for n in spec['labeled']]
    ax.errorbar(spec['labeled'], [np.mean(y) for y in ys],
                yerr=[np.std(y) for y in ys], marker='o', capsize=3,
                label=row, linestyle='--' if row in ('teacher', 'labels_only')
                else '-')
  ax.set_xscale('log')
  ax.set_xlabel('labeled examples')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(f'{name}: distillation with unlabeled examples')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def run_table(name, spec, workdir, results, manual_dir=None,
              report_only=False, records=True):
  """Trains the table's missing cells (or only reads them) and writes its
  report. Finished cells are kept in `<results>/cells/<cells>.json`
  (experiments/records.py) unless `records` is False. The distillation
  configs name their own data folder."""
  del manual_dir
  get_config = harness.config_getter(spec['config'])
  root = os.path.join(workdir, spec.get('cells', name))
  kept = records_lib.Records(spec.get('cells', name), root, os.path.join(
      results, 'cells')) if records else None
  cells, start = {}, time.time()
  for n in spec['labeled']:
    for s in spec['seeds']:
      group = run_group(get_config, root, n, s, tuple(_students(spec)),
                        spec.get('extra', ''), kept, report_only)
      cells.update({f'{n}/{s}/{m}': v for m, v in group.items()})
  seconds = time.time() - start
  if report_only and not any(cells.values()):
    # A checkout without the runs or their records: the committed report
    # stays as it is.
    print(f'{name}: no cell has finished here or in its records; nothing '
          'to report (its results are left as they are)')
    return cells
  trained = None
  if kept is not None:
    keys = set(cells) | {f'{n}/{s}/teacher' for n in spec['labeled']
                         for s in spec['seeds']}
    trained = sum(kept.cells[k].get('seconds') or 0.0 for k in keys
                  if k in kept.cells)
  md = table_markdown(name, spec, cells, None if report_only else seconds,
                      trained)
  harness.write_results(results, name, md, cells,
                        lambda path: plot(name, spec, cells, path))
  return cells


def main(argv):
  """The harness on `--table` (default: quickstart, whose report goes to
  its workdir unless --results says otherwise)."""
  del argv
  quick = not harness.FLAGS['table'].present or (
      harness.FLAGS.table == 'quickstart')
  workdir = harness.FLAGS.workdir or WORKDIR
  harness.from_flags('quickstart', workdir=workdir, results=os.path.join(
      workdir, 'quickstart') if quick else '')


if __name__ == '__main__':
  sys.exit(app.run(main))
