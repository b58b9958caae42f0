"""Tables are data: the harness runs a table file end to end, resumes
without retraining, reports what finished; every shipped table loads."""
import json
import os

import numpy as np
import pytest

from conftest import REPO
from core.errors import ConfigError
from experiments import harness
from experiments import tables
from experiments import unlabeled_distillation as exp
from distill import active_distillation as active_exp


def _write_table(path, text):
  path.write_text(f'"""A table a test writes."""\nTABLE = {text}\n')
  return str(path)


@pytest.mark.slow
def test_a_new_table_file_runs_resumes_and_reports(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  spec = _write_table(tmp_path / 'tiny.py', """dict(
    kind='distill', config='configs/digits_distill.py', labeled=(50,),
    seeds=(0, 1), methods=('vanilla', 'slam'), extra=',runlocal')""")
  runs, res = str(tmp_path / 'runs'), str(tmp_path / 'res')
  cells = harness.run(spec, runs, res)
  assert len(cells) == 1 * 2 * 3
  md = (tmp_path / 'res' / 'tiny.md').read_text()
  for row in ('| teacher |', '| student on labels only |', '| vanilla |',
              '| slam |', 'python -m experiments.run --table=tiny'):
    assert row in md
  # 4 rows x 1 size, the title, the paired header and its 2 rows, the
  # validation rows (labels only and the 2 methods)
  assert md.count(' ± ') == 4 * 1 + 1 + 1 + 2 + 3
  v = [100 * cells[f'50/{s}/slam']['validation'] for s in (0, 1)]
  assert f'| slam (validation) | {np.mean(v):.2f} ± {np.std(v):.2f} |' in md
  assert '| slam: share of examples per k | ' in md
  d = [100 * (cells[f'50/{s}/slam']['student']
              - cells[f'50/{s}/vanilla']['student']) for s in (0, 1)]
  assert f'| slam − vanilla | {np.mean(d):+.2f} ± {np.std(d):.2f} |' in md
  with open(tmp_path / 'res' / 'tiny.json') as f:
    assert set(json.load(f)) == set(cells)
  done = tmp_path / 'runs/tiny/labeled=50/seed=1/slam/summary.json'
  before = os.path.getmtime(done)
  assert harness.run(spec, runs, res) == cells
  assert os.path.getmtime(done) == before
  report = harness.run(spec, runs, str(tmp_path / 'report'),
                       report_only=True)
  for key, value in cells.items():
    assert report[key]['student'] == value['student']
    assert report[key]['teacher'] == value['teacher']
    assert report[key]['validation'] == value['validation'] is not None
  # A table sharing its cells trains only what it adds.
  more = _write_table(tmp_path / 'tiny_more.py', """dict(
    kind='distill', config='configs/digits_distill.py', cells='tiny',
    labeled=(50,), seeds=(0,), methods=('vanilla', 'hard'),
    extra=',runlocal')""")
  shared = harness.run(more, runs, res)
  assert shared['50/0/vanilla'] == cells['50/0/vanilla']
  assert os.path.exists(tmp_path / 'runs/tiny/labeled=50/seed=0/hard')
  assert os.path.getmtime(done) == before


def test_method_specs_carry_config_overrides():
  assert exp.parse_method('slam') == ('slam', {})
  assert exp.parse_method('slam[method_kw.normalize=True;distill.k=per_'
                          'example]') == (
                              'slam', {'method_kw.normalize': True,
                                       'distill.k': 'per_example'})


@pytest.mark.slow
def test_active_table_of_chosen_rows_reports_m_and_gains(tmp_path,
                                                          monkeypatch):
  """A table picks its rows; each row reports its m and the mean gain of
  its picks against the pool's."""
  monkeypatch.chdir(REPO)
  spec = _write_table(tmp_path / 'tiny_active.py', """dict(
    kind='active', dataset='digits', seeds=(0,), rows=('random', 'rad_m0'),
    extra=',budget=40,per_round=20,initial=20,steps=10')""")
  states, _ = harness.run(spec, str(tmp_path / 'runs'), str(tmp_path))
  assert sorted(r for r, _ in states) == ['rad_m0', 'random']
  assert states[('rad_m0', 0)]['m'] == 0
  md = (tmp_path / 'tiny_active.md').read_text()
  line = next(l for l in md.splitlines() if l.startswith('| rad_m0 |'))
  picks, pool = (float(x) for x in line.split('|')[-2].split('/'))
  assert 0 <= picks <= 1 and 0 <= pool <= 1
  assert line.split('|')[-3].strip() == '0'
  # Recorded without their selections, the rows report the same on a
  # checkout without the runs, and nothing trains.
  again, _ = harness.run(spec, str(tmp_path / 'fresh'), str(tmp_path))
  assert not (tmp_path / 'fresh').exists()
  assert {k: active_exp.summary(v) for k, v in again.items()} == {
      k: active_exp.summary(v) for k, v in states.items()}
  assert (tmp_path / 'tiny_active.md').read_text() == md
  kept = json.loads((tmp_path / 'cells' / 'tiny_active.json').read_text())
  assert 'chosen' not in kept['seed=0/rad_m0']['result']['rounds'][0]


@pytest.mark.parametrize('name', tables.names())
def test_every_shipped_table_loads_with_its_kind(name):
  got, spec = tables.load(name)
  assert got == name and spec['kind'] in harness.KINDS
  module = harness.kind_module(spec)
  assert hasattr(module, 'run_table') and module.WORKDIR
  if 'config' in spec:
    assert os.path.exists(os.path.join(REPO, spec['config']))


def test_bad_tables_are_one_line(tmp_path):
  with pytest.raises(ConfigError, match='unknown table.*valid choices.*digits'):
    tables.load('no_such_table')
  code = _write_table(tmp_path / 'code.py', "dict(kind='distill', x=len('a'))")
  with pytest.raises(ConfigError, match='must be a literal'):
    tables.load(code)
  with pytest.raises(ConfigError, match='unknown kind.*valid choices'):
    tables.load(_write_table(tmp_path / 'kind.py', "dict(kind='sweep')"))
  assert set(tables.KINDS) == set(harness.KINDS)


def _active_state(accs, wrong=0.1):
  rounds = [{'queries': 100 * (i + 1), 'test_accuracy': a,
             'teacher_wrong_share': wrong} for i, a in enumerate(accs)]
  return {'rounds': rounds[:-1], 'final': rounds[-1], 'm': 5,
          'teacher_val_accuracy': 0.8}


def test_active_tables_report_paired_differences_to_random():
  """Per seed, strategy minus random at each query count; the table gives
  their mean ± std (not the difference of the means' spreads)."""
  from experiments import active_distillation as ad  # pylint: disable=g-import-not-at-top
  states = {('random', 0): _active_state([0.50, 0.60]),
            ('random', 1): _active_state([0.40, 0.70]),
            ('rad', 0): _active_state([0.50, 0.65]),
            ('rad', 1): _active_state([0.40, 0.72])}
  d = ad.paired_differences(states, (0, 1), 'rad')
  np.testing.assert_allclose(d, [[0.0, 5.0], [0.0, 2.0]], atol=1e-9)
  md = ad.markdown('t', states, (0, 1), 60.0)
  assert '| rad − random | +0.00 ± 0.00 | +3.50 ± 1.50 |' in md


def test_laurel_tables_report_paired_differences_to_the_baseline():
  from experiments import laurel  # pylint: disable=g-import-not-at-top
  table = dict(rows={'baseline': {}, 'rw': {'model.residual': 'laurel_rw'}},
               seeds=(0, 1), metric='acc', higher=True)
  cells = {('baseline', 0): {'acc': 0.50}, ('baseline', 1): {'acc': 0.60},
           ('rw', 0): {'acc': 0.52}, ('rw', 1): {'acc': 0.66}}
  md = laurel.markdown('t', table, cells, None, None)
  assert '| rw | 59.00 ± 7.00 | +4.00 ± 2.00 |' in md
  assert 'a report of the recorded cells, all finished' in md
  # A table still running shows its finished seeds' mean, marked partial.
  del cells[('rw', 1)]
  md = laurel.markdown('t', table, cells, None, None)
  assert '| rw | (1/2 seeds) 52.00 | (1/2 seeds) +2.00 |' in md
  assert 'a report of the cells finished so far' in md


def test_distill_tables_still_running_show_the_finished_seeds():
  from experiments import unlabeled_distillation as ud  # pylint: disable=g-import-not-at-top
  spec = dict(labeled=(100,), seeds=(0, 1), methods=('vanilla', 'hard'),
              config='c.py')
  cells = {'100/0/labels_only': dict(student=0.50, teacher=0.70),
           '100/0/vanilla': dict(student=0.60, validation=0.61),
           '100/0/hard': dict(student=0.57, validation=0.55),
           '100/1/vanilla': dict(student=0.62, validation=0.63)}
  md = ud.table_markdown('t', spec, cells, None)
  assert '| vanilla | 61.00 ± 1.00 |' in md
  assert '| hard | (1/2 seeds done) 57.00 |' in md
  assert '| hard − vanilla | (1/2 seeds) -3.00 |' in md
  assert '| labels only − vanilla | (1/2 seeds) -10.00 |' in md
  assert 'a report of the cells finished so far' in md
  for key in ('100/1/labels_only', '100/1/hard'):
    cells[key] = dict(student=0.55, validation=0.5, teacher=0.7)
  assert 'all finished' in ud.table_markdown('t', spec, cells, None)
  # A group whose labels-only cell is not done (None, as run_group gives
  # it) still shows the teacher its students recorded, and is not finished.
  cells = {'100/0/labels_only': None, '100/1/labels_only': None,
           '100/0/vanilla': dict(student=0.6, teacher=0.65),
           '100/1/vanilla': dict(student=0.6, teacher=0.67),
           '100/0/hard': dict(student=0.6, teacher=0.65),
           '100/1/hard': dict(student=0.6, teacher=0.67)}
  md = ud.table_markdown('t', spec, cells, None)
  assert '| teacher | 66.00 ± 1.00 |' in md
  assert 'a report of the cells finished so far' in md
  # labels_only=False: no labels-only rows, the teacher from the students,
  # finished without them.
  del cells['100/0/labels_only'], cells['100/1/labels_only']
  md = ud.table_markdown('t', dict(spec, labels_only=False), cells, None)
  assert 'labels only' not in md and '| teacher | 66.00 ± 1.00 |' in md
  assert 'all finished' in md


def _edit_and_rerun(path, edit, spec, root, res):
  """Edits the records at `path` in place, reruns the table in a fresh
  `root`; returns its cells and the seed-0 cell folder there."""
  kept = json.loads(path.read_text())
  edit(kept)
  path.write_text(json.dumps(kept))
  again = harness.run(spec, str(root), str(res))
  return again, root / 'kept' / 'labeled=50' / 'seed=0'


@pytest.mark.slow
def test_recorded_cells_are_not_trained_again_on_a_fresh_machine(
    tmp_path, monkeypatch):
  """experiments/records.py: a table's finished cells are kept beside its
  results, so a checkout without the runs (the next session's machine)
  reports them and trains nothing; a record of another config retrains."""
  monkeypatch.chdir(REPO)
  spec = _write_table(tmp_path / 'kept.py', """dict(
    kind='distill', config='configs/digits_distill.py', labeled=(50,),
    seeds=(0,), methods=('vanilla', 'hard'), extra=',runlocal')""")
  res = tmp_path / 'res'
  cells = harness.run(spec, str(tmp_path / 'a'), str(res))
  path = res / 'cells' / 'kept.json'
  kept = json.loads(path.read_text())
  assert set(kept) == {'50/0/teacher', '50/0/labels_only', '50/0/vanilla',
                       '50/0/hard'}
  assert kept['50/0/vanilla']['result'] == cells['50/0/vanilla']
  assert 'teacher' not in kept['50/0/labels_only']['result']  # reads none
  assert len(kept['50/0/vanilla']['identity']) == 16
  assert kept['50/0/vanilla']['commit']
  assert kept['50/0/vanilla']['seconds'] > 0 < kept['50/0/teacher']['seconds']
  assert 'min in all (teachers included' in (res / 'kept.md').read_text()
  # A table sharing the folder with another config (validation=140)
  # reads none of its runs, leaves its records and writes no report.
  other = _write_table(tmp_path / 'other.py', """dict(
    kind='distill', config='configs/digits_distill.py', cells='kept',
    labeled=(50,), seeds=(0,), methods=('vanilla',),
    extra=',runlocal,validation=140')""")
  before = path.read_text()
  got = harness.run(other, str(tmp_path / 'a'), str(res), report_only=True)
  assert not any(got.values()), got
  assert path.read_text() == before
  assert not (res / 'other.md').exists()
  # Another root, no runs: everything comes from the records.
  assert harness.run(spec, str(tmp_path / 'b'), str(res)) == cells
  assert not (tmp_path / 'b').exists()
  assert harness.run(spec, str(tmp_path / 'c'), str(res),
                     report_only=True) == cells
  # A record made with another config is not used: the cell (and the
  # teacher it needs) train again, and the record is replaced.
  ident = kept['50/0/vanilla']['identity']
  kept['50/0/vanilla']['identity'] = '0' * 16
  path.write_text(json.dumps(kept))
  again = harness.run(spec, str(tmp_path / 'b'), str(res))
  cell = tmp_path / 'b' / 'kept' / 'labeled=50' / 'seed=0'
  assert (cell / 'vanilla' / 'summary.json').exists()
  assert (cell / 'teacher' / 'final_metrics.json').exists()
  assert not (cell / 'labels_only').exists()
  assert not (cell / 'hard').exists()
  # Retrained from its seed, the teacher is the same one.
  assert again['50/0/vanilla']['teacher'] == cells['50/0/vanilla']['teacher']
  assert json.loads(path.read_text())['50/0/vanilla']['identity'] == ident
  # A student recorded from another run of its teacher is never paired
  # with the others: it trains again from the group's teacher.
  again, cell = _edit_and_rerun(
      path, lambda kept: kept['50/0/hard']['result'].update(
          teacher_run='another run'), spec, tmp_path / 'd', res)
  assert (cell / 'hard' / 'summary.json').exists()
  assert not (cell / 'vanilla').exists()
  assert again == cells
  assert json.loads(path.read_text())['50/0/hard']['result'] == (
      cells['50/0/hard'])
  # The labels-only row reads no teacher: retraining it alone trains none.
  again, cell = _edit_and_rerun(
      path, lambda kept: kept['50/0/labels_only'].update(identity='0' * 16),
      spec, tmp_path / 'e', res)
  assert (cell / 'labels_only' / 'final_metrics.json').exists()
  assert not (cell / 'teacher').exists()
  assert again == cells


def test_two_tables_sharing_records_keep_each_others_cells(tmp_path):
  """Records of one folder written by two processes at once (two tables
  sharing cells) merge instead of overwriting each other."""
  from experiments import records  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  config = common.base_config()
  a = records.Records('shared', str(tmp_path / 'runs'), str(tmp_path))
  b = records.Records('shared', str(tmp_path / 'runs'), str(tmp_path))
  a.put('x', config, {'student': 0.5})
  b.put('y', config, {'student': 0.6})
  a.put('z', config, {'student': 0.7})
  kept = json.loads((tmp_path / 'shared.json').read_text())
  assert {k: v['result']['student'] for k, v in kept.items()} == {
      'x': 0.5, 'y': 0.6, 'z': 0.7}
  assert records.Records('shared', 'elsewhere', str(tmp_path)).get(
      'y', config) == {'student': 0.6}
  config.seed += 1
  assert records.Records('shared', 'elsewhere', str(tmp_path)).get(
      'y', config) is None


def test_a_result_read_again_keeps_its_record(tmp_path, monkeypatch):
  """A report reading a finished run again (its trajectories as tuples,
  its record's as lists) keeps the record, the commit that made it
  included; a changed result is recorded anew under the current commit."""
  from experiments import records  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  config = common.base_config()
  result = {'loss': 1.5, 'trajectory': ((500, 0.97), (1000, 0.95))}
  monkeypatch.setattr(records, '_COMMIT', 'aaaa')
  records.Records('t', 'runs', str(tmp_path)).put('x', config, result)
  monkeypatch.setattr(records, '_COMMIT', 'bbbb')
  again = records.Records('t', 'runs', str(tmp_path))
  again.put('x', config, result)
  kept = json.loads((tmp_path / 't.json').read_text())
  assert kept['x']['commit'].startswith('aaaa')
  again.put('x', config, dict(result, loss=1.4))
  kept = json.loads((tmp_path / 't.json').read_text())
  assert kept['x']['commit'].startswith('bbbb')
  assert kept['x']['result']['loss'] == 1.4
  # Hashed before the identity's keys changed: a workdir holding this
  # config's run keeps the record's commit under today's identity.
  from distill import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text(json.dumps(workdir_lib.resolved(config)))
  kept['x']['identity'] = 'hashed-before'
  (tmp_path / 't.json').write_text(json.dumps(kept))
  monkeypatch.setattr(records, '_COMMIT', 'cccc')
  records.Records('t', 'runs', str(tmp_path)).put(
      'x', config, dict(result, loss=1.4), str(run))
  moved = json.loads((tmp_path / 't.json').read_text())['x']
  assert moved['commit'].startswith('bbbb')
  assert moved['identity'] == records.identity(config, 'runs')


def test_tables_without_a_config_file_still_pick_their_devices():
  """The active kind names a dataset, not a config file: the harness asks
  its module for a config, so CIFAR-10's image models get one CPU device
  (an 8-device active run deadlocked in an all-reduce once)."""
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  from models.kernels import onednn  # pylint: disable=g-import-not-at-top
  _, spec = tables.load('rad_m_cifar10')
  config = harness.kind_module(spec).device_config(spec)
  assert config.data.name.startswith('cifar10')
  if onednn.can_build():
    assert host_devices.auto_count(config=config) == 1
  _, guide = tables.load('guide_cpu')
  assert not hasattr(harness.kind_module(guide), 'device_config')


def test_unreadable_records_and_manifests_are_one_line(tmp_path):
  """A table's records file and a run's manifest that do not read back
  name the file and what to do, and are left as they are."""
  from core.errors import UnreadableFile  # pylint: disable=g-import-not-at-top
  from experiments import records  # pylint: disable=g-import-not-at-top
  cells = tmp_path / 'cells.json'
  for text, reason in (('{"a": ', 'JSONDecodeError'),
                       ('[1]', 'a JSON list, not a JSON object'),
                       ('{"a": {"result": 1}}', "record 'a' has no "
                        "'identity'")):
    cells.write_text(text)
    with pytest.raises(UnreadableFile, match=(
        f'{cells} is unreadable \\({reason}.*\\); it holds the finished '
        'cells of a table: restore it from a copy, or move it aside')):
      records.Records('cells', 'runs', str(tmp_path))
    assert cells.read_text() == text
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run' / 'manifest.json').write_text('\x00garbage')
  with pytest.raises(UnreadableFile, match=(
      'run/manifest.json is unreadable .*; it describes the machine of the '
      'run in ')):
    records._kernels(str(tmp_path / 'run'))  # pylint: disable=protected-access


def test_committed_records_keep_their_identity(tmp_path):
  """Every committed record of every distill table is found by its table:
  each teacher's and distilled student's config hashes to the identity it
  was recorded with, through the layout changes since (the fit options
  moved to method_kw, core/defaults.py: MOVED_TO_METHOD_KW, e.g.
  'slam[distill.alpha_floor=0.6]'; keys added, ADDED_KEYS), and tables
  sharing a folder of cells agree on their configs."""
  # pylint: disable=g-import-not-at-top,protected-access
  from experiments import records as records_lib
  checked = {}
  for name in tables.names():
    _, spec = tables.load(name)
    if spec.get('kind', 'distill') != 'distill':
      continue
    folder = spec.get('cells', name)
    kept = records_lib.Records(folder, str(tmp_path / folder), os.path.join(
        REPO, 'experiments', 'results', 'cells'))
    get_config = harness.config_getter(spec['config'])
    extra = spec.get('extra', '')
    for n in spec['labeled']:
      for s in spec['seeds']:
        for method in ('teacher',) + tuple(spec['methods']):
          record = kept.cells.get(f'{n}/{s}/{method}')
          if record is None:   # labels-only configs read the dataset
            continue
          config = (exp._teacher_config(get_config, n, s, extra)
                    if method == 'teacher' else exp._method_config(
                        get_config, kept.root, n, s, method, extra))
          assert records_lib.identity(config, kept.root) == (
              record['identity']), (name, n, s, method)
          checked[folder] = checked.get(folder, 0) + 1
  assert checked['cifar10_regime'] >= 90 + 18, checked
  assert checked['cifar10_rebuttal_long'] >= 2, checked
  moved = exp._method_config(harness.config_getter(
      'configs/cifar10_distill.py'), str(tmp_path), 10000, 0,
                             'slam[distill.alpha_floor=0.6]', '')
  assert moved.method_kw.alpha_floor == 0.6


def test_keys_added_since_leave_identities_and_old_workdirs_alone():
  """A key a config gained after runs were recorded (core/defaults.py:
  ADDED_KEYS) is out of the recorded identity at its default, and a stored
  config without it is no difference while it is at its default here."""
  # pylint: disable=g-import-not-at-top
  from configs import digits_distill
  from configs import shakespeare_lm
  from core import defaults
  from distill import workdir
  found = set()
  for config in (shakespeare_lm.get_config('runlocal'),
                 digits_distill.get_config('method=vanilla,runlocal')):
    tree = workdir.resolved(config)
    legacy = workdir.legacy_layout(tree)
    # a config.json written before them, read as _check_identity reads it
    old = workdir.current_layout(workdir.legacy_layout(tree))
    for key, default in defaults.ADDED_KEYS.items():
      *path, last = key.split('.')
      block, was = tree, legacy
      for part in path:
        block, was = block.get(part, {}), was.get(part, {})
      if last in block:         # present in today's config (an LM's model)
        assert block[last] == default, key
        assert last not in was, key
        found.add(key)
    assert not workdir.differences({'config': old}, {'config': tree})
  assert found == set(defaults.ADDED_KEYS)
  c = digits_distill.get_config('method=vanilla,runlocal')
  old = workdir.current_layout(workdir.legacy_layout(workdir.resolved(c)))
  c.data.test_dir = '/elsewhere'
  diff = workdir.differences({'config': old},
                             {'config': workdir.resolved(c)})
  assert [k for k, _, _ in diff] == ['config.data.test_dir']


def test_guide_report_pairs_each_regime_with_the_named_one():
  """Golden: the guide kind's `paired_to` column is each row's test loss
  minus the named regime's, seed by seed, then mean ± std."""
  from experiments import guide as guide_kind
  losses = {('random', 0): 2.0, ('random', 1): 2.2, ('guide', 0): 1.9,
            ('guide', 1): 2.0, ('guide+jsd', 0): 1.8, ('guide+jsd', 1): 1.7}
  cells = {k: dict(summary={'student/test/loss': v}, curve=[(75, v + 1)])
           for k, v in losses.items()}
  teacher = {'test/loss': 1.5, 'validation/loss': 1.4}
  args = dict(teacher='t', student='s', steps=10, tokens=64, command='c')
  md = guide_kind.markdown(teacher, cells, [0, 1], args, 60.0, 'guide')
  rows = {line.split(' | ')[0][2:]: line for line in md.splitlines()
          if line.startswith('| ')}
  assert '| paired Δ vs guide |' in rows['regime']
  # (1.8 - 1.9, 1.7 - 2.0) = (-0.1, -0.3): mean -0.2, std 0.1.
  assert '| -0.2000 ± 0.1000 |' in rows['guide+jsd']
  assert '| +0.0000' not in rows['guide']
  assert len({line.count('|') for line in rows.values()}) == 1
  assert 'paired' not in guide_kind.markdown(teacher, cells, [0, 1], args, 1)
