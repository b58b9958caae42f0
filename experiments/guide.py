"""Reproduces GUIDE's comparison (Trinh, Menghani, Vee 2025) on Tiny
Shakespeare at CPU scale: one teacher LM, then a smaller student under four
regimes with the same token budget, for each seed.

    python -m experiments.run --table=guide_cpu  # cpu scale, 3 seeds
    python -m experiments.guide                  # the same
    python -m experiments.guide --seeds=0 --steps=60 --teacher_steps=60 \
        --workdir=/tmp/guide_smoke                # a smoke run

A table of this kind (experiments/tables/) gives `scale` (of
configs/guide_lm.py), `seeds`, `steps` and `teacher_steps`, and `cells`
(the runs' folder under the workdir; '' for the workdir itself), and
optionally `regimes` ({name: dict(init, method, and configs/guide_lm.py's
alpha, beta, temperature)}; one named `random`, the gap's reference;
default: the four below; experiments/tables/guide_objectives.py) and
`paired_to` (a regime: each row's test loss minus that regime's, per seed,
mean ± std, in a column of its own).

Regimes: `random` (the student's own init, trained on the data), `kd`
(online logit distillation from the teacher), `guide` (GUIDE init, trained
on the data), `guide+kd` (both). Table: final test loss (nats/char) and the
teacher-student gap reduction, the paper's measure:
    (L_random - L_method) / (L_random - L_teacher),
at the first evaluation and at the end; plot: validation loss curves.
Cells that finished are skipped (rerun to resume). Writes
`experiments/results/<table>.{md,json,png}` (for a smoke run from the
flags above, `guide_<scale>` in the workdir).
"""
import json
import os
import sys
import time

import numpy as np
from absl import app
from absl import flags

from configs import guide_lm
from distill import distillation
from distill import logging_utils
from distill import train
from experiments import plotting
from experiments import harness

REGIMES = {'random': dict(init='', method='supervised'),
           'kd': dict(init='', method='vanilla'),
           'guide': dict(init='guide', method='supervised'),
           'guide+kd': dict(init='guide', method='vanilla')}
WORKDIR = 'workdirs/guide'

_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Student seeds.')
_STEPS = flags.DEFINE_integer('steps', 600, 'Student steps (token budget).')
_TEACHER_STEPS = flags.DEFINE_integer('teacher_steps', 1500, 'Teacher steps.')
_SCALE = flags.DEFINE_enum('scale', 'cpu', list(guide_lm.SCALES),
                           'Model sizes (configs/guide_lm.py).')


def _arg(regime, seed, steps, teacher_steps, scale, manual_dir, teacher='',
         regimes=None):
  r = (regimes or REGIMES)[regime]
  extra = ''.join(f',{k}={v}' for k, v in r.items()
                  if k not in ('init', 'method'))   # alpha, beta (guide_lm)
  return (f'init={r["init"]},method={r["method"]},seed={seed},steps={steps},'
          f'teacher_steps={teacher_steps},scale={scale},'
          f'manual_dir={manual_dir}' + extra + (f',teacher={teacher}'
                                                if teacher else ''))


def _json(path):
  with open(path) as f:
    return json.load(f)


def run_cells(workdir, seeds, steps, teacher_steps, scale, manual_dir,
              report_only=False, regimes=None):
  """The teacher's final metrics and {(regime, seed): summary and curve};
  None when `report_only` and a cell is unfinished."""
  regimes = regimes or REGIMES
  teacher_dir = os.path.join(workdir, 'teacher')
  if report_only and not all(os.path.exists(os.path.join(
      workdir, r.replace('+', '_'), f'seed={s}', 'summary.json'))
                             for r in regimes for s in seeds):
    return None, None
  if not os.path.exists(os.path.join(teacher_dir, 'final_metrics.json')):
    print('-- teacher', flush=True)
    config = guide_lm.get_config(_arg('random', 0, steps, teacher_steps,
                                      scale, manual_dir))
    if train.train(config.teacher.config, teacher_dir).get('preempted'):
      sys.exit(143)
  cells = {}
  for seed in seeds:
    for regime in regimes:
      cell = os.path.join(workdir, regime.replace('+', '_'), f'seed={seed}')
      done = os.path.join(cell, 'summary.json')
      if not os.path.exists(done):
        print(f'-- {regime} seed={seed}', flush=True)
        config = guide_lm.get_config(_arg(regime, seed, steps, teacher_steps,
                                          scale, manual_dir, teacher_dir,
                                          regimes))
        if distillation.run(config, cell).get('preempted'):
          sys.exit(143)
      curve = [(r['step'], r['validation/loss'])
               for r in logging_utils.read_metrics(os.path.join(cell,
                                                                'student'))
               if 'validation/loss' in r]
      cells[(regime, seed)] = dict(summary=_json(done), curve=curve)
  teacher = _json(os.path.join(teacher_dir, 'final_metrics.json'))
  return teacher, cells


def gap_reduction(loss_random, loss_method, loss_teacher):
  return (loss_random - loss_method) / (loss_random - loss_teacher)


def markdown(teacher, cells, seeds, args, seconds, paired_to=''):
  first_step = min(c['curve'][0][0] for c in cells.values())
  test_loss = lambda r, s: cells[(r, s)]['summary']['student/test/loss']
  paired = (f' paired Δ vs {paired_to} |', '---|') if paired_to else ('', '')
  lines = ['| regime | test loss, mean ± std |' + paired[0] +
           ' gap closed at the end (%) | '
           f'validation loss at step {first_step} | gap closed at step '
           f'{first_step} (%) |', '|---|---|' + paired[1] + '---|---|---|']
  t_loss = teacher['test/loss']
  t_val = teacher['validation/loss']
  for regime in dict.fromkeys(r for r, _ in cells):   # the table's regimes
    final = [test_loss(regime, s) for s in seeds]
    early = [cells[(regime, s)]['curve'][0][1] for s in seeds]
    gaps = [gap_reduction(test_loss('random', s), test_loss(regime, s),
                          t_loss) for s in seeds]
    early_gaps = [gap_reduction(cells[('random', s)]['curve'][0][1],
                                cells[(regime, s)]['curve'][0][1], t_val)
                  for s in seeds]
    diffs = [test_loss(regime, s) - test_loss(paired_to, s) for s in seeds
             ] if paired_to else []
    delta = (f' {np.mean(diffs):+.4f} ± {np.std(diffs):.4f} |' if paired_to
             and regime != paired_to else ' |' if paired_to else '')
    lines.append(f'| {regime} | {np.mean(final):.4f} ± {np.std(final):.4f} |'
                 f'{delta} {100 * np.mean(gaps):.1f} ± '
                 f'{100 * np.std(gaps):.1f} | '
                 f'{np.mean(early):.4f} | {100 * np.mean(early_gaps):.1f} |')
  lines.append(f'| teacher | {t_loss:.4f} |' + (' |' if paired_to else '')
               + f' | {t_val:.4f} (final) | |')
  return ('### GUIDE on Tiny Shakespeare: student test loss (nats/char) over '
          f'seeds {list(seeds)}\n\n' + '\n'.join(lines) +
          f'\n\nTeacher {args["teacher"]}, student {args["student"]}, '
          f'{args["steps"]} student steps of {args["tokens"]} tokens. Gap '
          'closed = (L_random - L) / (L_random - L_teacher), per seed, then '
          f'averaged.\nCommand: `{args["command"]}`; this run took '
          f'{seconds / 60:.1f} min.\n')


def plot(teacher, cells, seeds, path):
  plt = plotting.pyplot()
  if plt is None:
    return
  fig, ax = plt.subplots(figsize=(6.5, 4))
  for regime in dict.fromkeys(r for r, _ in cells):
    curves = [cells[(regime, s)]['curve'] for s in seeds]
    steps = [p[0] for p in curves[0]]
    ys = np.array([[p[1] for p in c] for c in curves])
    ax.plot(steps, ys.mean(0), marker='o', label=regime)
    ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.2)
  ax.axhline(teacher['validation/loss'], color='gray', linestyle='--',
             label='teacher (final)')
  ax.set_xlabel('student step')
  ax.set_ylabel('validation loss (nats/char)')
  ax.set_title('GUIDE vs distillation, Tiny Shakespeare')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def run_table(name, table, workdir, results, manual_dir='../shared/datasets',
              report_only=False, command=''):
  seeds, scale = list(table['seeds']), table['scale']
  regimes = table.get('regimes') or REGIMES
  if table.get('paired_to', '') not in ('', *regimes):
    raise ValueError(f'table {name}: paired_to={table["paired_to"]!r} is not '
                     f'one of its regimes: {", ".join(regimes)}')
  start = time.time()
  teacher, cells = run_cells(os.path.join(workdir, table.get('cells', name)),
                             seeds, table['steps'], table['teacher_steps'],
                             scale, manual_dir, report_only,
                             table.get('regimes'))
  if teacher is None:
    print(f'{name}: not every cell has finished; nothing to report yet')
    return None
  t_size, s_size = guide_lm.SCALES[scale]
  cfg = guide_lm.get_config(f'scale={scale}')
  args = dict(teacher='%d layers x %d (heads %d, MLP %d)' % t_size,
              student='%d layers x %d (heads %d, MLP %d)' % s_size,
              steps=table['steps'],
              command=command or f'python -m experiments.run --table={name}',
              tokens=cfg.batch_size * cfg.data.seq_len)
  md = markdown(teacher, cells, seeds, args, time.time() - start,
                table.get('paired_to', ''))
  os.makedirs(results, exist_ok=True)
  with open(os.path.join(results, f'{name}.md'), 'w') as f:
    f.write(md)
  with open(os.path.join(results, f'{name}.json'), 'w') as f:
    json.dump({'teacher': teacher,
               'cells': {f'{r}/seed={s}': v for (r, s), v in cells.items()}},
              f, indent=1, sort_keys=True)
  plot(teacher, cells, seeds, os.path.join(results, f'{name}.png'))
  print(md)
  return teacher, cells


def main(argv):
  """The guide_cpu table through the harness, or, with other --seeds,
  --steps, --teacher_steps or --scale, a table made from them whose report
  goes to the workdir."""
  del argv
  workdir = harness.FLAGS.workdir or WORKDIR
  seeds = tuple(int(s) for s in _SEEDS.value)
  _, default = harness.tables.load('guide_cpu')
  table = dict(default, seeds=seeds, steps=_STEPS.value,
               teacher_steps=_TEACHER_STEPS.value, scale=_SCALE.value)
  if table == default:
    harness.from_flags('guide_cpu', workdir=WORKDIR)
    return
  command = (f'python -m experiments.guide --seeds={",".join(map(str, seeds))}'
             f' --steps={_STEPS.value} --teacher_steps={_TEACHER_STEPS.value}'
             f' --scale={_SCALE.value}')
  harness.setup()
  run_table(f'guide_{_SCALE.value}', table, workdir,
            harness.FLAGS.results or workdir, harness.FLAGS.manual_dir,
            harness.FLAGS.report_only, command)


if __name__ == '__main__':
  sys.exit(app.run(main))
