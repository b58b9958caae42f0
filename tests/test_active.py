"""Active-distillation selection: the RAD game against an exact LP, its
limits, dependent rounding, and every strategy's contract."""
import numpy as np
import pytest
from scipy.optimize import linprog

from core.errors import ConfigError
from distill import active


def lp_value(g, b, m):
  """The game's optimum by LP (the top-m sum in its dual form):
  max sum p g - m t - sum u  s.t.  u_i >= p_i g_i - t, u >= 0,
  sum p = b, 0 <= p <= 1."""
  n = len(g)
  # variables: p (n), t (1), u (n); linprog minimises
  cost = np.concatenate([-g, [m], np.ones(n)])
  a_ub = np.hstack([np.diag(g), -np.ones((n, 1)), -np.eye(n)])
  a_eq = np.concatenate([np.ones(n), [0.0], np.zeros(n)])[None]
  bounds = [(0, 1)] * n + [(None, None)] + [(0, None)] * n
  res = linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[b],
                bounds=bounds, method='highs')
  assert res.status == 0
  return -res.fun


@pytest.mark.parametrize('seed', range(40))
def test_rad_allocation_matches_the_exact_lp(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(5, 80))
  g = rng.random(n) ** rng.uniform(0.3, 3)
  b = int(rng.integers(1, n))
  m = int(rng.integers(0, n))
  p = active.rad_probabilities(g, b, m)
  assert abs(p.sum() - b) < 1e-9
  assert p.min() >= 0 and p.max() <= 1
  ours, best = active.game_value(p, g, m), lp_value(g, b, m)
  assert ours >= best - 1e-6 * max(1.0, abs(best)), (ours, best)


def test_m_zero_is_margin_top_b():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(10), size=200)
  p = active.rad_probabilities(1 - active.margins(probs), 30, 0)
  np.testing.assert_array_equal(np.flatnonzero(p), active.select(
      'margin', 30, rng, probs=probs))
  np.testing.assert_array_equal(
      active.select('rad', 30, np.random.default_rng(1), probs=probs, m=0),
      active.select('margin', 30, rng, probs=probs))


def test_more_expected_errors_spread_the_budget():
  g = np.random.default_rng(1).random(500)
  support = [np.sum(active.rad_probabilities(g, 50, m) > 1e-9)
             for m in (0, 10, 100, 300)]
  assert support[0] == 50
  assert support == sorted(support) and support[-1] > 100


@pytest.mark.slow
def test_depround_keeps_the_count_and_the_marginals():
  rng = np.random.default_rng(0)
  p = active.rad_probabilities(rng.random(40), 7, 10)
  assert 0 < np.sum((p > 0) & (p < 1))          # fractional entries exist
  draws = 20_000
  counts = np.zeros(40)
  for _ in range(draws):
    chosen = active.depround(p, rng)
    assert len(chosen) == 7 and len(np.unique(chosen)) == 7
    counts[chosen] += 1
  # binomial standard error <= 0.0036: allow 5 of them
  np.testing.assert_allclose(counts / draws, p, atol=0.018)


def test_depround_refuses_a_fractional_total():
  with pytest.raises(ValueError, match='integer sum'):
    active.depround(np.array([0.5, 0.7]), np.random.default_rng(0))


@pytest.mark.parametrize('name', sorted(active.STRATEGIES))
def test_every_strategy_returns_b_distinct_pool_indices(name):
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(10), size=300)
  emb = rng.normal(size=(300, 8))
  chosen = active.select(name, 25, rng, probs=probs, embeddings=emb,
                         labeled_embeddings=emb[:5], m=40)
  assert len(chosen) == 25 and len(np.unique(chosen)) == 25
  assert chosen.min() >= 0 and chosen.max() < 300


def test_margin_entropy_and_kcenter_pick_what_they_say():
  probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0],
                    [1.0, 0.0, 0.0]])
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(active.select('margin', 2, rng, probs=probs),
                                [1, 2])
  np.testing.assert_array_equal(active.select('entropy', 1, rng,
                                              probs=probs), [1])
  emb = np.array([[0.0], [0.1], [5.0], [10.0]])
  np.testing.assert_array_equal(
      active.select('kcenter', 1, rng, embeddings=emb,
                    labeled_embeddings=np.array([[0.0]])), [3])


def test_bad_strategy_and_budget_errors():
  probs = np.full((10, 2), 0.5)
  with pytest.raises(ConfigError, match='valid choices: entropy, kcenter, '
                     'margin, rad, random'):
    active.select('badge', 3, np.random.default_rng(0), probs=probs)
  with pytest.raises(ConfigError, match='cannot select b=11 of a pool of 10'):
    active.select('margin', 11, np.random.default_rng(0), probs=probs)


# --- the active loop ------------------------------------------------------


def _active_config(strategy, method='vanilla', teacher=''):
  from configs import active_distill  # pylint: disable=g-import-not-at-top
  c = active_distill.get_config(
      f'dataset=digits,strategy={strategy},method={method},budget=60,'
      f'per_round=20,initial=20,steps=20' + (f',teacher={teacher}'
                                             if teacher else ''))
  c.teacher.config.total_epochs = -1.0
  c.teacher.config.total_steps = 40
  c.progress = False
  return c


@pytest.mark.slow
def test_teacher_runs_only_on_selected_points_and_resume_keeps_them(
    tmp_path):
  """rad + slam: the ledger's forward passes are exactly the selected pool
  points (plus the validation pass); a run cut after round 1 resumes with
  the same selections and the same final student."""
  import json  # pylint: disable=g-import-not-at-top
  from distill import active_distillation  # pylint: disable=g-import-not-at-top
  work = tmp_path / 'run'
  out = active_distillation.run(_active_config('rad', 'slam'), str(work))
  state = json.loads((work / 'rounds.json').read_text())
  selected = state['initial'] + sum((r['chosen'] for r in state['rounds']),
                                    [])
  assert len(selected) == len(set(selected)) == 60
  ledger = np.load(work / 'ledger.npz')
  assert sorted(ledger['positions'].tolist()) == sorted(selected)
  assert int(ledger['forward_passes']) == 60 == out['forward_passes']
  assert out['validation_forward_passes'] == 150
  assert [r['queries'] for r in state['rounds']] == [20, 40]
  assert state['final']['queries'] == 60 and state['m'] > 0
  # cut after round 1: forget rounds >= 1 and the later students
  import shutil  # pylint: disable=g-import-not-at-top
  cut = dict(state, rounds=state['rounds'][:1])
  cut.pop('final')
  (work / 'rounds.json').write_text(json.dumps(cut))
  for r in (1, 2):
    shutil.rmtree(work / f'round{r}')
  again = active_distillation.run(_active_config('rad', 'slam'), str(work))
  state2 = json.loads((work / 'rounds.json').read_text())
  assert [r['chosen'] for r in state2['rounds']] == [
      r['chosen'] for r in state['rounds']]
  assert again['round2/test_accuracy'] == out['round2/test_accuracy']
  assert again['forward_passes'] == 60      # nothing queried twice


def test_active_budget_errors(tmp_path):
  from distill import active_distillation  # pylint: disable=g-import-not-at-top
  c = _active_config('margin')
  c.active.budget = 10_000
  with pytest.raises(ConfigError, match='active.budget=10000 exceeds the '
                     'pool'):
    active_distillation.run(c, str(tmp_path))
  c = _active_config('margin')
  c.active.initial = 0
  with pytest.raises(ConfigError, match=r'active.initial=0 must be in \[1'):
    active_distillation.run(c, str(tmp_path))


@pytest.mark.slow
def test_m_over_remaining_counts_the_unqueried_points(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from distill import active_distillation  # pylint: disable=g-import-not-at-top
  from distill.data import loading  # pylint: disable=g-import-not-at-top
  c = _active_config('rad')
  c.active.budget, c.active.m_over = 40, 'remaining'
  active_distillation.run(c, str(tmp_path / 'run'))
  state = json.loads((tmp_path / 'run' / 'rounds.json').read_text())
  pool = len(loading.load_data(c.data).parts['unlabeled'])
  assert state['m'] == active.expected_errors(
      state['teacher_val_accuracy'], pool - c.active.initial)


@pytest.mark.slow
def test_m_over_round_and_a_reused_round0(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from distill import active_distillation  # pylint: disable=g-import-not-at-top
  c = _active_config('rad')
  c.active.budget, c.active.m_over = 40, 'round'
  active_distillation.run(c, str(tmp_path / 'run'))
  state = json.loads((tmp_path / 'run' / 'rounds.json').read_text())
  assert state['m'] == active.expected_errors(state['teacher_val_accuracy'],
                                              20)
  # another strategy reuses this run's round-0 student instead of training
  other = _active_config('margin')
  other.active.budget, other.active.round0_from = 40, str(tmp_path / 'run')
  active_distillation.run(other, str(tmp_path / 'margin'))
  state_m = json.loads((tmp_path / 'margin' / 'rounds.json').read_text())
  assert state_m['rounds'][0]['test_accuracy'] == (
      state['rounds'][0]['test_accuracy'])
  assert state_m['initial'] == state['initial']
  assert state_m['rounds'][0]['chosen'] != state['rounds'][0]['chosen']
  # each round records the informativeness of its picks against the pool's
  for r in state['rounds']:
    assert 0 <= r['chosen_mean_gain'] <= 1 and 0 <= r['pool_mean_gain'] <= 1
  # margin picks the least confident points: the highest gains
  assert state_m['rounds'][0]['chosen_mean_gain'] >= (
      state_m['rounds'][0]['pool_mean_gain'])
  c.active.m_over = 'batch'
  with pytest.raises(ConfigError, match="unknown active.m_over 'batch'; "
                     'valid choices: pool, remaining, round'):
    active_distillation.run(c, str(tmp_path / 'other'))


def test_a_cifar10_teacher_trained_by_epochs():
  """teacher_epochs replaces the default 300-step CIFAR-10 teacher (the
  regime's rad_m_cifar10 table); anywhere else it is a one-line error."""
  from configs import active_distill  # pylint: disable=g-import-not-at-top
  c = active_distill.get_config('dataset=cifar10,teacher_epochs=30')
  assert c.teacher.config.total_epochs == 30.0
  assert active_distill.get_config(
      'dataset=cifar10').teacher.config.total_steps == 300
  for bad in ('dataset=mnist5k,teacher_epochs=3',
              'dataset=cifar10,teacher_epochs=-1'):
    with pytest.raises(ConfigError, match='teacher_epochs'):
      active_distill.get_config(bad)
