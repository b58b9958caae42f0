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


def fit_confidence(options, probs_v, labels_v):
  """Per-example state: the teacher's confidence ** exponent (nothing to
  fit on validation)."""
  assert len(probs_v) == len(labels_v)
  return methods.Fitted(
      lambda probs, xp: {'confidence': (probs.max(-1) ** options[
          'exponent']).astype(np.float32)},
      lambda state, probs: {'confidence_mean': float(
          state['confidence'].mean())})


def confidence_ce(student_out, teacher_targets, batch, *, power):
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
                   options=dict(power=1.0), fit=fit_confidence,
                   fit_options=dict(exponent=2.0))(confidence_ce)
  yield 'test_confidence'
  methods.METHODS.pop('test_confidence')


@pytest.mark.slow
def test_a_method_added_in_one_file_runs_end_to_end(registered, tmp_path):
  c = digits_distill.get_config('method=vanilla,runlocal')
  c.method = registered
  summary = distillation.run(c, str(tmp_path))
  assert summary['student/step'] == 2
  assert 0 < summary['fit/confidence_mean'] <= 1
  method = methods.get(registered)
  assert method.needs_teacher and method.online


def test_capabilities_come_from_the_registry(registered):
  assert registered in methods.names(online=True)
  assert 'vanilla' in methods.names(online=True)
  assert 'supervised' not in methods.names(online=True)
  assert methods.get('slam').fit is methods.fit_slam
  assert not methods.get('supervised').needs_teacher
  with pytest.raises(ConfigError, match='valid choices'):
    methods.get('no_such_method')
  with pytest.raises(ValueError, match='twice'):
    methods.register(registered, options=dict(power=1.0))(confidence_ce)


def test_the_entry_holds_the_options_of_its_loss_and_fit(registered):
  method = methods.get(registered)
  assert method.options == {'power': 1.0}
  assert method.fit_options == {'exponent': 2.0}
  kw = dict(methods.method_options(), exponent=3.0)
  assert method.options_of(kw) == ({'power': 1.0}, {'exponent': 3.0})
  with pytest.raises(ConfigError, match="method_kw.normalize=True is not an "
                     "option of method 'test_confidence'; its options: "
                     "power, exponent"):
    method.options_of({'normalize': True})


@pytest.mark.parametrize('method,teacher,message', [
    ('supervised', 'none', None),
    ('vanilla', 'none', "method 'vanilla' learns from a teacher: give the "
                        'config a teacher block'),
    ('supervised', 'cached', "method 'supervised' does not learn from a "
                             'teacher; valid choices: forward_kl, hard, jsd, '
                             'pseudo_label, reverse_kl, slam, taylor_ce, '),
    ('slam', 'cached', None),
    ('vanilla', 'online', None),
    ('supervised', 'online', None),
    ('weighted', 'online', None),
    ('slam', 'online', None),
])
def test_the_teacher_check_is_the_entrys(method, teacher, message):
  """Trainer ('none'), the pipeline and active loop ('cached') and online
  distillation ask the entry; each refusal is one line."""
  if message is None:
    methods.get(method).check_teacher(teacher)
    return
  with pytest.raises(ConfigError, match=message):
    methods.get(method).check_teacher(teacher)


def test_an_online_lm_refuses_a_method_with_a_fit_naming_the_ones_without(
    registered):
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  c = guide_lm.get_config('method=vanilla,runlocal')
  c.method = registered
  with pytest.raises(ConfigError, match=(
      "method 'test_confidence' fits per-example state on a classifier's "
      'validation outputs; a language model distills online with forward_kl, '
      'hard, jsd, ')):
    distillation.run_online(c, '/nonexistent')


@pytest.mark.parametrize('name,kw', [
    ('weighted', {}), ('weighted', {'weight_mode': 'debiased'}),
    ('slam', {}), ('slam', {'k': 'per_example', 'alpha_floor': 0.3})])
def test_the_fit_online_gives_the_cached_state_of_the_same_outputs(name, kw):
  """The state the student's step computes from the teacher's logits
  (online) is the state the cached pipeline computes from them."""
  rng = np.random.default_rng(0)
  logits_v = rng.normal(size=(400, 10)).astype(np.float32) * 3
  labels_v = np.where(rng.random(400) < 0.6, logits_v.argmax(-1),
                      rng.integers(0, 10, 400))
  logits_u = rng.normal(size=(64, 10)).astype(np.float32) * 3
  method = methods.get(name)
  kw = dict(methods.method_options(), **kw)
  probs = lambda x: np.asarray(jax.nn.softmax(x))
  cached, _ = method.fit_state(kw, probs(logits_v), labels_v,
                               probs(logits_u))
  state_of, stats = method.fit_online(kw, probs(logits_v), labels_v)
  online = jax.jit(state_of)(logits_u)
  assert stats and set(online) == set(cached)
  for key in cached:
    assert online[key].shape == cached[key].shape
    np.testing.assert_allclose(online[key], cached[key], atol=1e-6)
  assert len(np.unique(cached[next(iter(cached))])) > 1


@pytest.mark.slow
def test_a_classifier_distills_online_with_a_fitted_method(tmp_path):
  """weighted online: the teacher labels each augmented view and w(x) is
  the fit's map of that view's outputs, fitted on validation first."""
  c = digits_distill.get_config('method=weighted,runlocal')
  c.distill.online = True
  summary = distillation.run(c, str(tmp_path))
  assert summary['student/step'] >= 1
  assert 0 < summary['fit/weight_mean'] <= 1
  assert 0 < summary['teacher/validation_accuracy'] <= 1



def test_options_are_declared_once_and_the_loss_takes_them():
  """A built-in method's options (loss and fit) are core/defaults.py's
  declaration, held by its entry; its loss's keywords are those options
  (no second copy of the defaults), and a loss that takes others is
  refused at registration."""
  import inspect  # pylint: disable=g-import-not-at-top
  from core import defaults  # pylint: disable=g-import-not-at-top
  builtin = {n for n in methods.METHODS if not n.startswith('test_')}
  assert builtin == set(defaults.METHOD_OPTIONS)
  for name in builtin:
    method = methods.get(name)
    declared = defaults.METHOD_OPTIONS[name]
    assert method.options == declared['loss'], name
    assert method.fit_options == declared.get('fit', {}), name
    params = inspect.signature(method.loss).parameters
    assert all(p.default is inspect.Parameter.empty for p in params.values())
  assert methods.get('slam').fit_options == dict(
      alpha_floor=1e-3, k='global', k_delta=0.05, k_bins=5)
  with pytest.raises(ValueError, match='declared options'):
    methods.register('test_bad', options=dict(power=1.0))(
        lambda student_out, teacher_targets, batch, *, other: None)
  assert 'test_bad' not in methods.METHODS


@pytest.mark.parametrize('method,kw,expected', [
    ('slam', {'normalize': True}, ({'eps': 1e-7, 'normalize': True,
                                    'target': 'soft'},
                                   {'alpha_floor': 1e-3, 'k': 'global',
                                    'k_delta': 0.05, 'k_bins': 5})),
    ('slam', {'alpha_floor': 0.6}, ({'eps': 1e-7, 'normalize': False,
                                     'target': 'soft'},
                                    {'alpha_floor': 0.6, 'k': 'global',
                                     'k_delta': 0.05, 'k_bins': 5})),
    ('vanilla', {'normalize': False}, ({'temperature': 1.0}, {})),
    ('weighted', {'weight_mode': 'debiased'}, (
        {'soft': True, 'temperature': 1.0}, {'weight_mode': 'debiased'})),
])
def test_each_method_gets_its_own_options(method, kw, expected):
  from core import defaults  # pylint: disable=g-import-not-at-top
  options = dict(defaults.method_options(), **kw)
  assert methods.get(method).options_of(options) == expected


def test_another_methods_option_set_is_one_line():
  with pytest.raises(ConfigError, match="method_kw.normalize=True is not an "
                     "option of method 'vanilla'; its options: temperature"):
    methods.get('vanilla').options_of({'normalize': True})
  with pytest.raises(ConfigError, match="method_kw.alpha_floor=0.6 is not an "
                     "option of method 'weighted'; its options: soft, "
                     'temperature, weight_mode'):
    methods.get('weighted').options_of({'alpha_floor': 0.6})


@pytest.mark.parametrize('key,value,valid', [
    ('k', 'local', 'global, per_example'),
    ('target', 'onehot', 'hard, soft, topk'),
])
def test_the_method_checks_its_fit_options(key, value, valid):
  with pytest.raises(ConfigError, match=f'method_kw.{key}.*valid choices: '
                     + valid):
    methods.get('slam').options_of({key: value})
  with pytest.raises(ConfigError, match='method_kw.weight_mode.*valid '
                     'choices: debiased, isotonic'):
    methods.get('weighted').options_of({'weight_mode': 'robust'})


def test_a_fit_option_spelled_in_the_distill_block_names_where_it_moved():
  """An old table row ('slam[distill.alpha_floor=0.6]') still sets it; a
  config whose distill block still holds one, or a --config.distill.KEY
  flag, is one line naming method_kw.KEY."""
  from configs import common  # pylint: disable=g-import-not-at-top
  c = digits_distill.get_config('method=slam,runlocal')
  common.override(c, {'distill.alpha_floor': 0.6, 'distill.k': 'per_example'})
  assert c.method_kw.alpha_floor == 0.6 and c.method_kw.k == 'per_example'
  assert 'alpha_floor' not in c.distill
  with c.distill.unlocked():
    c.distill.k_delta = 0.2
  with pytest.raises(ConfigError, match=r'distill.k_delta is now '
                     r'method_kw.k_delta .*set method_kw.k_delta=0.2'):
    distillation.check(c)
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  from distill import config_lib  # pylint: disable=g-import-not-at-top
  line = config_lib.explain_flag_error(
      [f'--config={REPO}/configs/digits_distill.py:method=slam',
       '--config.distill.alpha_floor=0.6'], KeyError('distill.alpha_floor'))
  assert line == ('error: --config.distill.alpha_floor is now '
                  "--config.method_kw.alpha_floor (a method's fit options "
                  'are with its other options)')


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_a_workdir_made_before_the_fit_options_moved_resumes(tmp_path):
  """A workdir whose config.json holds distill.alpha_floor (the layout
  before the move) is the same run as today's config with
  method_kw.alpha_floor; the student stage's too (no distill block)."""
  from distill import files, workdir  # pylint: disable=g-import-not-at-top
  c = digits_distill.get_config('method=slam,runlocal')
  c.method_kw.alpha_floor = 0.6
  for config in (c, distillation.student_config(c)):
    tree = workdir.resolved(config)
    old = workdir.legacy_layout(tree)
    assert 'alpha_floor' not in old['method_kw'] or 'distill' not in old
    assert not workdir.differences(workdir.current_layout(old), tree)
  old = workdir.legacy_layout(workdir.resolved(c))
  assert old['distill']['alpha_floor'] == 0.6
  run = str(tmp_path / 'run')
  files.makedirs(run)
  files.write_json(workdir.identity_files(run)[0], old)
  with workdir.claim(run, c):
    pass
  c.method_kw.alpha_floor = 0.5
  with pytest.raises(ConfigError, match='method_kw.alpha_floor is 0.6 there, '
                     '0.5 here'):
    with workdir.claim(run, c):
      pass
