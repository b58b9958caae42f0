"""Tables of kind 'distill': the Weighted-Distillation / SLaM comparison.

    python -m experiments.run --table=digits     # experiments/tables/digits.py
    python -m experiments.unlabeled_distillation --table=quickstart  # the same

A table of this kind (experiments/tables/) gives `config` (a distillation
config file taking method, labeled and seed arguments), `labeled` sizes,
`seeds`, `methods` (registered names, optionally with config overrides:
'slam[method_kw.normalize=True]'), optionally `extra` (more config
arguments) and `cells` (another table's runs to share).

For every labeled size and seed: one teacher (trained on the labeled part,
shared by all methods), one cached teacher-labeling pass, a student per
method, and a "labels only" student (the student architecture trained on the
labeled part alone). Cells whose result exists are skipped, so an interrupted
run continues where it stopped. Writes `experiments/results/<table>.md`
(mean ± std test accuracy over seeds), `.json` (every cell) and `.png`
(accuracy against labeled size).
"""
import ast
import json
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


def read_cell(root, labeled, seed, method):
  """A finished cell's numbers, or None (for --report_only)."""
  cell = os.path.join(root, f'labeled={labeled}', f'seed={seed}')
  teacher = os.path.join(cell, 'teacher', 'final_metrics.json')
  name = 'labels_only' if method == 'labels_only' else _cell_dir(method)
  done = os.path.join(cell, name, 'final_metrics.json' if
                      method == 'labels_only' else 'summary.json')
  if not (os.path.exists(teacher) and os.path.exists(done)):
    return None
  out = {'teacher': _json(teacher)['test/accuracy']}
  result = _json(done)
  out['student'] = result.get('test/accuracy',
                              result.get('student/test/accuracy'))
  out['validation'] = result.get('validation/accuracy',
                                 result.get('student/validation/accuracy'))
  out.update({k: v for k, v in result.items() if k.startswith('fit/')})
  return out


def _cell_dir(method):
  return (method.replace('[', '_').replace(']', '').replace(';', '_')
          .replace('=', '-'))


def run_cell(get_config, root, labeled, seed, method, extra=''):
  """One student (or the labels-only row); returns its test accuracy.

  `method` is a registered name, optionally with config overrides:
  'slam[method_kw.normalize=True]'.
  """
  cell = os.path.join(root, f'labeled={labeled}', f'seed={seed}')
  teacher_dir = os.path.join(cell, 'teacher')
  config = get_config(f'method=vanilla,labeled={labeled},seed={seed}{extra}')
  if not os.path.exists(os.path.join(teacher_dir, 'final_metrics.json')):
    print(f'-- teacher labeled={labeled} seed={seed}', flush=True)
    _finished(train.train(config.teacher.config, teacher_dir))
  teacher = _json(os.path.join(teacher_dir, 'final_metrics.json'))
  out = {'teacher': teacher['test/accuracy']}
  if method == 'labels_only':
    workdir = os.path.join(cell, 'labels_only')
    done = os.path.join(workdir, 'final_metrics.json')
    if not os.path.exists(done):
      student = distillation.student_config(config)
      student.method = 'supervised'
      student.data.train_on = 'labeled'
      # The same number of steps as the distilled students (more epochs of
      # the smaller labeled part), so the baseline is not under-trained.
      data = loading.load_data(student.data)
      n_labeled = len(data.parts['labeled'])
      if config.total_epochs > 0:
        ratio = len(data.parts['unlabeled']) / n_labeled
        student.total_epochs = config.total_epochs * max(1.0, ratio)
      student.batch_size = min(student.batch_size, n_labeled)
      _finished(train.train(student, workdir, data=data))
    out['student'] = _json(done)['test/accuracy']
    out['validation'] = _json(done).get('validation/accuracy')
    return out
  workdir = os.path.join(cell, _cell_dir(method))
  done = os.path.join(workdir, 'summary.json')
  if not os.path.exists(done):
    print(f'-- {method} labeled={labeled} seed={seed}', flush=True)
    name, overrides = parse_method(method)
    config = get_config(f'method={name},labeled={labeled},seed={seed},'
                        f'teacher={teacher_dir}{extra}')
    common.override(config, overrides)
    _finished(distillation.run(config, workdir))
  summary = _json(done)
  out['student'] = summary['student/test/accuracy']
  out['validation'] = summary.get('student/validation/accuracy')
  out['agreement'] = summary['student/test_agreement']
  out.update({k: v for k, v in summary.items() if k.startswith('fit/')})
  return out


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
  for row in ['labels_only'] + list(spec['methods']):
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


def table_markdown(name, spec, cells, seconds):
  rows = ['teacher', 'labels_only'] + list(spec['methods'])
  head = '| method | ' + ' | '.join(f'{n} labeled' for n in spec['labeled'])
  lines = [head + ' |', '|---' * (len(spec['labeled']) + 1) + '|']
  for row in rows:
    vals = []
    for n in spec['labeled']:
      key = 'labels_only' if row == 'teacher' else row
      field = 'teacher' if row == 'teacher' else 'student'
      xs = [100 * cells[f'{n}/{s}/{key}'][field] for s in spec['seeds']
            if cells.get(f'{n}/{s}/{key}')]
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
    for row in ['labels_only'] + [m for m in spec['methods']
                                  if m != 'vanilla']:
      vals = []
      for n in spec['labeled']:
        d = paired_differences(cells, n, spec['seeds'], row, 'vanilla')
        vals.append(f'{np.mean(d):+.2f} ± {np.std(d):.2f}' if len(d) == len(
            spec['seeds']) else f'({len(d)}/{len(spec["seeds"])} seeds)')
      label = {'labels_only': 'labels only'}.get(row, row)
      lines.append(f'| {label} − vanilla | ' + ' | '.join(vals) + ' |')
  lines += validation_lines(spec, cells)
  lines += slam_regime_lines(spec, cells)
  return (f'### {name}: student test accuracy (%), mean ± std over seeds '
          f'{list(spec["seeds"])}\n\n' + '\n'.join(lines) +
          f'\n\nCommand: `python -m experiments.run --table={name}`; config '
          f'`{spec["config"]}`; ' + (
              'a report of the cells finished so far.\n' if seconds is None
              else f'this run took {seconds / 60:.1f} min of compute for '
              'the cells it ran.\n'))


def plot(name, spec, cells, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, ax = plt.subplots(figsize=(6, 4))
  for row in ['teacher', 'labels_only'] + list(spec['methods']):
    key = 'labels_only' if row == 'teacher' else row
    field = 'teacher' if row == 'teacher' else 'student'
    ys = [[100 * cells[f'{n}/{s}/{key}'][field] for s in spec['seeds']
           if cells.get(f'{n}/{s}/{key}')] or [np.nan]
          for n in spec['labeled']]
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
              report_only=False):
  """Trains the table's missing cells (or only reads them) and writes its
  report. The distillation configs name their own data folder."""
  del manual_dir
  get_config = harness.config_getter(spec['config'])
  root = os.path.join(workdir, spec.get('cells', name))
  cells, start = {}, time.time()
  for n in spec['labeled']:
    for s in spec['seeds']:
      for method in ('labels_only',) + tuple(spec['methods']):
        cells[f'{n}/{s}/{method}'] = (
            read_cell(root, n, s, method) if report_only else
            run_cell(get_config, root, n, s, method, spec.get('extra', '')))
  seconds = time.time() - start
  md = table_markdown(name, spec, cells, None if report_only else seconds)
  os.makedirs(results, exist_ok=True)
  with open(os.path.join(results, f'{name}.md'), 'w') as f:
    f.write(md)
  with open(os.path.join(results, f'{name}.json'), 'w') as f:
    json.dump(cells, f, indent=1, sort_keys=True)
  plot(name, spec, cells, os.path.join(results, f'{name}.png'))
  print(md)
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
