"""The experiment runner: a small table end to end, then a resumed rerun."""
import json
import os

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
  assert md.count(' ± ') == 4 * 1 + 1     # 4 rows x 1 size, and the title
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
