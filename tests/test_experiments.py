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
