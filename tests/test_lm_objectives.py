"""The LM distillation objectives (forward_kl, reverse_kl, jsd): golden
values computed by hand in numpy, their limits, truncated teachers against
the dense computation on the kept support, and their options."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal
from core.errors import ConfigError
from distill import divergences, methods, teacher_cache

OBJECTIVES = ('forward_kl', 'reverse_kl', 'jsd')

STUDENT = np.array([[1.0, 0.0, -1.0, 0.5], [0.5, 0.5, 0.0, -2.0],
                    [-1.0, 2.0, 0.0, 0.3]], np.float32)
TEACHER = np.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 1.0, 0.5],
                    [0.0, 0.0, 4.0, 1.0]], np.float32)
LABELS = np.array([0, 3, 2])


def np_log_softmax(x, t=1.0):
  x = np.asarray(x, np.float64) / t
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_div(name, p, q, beta=0.5):
  """Dense divergence by hand, rows of probabilities (0 log 0 = 0)."""
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)

  def kl(a, b):
    safe = np.where(a > 0, a, 1.0)
    return np.where(a > 0, a * (np.log(safe) - np.log(b)), 0.0).sum(-1)
  if name == 'forward_kl':
    return kl(p, q)
  if name == 'reverse_kl':
    return kl(q, p)
  m = beta * p + (1 - beta) * q
  return beta * kl(p, m) + (1 - beta) * kl(q, m)


def np_objective(name, student, teacher, labels, alpha=1.0, t=1.0,
                 beta=0.5, weights=None):
  p = np.exp(np_log_softmax(teacher, t))
  q = np.exp(np_log_softmax(student, t))
  kd = np_div(name, p, q, beta) * t ** 2
  ce = -np.take_along_axis(np_log_softmax(student), labels[..., None],
                           -1)[..., 0]
  per = alpha * kd + (1 - alpha) * ce
  w = np.ones(per.shape) if weights is None else weights
  return (per * w).sum() / w.sum()


def call(name, student=STUDENT, teacher=TEACHER, batch=None, **kw):
  batch = batch if batch is not None else {
      'label': jnp.asarray(LABELS), 'mask': jnp.ones(len(student))}
  return getattr(methods, name)(jnp.asarray(student),
                                {'logits': jnp.asarray(teacher)}, batch, **kw)


# --- golden values -------------------------------------------------------------
GOLDEN = {   # alpha=1, T=1; alpha=0.3, T=2 (beta=0.5 for jsd)
    'forward_kl': (0.863529, 1.893981),
    'reverse_kl': (1.257561, 1.937411),
    'jsd': (0.202271, 1.618157),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', OBJECTIVES)
def test_golden_values_on_classification_logits(name):
  loss, metrics = call(name)
  ref = np_objective(name, STUDENT, TEACHER, LABELS)
  assert float(loss) == pytest.approx(ref, rel=1e-5)
  assert float(loss) == pytest.approx(GOLDEN[name][0], abs=1e-5)
  assert 'ce' not in metrics                       # alpha = 1: no labels read
  loss, metrics = call(name, alpha=0.3, temperature=2.0)
  ref = np_objective(name, STUDENT, TEACHER, LABELS, alpha=0.3, t=2.0)
  assert float(loss) == pytest.approx(ref, rel=1e-5)
  assert float(loss) == pytest.approx(GOLDEN[name][1], abs=1e-5)
  kd, count = metrics['kd']
  ce, _ = metrics['ce']
  assert float(count) == 3.0
  assert float(loss) == pytest.approx(float(0.3 * kd + 0.7 * ce) / 3,
                                      rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', OBJECTIVES)
def test_lm_logits_exclude_padding_and_normalise_by_real_tokens(name):
  rng = np.random.default_rng(0)
  student = rng.normal(size=(2, 5, 7)).astype(np.float32)
  teacher = rng.normal(size=(2, 5, 7)).astype(np.float32) * 2
  targets = rng.integers(0, 7, size=(2, 5))
  target_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.float32)
  batch = {'targets': jnp.asarray(targets), 'mask': jnp.ones(2),
           'target_mask': jnp.asarray(target_mask)}
  loss, metrics = call(name, student, teacher, batch, alpha=0.4,
                       temperature=1.5, beta=0.3) if name == 'jsd' else call(
                           name, student, teacher, batch, alpha=0.4,
                           temperature=1.5)
  ref = np_objective(name, student, teacher, targets, alpha=0.4, t=1.5,
                     beta=0.3, weights=target_mask)
  assert float(loss) == pytest.approx(ref, rel=1e-5)
  assert float(metrics['loss'][1]) == 7.0          # real tokens
  # The padded positions' logits and targets do not count.
  student[1, 3:] = 50.0
  teacher[1, 3:] = -50.0
  batch['targets'] = batch['targets'].at[1, 3:].set(0)
  again, _ = call(name, student, teacher, batch, alpha=0.4, temperature=1.5,
                  **({'beta': 0.3} if name == 'jsd' else {}))
  assert float(again) == pytest.approx(float(loss), rel=1e-6)


def test_forward_kl_is_vanilla_minus_the_teachers_entropy():
  for t in (1.0, 3.0):
    fkl, _ = call('forward_kl', temperature=t)
    van, _ = methods.vanilla(jnp.asarray(STUDENT),
                             {'logits': jnp.asarray(TEACHER)},
                             {'mask': jnp.ones(3)}, temperature=t)
    p = np.exp(np_log_softmax(TEACHER, t))
    entropy = -(p * np.log(p)).sum(-1).mean() * t ** 2
    assert float(fkl) == pytest.approx(float(van) - entropy, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('name', OBJECTIVES)
def test_alpha_zero_is_supervised_training(name):
  batch = {'label': jnp.asarray(LABELS), 'mask': jnp.array([1.0, 1.0, 0.0])}
  sup = lambda s: methods.supervised(s, None, batch)[0]
  obj = lambda s: call(name, s, batch=batch, alpha=0.0, temperature=2.0)[0]
  s = jnp.asarray(STUDENT)
  assert float(obj(s)) == pytest.approx(float(sup(s)), rel=1e-6)
  np.testing.assert_allclose(jax.grad(obj)(s), jax.grad(sup)(s), rtol=1e-6)
  # and an LM's tokens, padding excluded
  lm = {'targets': jnp.asarray(np.stack([LABELS, LABELS])),
        'mask': jnp.ones(2), 'target_mask': jnp.array([[1., 1, 1], [1, 0, 0]])}
  s3 = jnp.stack([s, -s])
  t3 = jnp.stack([TEACHER, TEACHER])
  assert float(call(name, s3, t3, lm, alpha=0.0)[0]) == pytest.approx(
      float(methods.supervised(s3, None, lm)[0]), rel=1e-6)


@pytest.mark.parametrize('name', OBJECTIVES)
def test_dense_gradients_equal_central_differences_in_float64(name):
  """The dense divergences are written for few passes over the logits,
  two with their gradients by hand (divergences._reverse_kl, _jsd): the
  gradients with respect to both logits, at a temperature and a beta other
  than 1/2, against central differences of the numpy divergence in
  float64; a teacher with a -inf logit (P = 0 there) included where the
  divergence stays finite."""
  rng = np.random.default_rng(3)
  student = 2 * rng.normal(size=(5, 7))
  teacher = 2 * rng.normal(size=(5, 7))
  if name != 'reverse_kl':
    teacher[1, 4] = -np.inf
  temperature, beta = 1.7, 0.3

  def np_value(t, s):
    p = np.exp(np_log_softmax(t, temperature))
    q = np.exp(np_log_softmax(s, temperature))
    return np_div(name, p, q, beta).sum()

  def numeric(f, x, eps=1e-5):
    grad = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
      if np.isfinite(x[i]):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        grad[i] = (f(up) - f(down)) / (2 * eps)
    return grad

  value = lambda t, s: jnp.sum(divergences.divergence(
      name, t, s, temperature, beta)[0])
  gt, gs = jax.grad(value, (0, 1))(jnp.asarray(teacher, jnp.float32),
                                   jnp.asarray(student, jnp.float32))
  assert float(value(jnp.asarray(teacher, jnp.float32),
                     jnp.asarray(student, jnp.float32))) == pytest.approx(
                         np_value(teacher, student), rel=1e-5)
  np.testing.assert_allclose(
      gs, numeric(lambda s: np_value(teacher, s), student), atol=2e-6)
  np.testing.assert_allclose(
      np.where(np.isfinite(teacher), gt, 0.0),
      numeric(lambda t: np_value(t, student), teacher), atol=2e-6)


def test_jsd_limits_are_the_two_kls():
  """GKD's convention, P the teacher and Q the student:
  JSD(beta) = beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P +
  (1 - beta) Q; JSD / beta -> KL(P || Q), forward_kl, as beta -> 0, and
  JSD / (1 - beta) -> KL(Q || P), reverse_kl, as beta -> 1."""
  fkl = float(call('forward_kl')[0])
  rkl = float(call('reverse_kl')[0])
  for beta, limit in ((1e-3, fkl), (1 - 1e-3, rkl)):
    scale = beta if beta < 0.5 else 1 - beta
    value = float(call('jsd', beta=beta)[0]) / scale
    assert value == pytest.approx(limit, rel=5e-3), beta
  assert fkl != pytest.approx(rkl, rel=0.05)    # the limits are distinct
  # symmetric at beta = 1/2 (swap the roles by hand)
  p, q = np.exp(np_log_softmax(TEACHER)), np.exp(np_log_softmax(STUDENT))
  np.testing.assert_allclose(np_div('jsd', p, q), np_div('jsd', q, p))


def test_alpha_below_one_needs_labels_one_line():
  batch = {'mask': jnp.ones(3)}            # e.g. an unlabeled part
  loss, _ = call('jsd', batch=batch)
  assert np.isfinite(float(loss))
  with pytest.raises(ConfigError, match=r"method_kw.alpha=0.5: the cross-"
                     r"entropy term needs labels and this batch has none"):
    call('jsd', batch=batch, alpha=0.5)


@pytest.mark.parametrize('name', OBJECTIVES)
def test_the_cached_pipeline_refuses_what_it_cannot_serve(name):
  """The cached pipelines train the student on the unlabeled part (its
  labels must not be read) from cached, maybe top-k, logits."""
  method = methods.get(name)
  kw = methods.method_options()
  method.check_teacher('cached', kw, cache_topk=0)
  method.check_teacher('online', dict(kw, alpha=0.5))
  with pytest.raises(ConfigError, match=r'method_kw.alpha=0.5: the cross-'
                     r"entropy term needs labels, and the student's unlabeled"
                     ' part has none'):
    method.check_teacher('cached', dict(kw, alpha=0.5))
  topk = dict(kw, teacher_top_k=5, truncation='other_bucket')
  method.check_teacher('cached', topk, cache_topk=0)
  with pytest.raises(ConfigError, match="truncation='other_bucket' needs the "
                     "teacher's dropped mass.*valid choices with a top-k "
                     'cache: renormalize'):
    method.check_teacher('cached', topk, cache_topk=10)
  with pytest.raises(ConfigError, match='teacher_top_k=20 exceeds '
                     'distill.cache_topk=10'):
    method.check_teacher('cached', dict(kw, teacher_top_k=20), cache_topk=10)


@pytest.mark.parametrize('key,value,message', [
    ('alpha', 1.5, r'method_kw.alpha=1.5 must be in \[0, 1\]'),
    ('temperature', 0.0, 'method_kw.temperature=0.0 must be > 0'),
    ('teacher_top_k', -1, 'method_kw.teacher_top_k=-1 must be an integer'),
    ('teacher_top_k', 2.5, 'method_kw.teacher_top_k=2.5 must be an integer'),
    ('teacher_top_p', 0.0, r'method_kw.teacher_top_p=0.0 must be in \(0, 1\]'),
    ('truncation', 'drop', "unknown method_kw.truncation 'drop'; valid "
                           'choices: other_bucket, renormalize'),
    ('beta', 0.0, r'method_kw.beta=0.0 must be in \(0, 1\); its limits are '
                  r'the methods forward_kl \(beta -> 0\) and reverse_kl'),
    ('beta', 1.0, r'method_kw.beta=1.0 must be in \(0, 1\)'),
])
def test_bad_option_values_are_one_line(key, value, message):
  name = 'jsd' if key == 'beta' else 'forward_kl'
  with pytest.raises(ConfigError, match=message) as e:
    methods.get(name).options_of({key: value})
  assert '\n' not in str(e.value)


def test_the_entries_and_their_options():
  for name in OBJECTIVES:
    method = methods.get(name)
    assert method.needs_teacher and method.fit is None and method.online
    assert name in methods.names(online=True)
  assert methods.get('jsd').options == dict(
      alpha=1.0, temperature=1.0, beta=0.5, teacher_top_k=0,
      teacher_top_p=1.0, truncation='renormalize')
  assert set(methods.get('forward_kl').options) == set(
      methods.get('jsd').options) - {'beta'}
  with pytest.raises(ConfigError, match="method_kw.beta=0.3 is not an option "
                     "of method 'forward_kl'"):
    methods.get('forward_kl').options_of({'beta': 0.3})


# --- truncated teachers ----------------------------------------------------------
@pytest.mark.parametrize('block', [1 << 19, 36])   # one block; 3 rows each, padded
def test_threshold_masks_equal_a_sort(monkeypatch, block):
  """top_k_mask is x >= the k-th largest (lax.top_k's, by a sort here),
  ties, -inf, -0.0 and bf16 included; top_p_mask is the nucleus by a sort
  and cumsum."""
  monkeypatch.setattr(divergences, '_BLOCK_ELEMENTS', block)
  x = np.array(normal(3, (2, 7, 11), 2.0))
  x[0, 0, :5] = 1.5                                        # ties at the k-th
  x[0, 1, 3:] = -np.inf
  x[1, 2, :] = 0.0
  x[1, 2, ::2] = -0.0
  # Wrapped anew: a jit of the module's function would reuse the trace of
  # the other block size. k traced: one compile per dtype.
  top_k_mask = jax.jit(lambda x, k: divergences.top_k_mask(x, k))
  for dtype in (jnp.float32, jnp.bfloat16):
    xs = jnp.asarray(x, dtype)
    values = np.asarray(xs.astype(jnp.float32))     # bf16 exactly in f32
    for k in (1, 3, 5, 11):
      kth = np.sort(values, -1)[..., -k:][..., :1]  # lax.top_k's k-th
      np.testing.assert_array_equal(top_k_mask(xs, k), values >= kth)
  p = np.asarray(jax.nn.softmax(jnp.asarray(x)))
  top_p_mask = jax.jit(lambda p, top_p: divergences.top_p_mask(p, top_p))
  for top_p in (0.05, 0.5, 0.9, 0.999):
    ordered = -np.sort(-p, -1)
    before = np.cumsum(ordered, -1) - ordered
    n = np.maximum((before < top_p).sum(-1, keepdims=True), 1)
    smallest = np.take_along_axis(ordered, n - 1, -1)
    np.testing.assert_array_equal(top_p_mask(jnp.asarray(p), top_p),
                                  p >= smallest)


def test_top_p_keeps_the_nucleus_and_top_k_the_k_largest():
  log_p = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  for top_p, kept in ((0.8, [0, 1, 0, 1]), (0.81, [0, 1, 1, 1]),
                      (0.1, [0, 1, 0, 0]), (1.0, None)):
    keep = divergences.support(log_p, top_p=top_p)
    if kept is None:
      assert keep is None
    else:
      np.testing.assert_array_equal(keep[0], np.array(kept, bool))
  np.testing.assert_array_equal(divergences.support(log_p, top_k=2)[0],
                                [False, True, False, True])
  assert divergences.support(log_p, top_k=4) is None       # all of them
  # both: the intersection
  np.testing.assert_array_equal(
      divergences.support(log_p, top_k=2, top_p=0.4)[0],
      [False, True, False, False])


def np_truncated(name, student, teacher, keep, truncation, t=1.0, beta=0.5):
  """The dense computation on the kept support, per row, by hand."""
  out = []
  for s, tt, k in zip(np_log_softmax(student, t), np_log_softmax(teacher, t),
                      keep):
    p, q = np.exp(tt), np.exp(s)
    if truncation == 'other_bucket':
      pk = np.append(p[k], p[~k].sum())
      qk = np.append(q[k], q[~k].sum())
    elif name == 'reverse_kl':          # both on S, renormalised
      pk, qk = p[k] / p[k].sum(), q[k] / q[k].sum()
    else:                               # the teacher on S, zeros elsewhere
      pk, qk = np.where(k, p, 0.0) / p[k].sum(), q
    out.append(float(np_div(name, pk[None], qk[None], beta)[0]) * t ** 2)
  return np.mean(out)


@pytest.mark.slow
@pytest.mark.parametrize('truncation', divergences.TRUNCATIONS)
@pytest.mark.parametrize('name', OBJECTIVES)
def test_truncated_teacher_is_the_dense_computation_on_the_kept_support(
    name, truncation):
  rng = np.random.default_rng(1)
  student = rng.normal(size=(6, 9)).astype(np.float32)
  teacher = rng.normal(size=(6, 9)).astype(np.float32) * 2
  for top_k, top_p in ((3, 1.0), (0, 0.7), (4, 0.6), (1, 1.0)):
    loss, metrics = call(name, student, teacher, {'mask': jnp.ones(6)},
                         temperature=1.5, teacher_top_k=top_k,
                         teacher_top_p=top_p, truncation=truncation)
    lp = np_log_softmax(teacher, 1.5)
    p = np.exp(lp)
    keep = np.ones(p.shape, bool)
    if top_k:
      keep &= lp >= np.sort(lp, -1)[:, -top_k][:, None]
    if top_p < 1:
      order = -np.sort(-p, -1)
      before = np.cumsum(order, -1) - order
      n = np.maximum((before < top_p).sum(-1), 1)
      keep &= p >= order[np.arange(6), n - 1][:, None]
    ref = np_truncated(name, student, teacher, keep, truncation, t=1.5)
    assert float(loss) == pytest.approx(ref, rel=2e-5, abs=1e-6), (top_k,
                                                                    top_p)
    mass, count = metrics['teacher_kept_mass']
    assert float(mass / count) == pytest.approx(
        (p * keep).sum(-1).mean(), rel=1e-5)
  # Truncation off (top_k = V, top_p = 1) is the dense objective.
  dense, m = call(name, student, teacher, {'mask': jnp.ones(6)})
  whole, _ = call(name, student, teacher, {'mask': jnp.ones(6)},
                  teacher_top_k=9, truncation=truncation)
  assert float(whole) == pytest.approx(float(dense), rel=1e-6)
  assert 'teacher_kept_mass' not in m


@pytest.mark.parametrize('truncation', divergences.TRUNCATIONS)
@pytest.mark.parametrize('name', OBJECTIVES)
def test_exact_zeros_give_no_nan(name, truncation):
  """A truncated teacher has exact zeros; so has one whose logits are -inf
  (a masked vocabulary). Values and gradients stay finite, but for reverse
  KL where the teacher's probability is 0 and the student's is not
  (infinite, not NaN)."""
  batch = {'label': jnp.asarray(LABELS), 'mask': jnp.ones(3)}
  s = jnp.asarray(STUDENT)
  masked = TEACHER.copy()
  masked[:, 3] = -np.inf
  for teacher in (TEACHER, masked):
    f = lambda s, t=teacher: call(name, s, t, batch, alpha=0.5,
                                  temperature=2.0, teacher_top_k=2,
                                  truncation=truncation)[0]
    infinite = name == 'reverse_kl' and truncation == 'other_bucket' and (
        teacher is masked)       # row 2 drops only the -inf token: P = 0
    assert float(f(s)) == np.inf if infinite else np.isfinite(float(f(s)))
    if not infinite:
      assert np.all(np.isfinite(np.asarray(jax.grad(f)(s))))
  untruncated = lambda s: call(name, s, masked, batch)[0]
  if name == 'reverse_kl':
    assert float(untruncated(s)) == np.inf
  else:
    assert np.all(np.isfinite(np.asarray(jax.grad(untruncated)(s))))


def test_renormalized_reverse_kl_on_top_one_is_zero_and_other_bucket_is_not():
  """What the docs warn of: with renormalize, reverse_kl compares the two
  distributions on S only."""
  r, _ = call('reverse_kl', teacher_top_k=1)
  o, _ = call('reverse_kl', teacher_top_k=1, truncation='other_bucket')
  f, _ = call('forward_kl', teacher_top_k=1)
  assert float(r) == 0.0 and float(o) > 0.1
  # forward KL against a one-hot teacher: CE on the teacher's argmax
  assert float(f) == pytest.approx(float(methods.hard(
      jnp.asarray(STUDENT), {'logits': jnp.asarray(TEACHER)},
      {'mask': jnp.ones(3)})[0]), rel=1e-6)


@pytest.mark.parametrize('name', OBJECTIVES)
def test_the_cached_top_k_logits_give_the_truncated_objective(name):
  """distill.cache_topk=k keeps the top-k teacher logits (the rest filled
  low): teacher_top_k=k on them is the objective truncated to the full
  logits' top-k."""
  k = 2
  idx = np.argsort(-TEACHER, -1)[:, :k]
  cached = teacher_cache.densify_topk(np.take_along_axis(TEACHER, idx, -1),
                                      idx, TEACHER.shape[-1])
  full, _ = call(name, teacher=TEACHER, teacher_top_k=k, temperature=2.0)
  from_cache, _ = call(name, teacher=cached, teacher_top_k=k,
                       temperature=2.0)
  assert float(from_cache) == pytest.approx(float(full), rel=1e-6)


@pytest.mark.slow
def test_guide_lm_distills_online_with_an_objective(tmp_path):
  """configs/guide_lm.py:method=jsd (runlocal): the teacher, then a student
  distilled online with JSD blended with the next-token cross-entropy on a
  truncated teacher; method_kw sets the options."""
  import json  # pylint: disable=g-import-not-at-top
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  from distill import run  # pylint: disable=g-import-not-at-top
  text = tmp_path / 'corpus.txt'
  rng = np.random.default_rng(0)
  text.write_text(' '.join(''.join(rng.choice(list('abcdefgh '), 7))
                           for _ in range(3000)))
  c = guide_lm.get_config(f'method=jsd,text={text},runlocal')
  c.method_kw.update(alpha=0.5, beta=0.3, temperature=2.0, teacher_top_k=4,
                     truncation='other_bucket')
  out = run.execute(c, str(tmp_path / 'run'))
  assert out['method'] == 'jsd' and out['student/step'] == 2
  assert np.isfinite(out['student/test/loss'])
  with open(tmp_path / 'run' / 'student' / 'config.json') as f:
    student = json.load(f)
  assert student['method'] == 'jsd'
  assert student['method_kw']['truncation'] == 'other_bucket'


def test_the_pipelines_check_the_objectives_options_from_the_config():
  """distillation.check_method (the cached pipelines, the active loop and
  online distillation ask it) passes the config's method_kw and
  distill.cache_topk to the entry."""
  from configs import digits_distill, guide_lm  # pylint: disable=g-import-not-at-top
  from distill import distillation  # pylint: disable=g-import-not-at-top
  c = digits_distill.get_config('method=forward_kl,runlocal')
  distillation.check_method(c)
  c.method_kw.alpha = 0.5
  with pytest.raises(ConfigError, match='method_kw.alpha=0.5'):
    distillation.check_method(c)
  c.method_kw.alpha = 1.0
  c.method_kw.teacher_top_k = 5
  c.distill.cache_topk = 3
  with pytest.raises(ConfigError, match='exceeds distill.cache_topk=3'):
    distillation.check_method(c)
  lm = guide_lm.get_config('method=reverse_kl,runlocal')
  lm.method_kw.alpha = 0.5
  distillation.check_method(lm, 'online')


def test_the_added_options_leave_recorded_identities_unchanged():
  """The objectives' options new to config.method_kw are left out of a
  recorded identity while at their defaults (distill/workdir.py:
  legacy_layout; tests/test_experiments.py checks the committed cells)."""
  from configs import digits_distill  # pylint: disable=g-import-not-at-top
  from core import defaults  # pylint: disable=g-import-not-at-top
  from distill import workdir  # pylint: disable=g-import-not-at-top
  before = {k for n, m in defaults.METHOD_OPTIONS.items() if n not in
            OBJECTIVES for options in m.values() for k in options}
  new = {k for n in OBJECTIVES for k in defaults.METHOD_OPTIONS[n]['loss']}
  assert set(defaults.ADDED_TO_METHOD_KW) == new - before
  c = digits_distill.get_config('method=vanilla,runlocal')
  kw = workdir.legacy_layout(workdir.resolved(c))['method_kw']
  assert not set(defaults.ADDED_TO_METHOD_KW) & set(kw)
  c.method_kw.teacher_top_k = 5
  kw = workdir.legacy_layout(workdir.resolved(c))['method_kw']
  assert kw['teacher_top_k'] == 5
