"""The experiment runner: a small table end to end, then a resumed rerun."""
import json
import os

import numpy as np

from experiments import unlabeled_distillation as exp


def test_table_runs_and_resumes_without_retraining(tmp_path, monkeypatch):
  monkeypatch.setitem(exp.TABLES, 'tiny', dict(
      config='configs/digits_distill.py', labeled=(50,), seeds=(0, 1),
      methods=('vanilla', 'slam'), extra=',runlocal'))
  monkeypatch.chdir(os.path.dirname(os.path.dirname(__file__)))
  cells = exp.run_table('tiny', str(tmp_path / 'runs'), str(tmp_path / 'res'))
  assert len(cells) == 1 * 2 * 3
  md = (tmp_path / 'res' / 'tiny.md').read_text()
  for row in ('| teacher |', '| student on labels only |', '| vanilla |',
              '| slam |'):
    assert row in md
  # 4 rows x 1 size, the title, the paired header and its 2 rows
  assert md.count(' ± ') == 4 * 1 + 1 + 1 + 2
  d = [100 * (cells[f'50/{s}/slam']['student']
              - cells[f'50/{s}/vanilla']['student']) for s in (0, 1)]
  assert f'| slam − vanilla | {np.mean(d):+.2f} ± {np.std(d):.2f} |' in md
  with open(tmp_path / 'res' / 'tiny.json') as f:
    assert set(json.load(f)) == set(cells)
  done = tmp_path / 'runs/tiny/labeled=50/seed=1/slam/summary.json'
  before = os.path.getmtime(done)
  again = exp.run_table('tiny', str(tmp_path / 'runs'), str(tmp_path / 'res'))
  assert again == cells and os.path.getmtime(done) == before
  report = exp.run_table('tiny', str(tmp_path / 'runs'),
                         str(tmp_path / 'report'), report_only=True)
  for key, value in cells.items():
    assert report[key]['student'] == value['student']
    assert report[key]['teacher'] == value['teacher']


def test_method_specs_carry_config_overrides():
  assert exp.parse_method('slam') == ('slam', {})
  assert exp.parse_method('slam[method_kw.normalize=True;distill.k=per_'
                          'example]') == (
                              'slam', {'method_kw.normalize': True,
                                       'distill.k': 'per_example'})


def test_active_table_of_chosen_rows_reports_m_and_gains(tmp_path):
  """A table spec picks its rows; each row reports its m and the mean gain
  of its picks against the pool's. (In a subprocess: both experiment
  scripts define the same absl flags.)"""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = """
import json, sys
from absl import flags
from experiments import active_distillation as act
flags.FLAGS(['act'])
act.TABLES['tiny'] = dict(dataset='digits', seeds=(0,),
                          rows=('random', 'rad_m0'),
                          extra=',budget=40,per_round=20,initial=20,steps=10')
states, seconds = act.run_table('tiny', sys.argv[1])
print(json.dumps(dict(md=act.markdown('tiny', states, (0,), seconds),
                      rows=sorted(r for r, _ in states),
                      m=states[('rad_m0', 0)]['m'])))
"""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, '-c', code, str(tmp_path)],
                        cwd=repo, capture_output=True, text=True,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out['rows'] == ['rad_m0', 'random'] and out['m'] == 0
  line = next(l for l in out['md'].splitlines() if l.startswith('| rad_m0 |'))
  picks, pool = (float(x) for x in line.split('|')[-2].split('/'))
  assert 0 <= picks <= 1 and 0 <= pool <= 1
  assert line.split('|')[-3].strip() == '0'
