"""The synthetic theory-regime tables (experiments/theory.py): the teacher is
built as the setting says, and the orderings each method's theory
guarantees hold on a small problem."""
import numpy as np
import pytest

from experiments import theory
from experiments import tables

SMALL = dict(unlabeled=4000, validation=500, test=2000)
STUDENT = dict(steps=600)


def test_concentrated_teacher_errs_only_in_its_region_with_truth_second():
  p = theory.make_problem(0, 0.3, **SMALL)
  u = p['unlabeled']
  inside, outside = u['correct'][u['region']], u['correct'][~u['region']]
  assert abs(u['region'].mean() - 0.3) < 0.03
  assert abs(inside.mean() - 0.3) < 0.05
  assert outside.mean() > 0.95
  top2 = np.argsort(-u['probs'], -1)[:, :2]
  assert np.mean(np.any(top2 == u['y'][:, None], -1)) == 1.0
  np.testing.assert_allclose(u['probs'].sum(-1), 1.0, atol=1e-5)
  margin = np.sort(u['probs'], -1)
  margin = margin[:, -1] - margin[:, -2]
  assert margin[u['region']].max() < margin[~u['region']].min()


def test_spread_teacher_margin_says_nothing_about_its_mistakes():
  p = theory.make_problem(1, 0.6, errors='spread', k=3, **SMALL)
  u = p['unlabeled']
  assert abs(u['correct'].mean() - 0.6) < 0.03
  top3 = np.argsort(-u['probs'], -1)[:, :3]
  assert np.mean(np.any(top3 == u['y'][:, None], -1)) > 0.99
  margin = np.sort(u['probs'], -1)
  margin = margin[:, -1] - margin[:, -2]
  assert abs(np.corrcoef(margin, u['correct'])[0, 1]) < 0.1


def test_bad_setting_is_one_line():
  with pytest.raises(ValueError, match='valid choices: concentrated, spread'):
    theory.make_problem(0, 0.5, errors='everywhere', **SMALL)
  with pytest.raises(ValueError, match='valid choices: halfspace, boundary'):
    theory.make_problem(0, 0.5, region='disk', **SMALL)
  with pytest.raises(ValueError, match='valid choices: runner_up, random'):
    theory.make_problem(0, 0.5, confusion='nearest', **SMALL)


def test_random_confusion_keeps_the_truth_second_and_the_default_unchanged():
  p = theory.make_problem(2, 0.2, confusion='random', **SMALL)['unlabeled']
  wrong = ~p['correct'] & p['region']
  order = np.argsort(-p['probs'], -1)
  assert np.all(order[wrong, 1] == p['y'][wrong])
  # the default construction draws nothing more than before the option
  a = theory.make_problem(2, 0.2, **SMALL)['unlabeled']['probs']
  b = theory.make_problem(2, 0.2, confusion='runner_up',
                          **SMALL)['unlabeled']['probs']
  np.testing.assert_array_equal(a, b)


def _accuracies(problem, rows, seed=0):
  return {r: 100 * theory.distill_cell(problem, seed, r, STUDENT)['test']
          for r in rows}


@pytest.mark.slow
def test_theory_order_where_mistakes_are_concentrated():
  """At 20% teacher accuracy in R: SLaM on hard labels (consistent, its
  theory's form) and weighted distillation (down-weights R) beat vanilla;
  nothing beats clean labels."""
  p = theory.make_problem(0, 0.2, **SMALL)
  acc = _accuracies(p, ('clean', 'vanilla', 'weighted',
                        'slam[method_kw.target=hard]'))
  assert acc['slam[method_kw.target=hard]'] > acc['vanilla'] + 0.7, acc
  assert acc['weighted'] > acc['vanilla'] + 0.5, acc
  assert acc['clean'] >= max(acc.values()) - 0.2, acc
  assert acc['vanilla'] > 100 * np.mean(
      np.argmax(p['test']['probs'], -1) == p['test']['y']), acc


@pytest.mark.slow
def test_spread_mistakes_leave_nothing_to_reweight():
  """Errors spread over the top-3 everywhere: weighted equals vanilla, and
  the normalised forward model (a distribution over the top-k) recovers
  the truth where the unnormalised one, below alpha 1/2, leaves the
  top-k."""
  p = theory.make_problem(0, 0.4, errors='spread', k=3, **SMALL)
  acc = _accuracies(p, (
      'vanilla', 'weighted', 'slam[method_kw.target=hard]',
      'slam[method_kw.normalize=True;method_kw.target=hard]'))
  assert abs(acc['weighted'] - acc['vanilla']) < 1.0, acc
  normalised = acc['slam[method_kw.normalize=True;method_kw.target=hard]']
  assert normalised > acc['vanilla'] + 5, acc
  assert acc['slam[method_kw.target=hard]'] < 50, acc


@pytest.mark.slow
def test_margin_sampling_buys_the_teachers_mistakes_near_the_boundary():
  p = theory.make_problem(0, 0.2, region='boundary', **SMALL)
  got = {r: theory.active_cell(p, 0, r, initial=100, per_round=100,
                               rounds=2, student=STUDENT)
         for r in ('random', 'margin', 'rad')}
  assert got['margin']['queried_wrong'] > got['random']['queried_wrong'] + 0.1
  assert got['rad']['queried_wrong'] < got['margin']['queried_wrong']
  assert got['random']['queries'] == [100, 200, 300]
  assert len(got['random']['curve']) == 3


def test_report_pairs_rows_by_seed(tmp_path):
  spec = dict(kind='theory', seeds=(0, 1), sweep=(0.2,), rows=(
      'teacher', 'vanilla', 'weighted'), prediction='weighted wins')
  cells = {'0.2/0/teacher': {'test': 0.7}, '0.2/1/teacher': {'test': 0.7},
           '0.2/0/vanilla': {'test': 0.90}, '0.2/1/vanilla': {'test': 0.80},
           '0.2/0/weighted': {'test': 0.92, 'weight_in_region': 0.2},
           '0.2/1/weighted': {'test': 0.83, 'weight_in_region': 0.3}}
  md = theory.table_markdown('t', spec, cells)
  assert '| vanilla | 85.00 ± 5.00 |' in md
  assert '| weighted − vanilla | +2.50 ± 0.50 |' in md
  assert '| weighted: mean w(x) in R | 0.250 |' in md
  assert '6 of 6 cells finished' in md and 'weighted wins' in md


def test_tables_of_this_kind_load():
  for name in ('theory_concentrated', 'theory_spread', 'theory_rad'):
    _, spec = tables.load(name)
    assert spec['kind'] == 'theory' and len(spec['seeds']) == 5
