"""A new method is one registry entry: its loss and its fit, registered in
this file alone, run through the whole distillation pipeline."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import digits_distill
from core.errors import ConfigError
from distill import distillation, methods


def fit_confidence(d, probs_v, labels_v, probs_u):
  """Per-example state: the teacher's confidence, squared."""
  del d, labels_v
  conf = probs_u.max(-1) ** 2
  assert len(probs_v) and conf.shape == (len(probs_u),)
  return {'confidence': conf.astype(np.float32)}, {
      'confidence_mean': float(conf.mean())}


def confidence_ce(student_out, teacher_targets, batch, power=1.0):
  """Hard-label CE weighted by the fitted confidence ** power."""
  y = jnp.argmax(teacher_targets['logits'], -1)
  ce = optax.softmax_cross_entropy_with_integer_labels(student_out, y)
  w = teacher_targets['confidence'] ** power * batch['mask']
  loss, metrics = methods.finish(ce, w, student_out, teacher_targets, batch)
  metrics['confidence'] = (jnp.sum(w), jnp.sum(batch['mask']))
  return loss, metrics


@pytest.fixture(scope='module')
def registered():
  methods.register('test_confidence', needs_teacher=True,
                   fit=fit_confidence)(confidence_ce)
  yield 'test_confidence'
  for table in (methods.SPECS, methods.METHODS):
    table.pop('test_confidence')
  methods.DISTILLATION.discard('test_confidence')


def test_a_method_added_in_one_file_runs_end_to_end(registered, tmp_path):
  c = digits_distill.get_config('method=vanilla,runlocal')
  c.method = registered
  summary = distillation.run(c, str(tmp_path))
  assert summary['student/step'] == 2
  assert 0 < summary['fit/confidence_mean'] <= 1
  spec = methods.spec(registered)
  assert spec.needs_teacher and not spec.online


def test_capabilities_come_from_the_registry(registered):
  assert registered not in methods.online_methods()
  assert 'vanilla' in methods.online_methods()
  assert methods.spec('slam').fit is methods.fit_slam
  assert not methods.spec('supervised').needs_teacher
  with pytest.raises(ConfigError, match='valid choices'):
    methods.spec('no_such_method')
  with pytest.raises(ValueError, match='twice'):
    methods.register(registered)(confidence_ce)


def test_online_refuses_a_method_with_a_fit_naming_the_online_ones(
    registered):
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  c = guide_lm.get_config('method=vanilla,runlocal')
  c.method = registered
  with pytest.raises(ConfigError, match='online distillation supports '
                     + ', '.join(methods.online_methods())):
    distillation.run_online(c, '/nonexistent')



def test_config_options_are_the_losses_keyword_defaults():
  """core/defaults.py's table (what config.method_kw offers) equals the
  keyword defaults of every built-in method's loss."""
  import inspect  # pylint: disable=g-import-not-at-top
  from core import defaults  # pylint: disable=g-import-not-at-top
  builtin = {n for n in methods.SPECS if not n.startswith('test_')}
  assert builtin == set(defaults.METHOD_OPTIONS)
  for name in builtin:
    params = inspect.signature(methods.get(name)).parameters
    kw = {k: p.default for k, p in params.items()
          if p.default is not inspect.Parameter.empty}
    assert kw == defaults.METHOD_OPTIONS[name], name


@pytest.mark.parametrize('method,kw,expected', [
    ('slam', {'normalize': True}, {'eps': 1e-7, 'normalize': True,
                                   'target': 'soft'}),
    ('vanilla', {'normalize': False}, {'temperature': 1.0}),  # at default
])
def test_each_method_gets_its_own_options(method, kw, expected):
  from core import defaults  # pylint: disable=g-import-not-at-top
  options = dict(defaults.method_options(), **kw)
  assert methods.options_for(method, options) == expected


def test_another_methods_option_set_is_one_line():
  with pytest.raises(ConfigError, match="method_kw.normalize=True is not an "
                     "option of method 'vanilla'; its options: temperature"):
    methods.options_for('vanilla', {'normalize': True})


def test_the_command_line_sets_a_method_option(tmp_path):
  """`--config.method_kw.normalize=True` (docs/methods/slam.md's example) is a
  known key now."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.main',
       '--config=configs/digits_distill.py:method=slam,runlocal',
       f'--workdir={tmp_path}', '--config.method_kw.normalize=True'],
      cwd=REPO, capture_output=True,
      text=True, timeout=300, check=False)
  assert 'unknown config key' not in proc.stderr
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(tmp_path / 'student' / 'config.json') as f:
    assert json.load(f)['method_kw']['normalize'] is True


def _slam_optimum(ys, alpha, k, steps=1500, **kw):
  """The student distribution minimising SLaM's loss (options `kw`) for one
  example with teacher distribution `ys` (gradient descent on the
  logits)."""
  ys = jnp.asarray(ys)[None]
  targets = {'logits': jnp.log(ys), 'alpha': jnp.array([alpha]),
             'k': jnp.array([k])}
  batch = {'mask': jnp.ones(1)}
  grad = jax.jit(jax.grad(lambda l: methods.slam(l, targets, batch,
                                                 **kw)[0]))
  logits = jnp.zeros_like(ys)
  for _ in range(steps):
    logits = logits - 0.5 * grad(logits)
  return np.asarray(jax.nn.softmax(logits))[0]


@pytest.mark.parametrize('ys,alpha,stays', [
    ((0.9, 0.05, 0.03, 0.02), 0.8, True),    # peaked teacher, alpha > 1/2
    ((0.9, 0.05, 0.03, 0.02), 0.6, True),
    ((0.9, 0.05, 0.03, 0.02), 0.4, False),   # alpha < 1/2: it leaves
    ((0.5, 0.2, 0.15, 0.15), 0.6, False),    # 30% of the mass outside top-2
])
def test_slam_optimum_stays_in_the_teachers_topk_only_in_its_regime(
    ys, alpha, stays):
  """The regime docs/methods/slam.md describes: the optimum of the loss
  keeps the student's top class inside the teacher's top-k when alpha > 1/2
  and the teacher is peaked, and leaves it otherwise."""
  f = _slam_optimum(ys, alpha, k=2)
  top2 = set(np.argsort(ys)[::-1][:2])
  assert (int(f.argmax()) in top2) == stays, f


def test_slam_optimum_is_the_teachers_hard_label_below_alpha_one():
  """What the CIFAR-10 regime study found (docs/methods/slam.md): with alpha
  between 1/2 and about 0.9, the per-example optimum of the loss is close
  to a one-hot on the teacher's top class (a hard label: the soft labels'
  other classes are dropped), where vanilla's (alpha = 1) is the teacher's
  distribution itself."""
  ys = (0.7, 0.15, 0.1, 0.05)
  for alpha in (0.6, 0.8):
    f = _slam_optimum(ys, alpha, k=4)
    assert f.argmax() == 0 and f[0] > 0.95, (alpha, f)
  np.testing.assert_allclose(_slam_optimum(ys, 1.0, k=4), ys, atol=0.02)


def test_slam_topk_target_moves_the_optimum_back_into_the_topk():
  """Where plain SLaM's optimum leaves the top-k because of the teacher's
  mass outside it (the regime test above), target='topk' keeps it inside.
  (The alpha-floor variant is the regime test's alpha > 1/2 cases.)"""
  ys = (0.5, 0.2, 0.15, 0.15)
  top2 = set(np.argsort(ys)[::-1][:2])
  assert int(_slam_optimum(ys, 0.6, k=2).argmax()) not in top2
  assert int(_slam_optimum(ys, 0.6, k=2, target='topk').argmax()) in top2


def test_slam_variants_golden_values():
  """alpha = 1 makes the mixture the student itself (soft cross-entropy to
  the teacher); target='topk' with k = all classes is the soft target."""
  logits = jnp.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, -0.4]])
  t_logits = jnp.array([[1.0, 0.0, -2.0, 0.5], [0.0, 1.5, 0.2, 0.1]])
  targets = {'logits': t_logits, 'alpha': jnp.array([0.7, 0.3]),
             'k': jnp.array([2, 3])}
  batch = {'mask': jnp.ones(2)}
  ce = float(jnp.mean(-jnp.sum(jax.nn.softmax(t_logits) *
                               jax.nn.log_softmax(logits), -1)))
  ones = {**targets, 'alpha': jnp.ones(2)}
  assert float(methods.slam(logits, ones, batch)[0]) == pytest.approx(
      ce, rel=1e-5)
  everything = {**targets, 'k': jnp.array([4, 4])}
  assert float(methods.slam(logits, everything, batch, target='topk')[0]) \
      == pytest.approx(float(methods.slam(logits, everything, batch)[0]),
                       rel=1e-6)
  # target='hard': the teacher's argmax as a one-hot label (the theory's
  # form), by hand: -log(mix) of that class.
  f = np.asarray(jax.nn.softmax(logits))
  alpha, top1 = np.array([0.7, 0.3]), np.array([0, 1])
  ranks = np.argsort(np.argsort(-np.asarray(t_logits), -1), -1)
  mask = ranks < np.array([2, 3])[:, None]
  mix = alpha[:, None] * f + (1 - alpha[:, None]) * (1 - f) * mask
  hard = -np.log(mix[np.arange(2), top1]).mean()
  assert float(methods.slam(logits, targets, batch, target='hard')[0]) == \
      pytest.approx(hard, rel=1e-5)
  with pytest.raises(ConfigError, match="valid choices: hard, soft, topk"):
    methods.slam(logits, targets, batch, target='onehot')


def test_slam_regime_stats():
  probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
  stats = methods.slam_regime_stats(np.array([0.8, 0.3]), np.array([1, 2]),
                                    probs)
  assert stats['alpha_below_half_fraction'] == 0.5
  assert stats['teacher_mass_outside_topk_mean'] == pytest.approx(
      (0.1 + 0.3) / 2)
  assert stats['k_fraction_1'] == stats['k_fraction_2'] == 0.5


def test_one_registration_helper_for_methods_residuals_and_strategies():
  from core import registry  # pylint: disable=g-import-not-at-top
  from distill import active  # pylint: disable=g-import-not-at-top
  from models import residual  # pylint: disable=g-import-not-at-top
  for register, name in ((methods.register, 'vanilla'),
                         (residual.register, 'standard'),
                         (active.register, 'rad')):
    assert register.__module__ in (registry.__name__, methods.__name__)
    with pytest.raises(ValueError, match='registered twice'):
      register(name)(lambda *a: None)
  table = {}
  registry.registrar(table, 'thing')('x')(len)
  assert table == {'x': len}
