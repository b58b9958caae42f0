"""Golden values for the registered losses (torchdistill-style)."""
import jax.numpy as jnp
import numpy as np
import pytest

from distill import methods

LOGITS = jnp.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
LABELS = jnp.array([0, 1, 2])


def test_supervised_golden_value():
  batch = {'label': LABELS, 'mask': jnp.array([1.0, 1.0, 0.0])}
  loss, metrics = methods.supervised(LOGITS, None, batch)
  # -log softmax by hand: row0 label0, row1 label1; row2 masked out.
  l0 = -(2.0 - np.log(np.exp(2.0) + np.exp(0.5) + np.exp(-1.0)))
  l1 = -(0.0 - np.log(2 + np.exp(3.0)))
  assert float(loss) == pytest.approx((l0 + l1) / 2, rel=1e-6)
  assert float(loss) == pytest.approx(1.66812, abs=1e-5)   # golden
  s, c = metrics['accuracy']
  assert (float(s), float(c)) == (1.0, 2.0)
  s, c = metrics['loss']
  assert float(s) / float(c) == pytest.approx(float(loss))


def test_supervised_label_smoothing_golden_value():
  batch = {'label': LABELS, 'mask': jnp.ones(3)}
  loss, _ = methods.supervised(LOGITS, None, batch, label_smoothing=0.3)
  logp = np.log(np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True))
  target = np.full((3, 3), 0.1) + 0.7 * np.eye(3)[np.asarray(LABELS)]
  assert float(loss) == pytest.approx(-(target * logp).sum(-1).mean(),
                                      rel=1e-6)


def test_supervised_on_sequences_weights_every_token():
  logits = jnp.stack([LOGITS, LOGITS])             # (2 sequences, 3 steps, 3)
  batch = {'targets': jnp.stack([LABELS, LABELS]),
           'mask': jnp.array([1.0, 0.0])}
  loss, metrics = methods.supervised(logits, None, batch)
  full, _ = methods.supervised(LOGITS, None, {'label': LABELS,
                                              'mask': jnp.ones(3)})
  assert float(loss) == pytest.approx(float(full), rel=1e-6)
  assert float(metrics['accuracy'][1]) == 3.0


def test_registry_lists_valid_choices():
  with pytest.raises(ValueError, match='valid choices: forward_kl, hard, jsd, '
                     'pseudo_label, reverse_kl, slam, supervised, taylor_ce, '
                     'vanilla, weighted'):
    methods.get('nope')


# --- distillation losses -------------------------------------------------------
STUDENT = jnp.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 2.0, 0.0]])
TEACHER = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 4.0]])
MASK = jnp.ones(3)


def np_softmax(x, t=1.0):
  e = np.exp(np.asarray(x) / t)
  return e / e.sum(-1, keepdims=True)


def teacher(**extra):
  return {'logits': TEACHER, **extra}


def test_vanilla_golden_value_and_temperature():
  loss, m = methods.vanilla(STUDENT, teacher(), {'mask': MASK})
  ref = -(np_softmax(TEACHER) * np.log(np_softmax(STUDENT))).sum(-1).mean()
  assert float(loss) == pytest.approx(ref, rel=1e-6)
  assert float(loss) == pytest.approx(1.27946, abs=1e-5)     # golden
  loss_t, _ = methods.vanilla(STUDENT, teacher(), {'mask': MASK},
                              temperature=2.0)
  ref_t = 4 * -(np_softmax(TEACHER, 2) * np.log(np_softmax(STUDENT, 2))
                ).sum(-1).mean()
  assert float(loss_t) == pytest.approx(ref_t, rel=1e-6)
  # Student argmax agrees with the teacher's on row 0 only.
  assert [float(x) for x in m['teacher_agreement']] == [1.0, 3.0]


def test_hard_golden_value():
  loss, _ = methods.hard(STUDENT, teacher(), {'mask': MASK})
  y = np.asarray(TEACHER).argmax(-1)
  ref = -np.log(np_softmax(STUDENT)[np.arange(3), y]).mean()
  assert float(loss) == pytest.approx(ref, rel=1e-6)
  assert float(loss) == pytest.approx(1.17849, abs=1e-5)     # golden


def test_weighted_with_unit_weights_equals_vanilla_and_hard():
  ones = teacher(weight=jnp.ones(3))
  for soft, base in ((True, methods.vanilla), (False, methods.hard)):
    w_loss, _ = methods.weighted(STUDENT, ones, {'mask': MASK}, soft=soft)
    v_loss, _ = base(STUDENT, teacher(), {'mask': MASK})
    assert float(w_loss) == pytest.approx(float(v_loss), rel=1e-6)


def test_weighted_golden_value():
  w = jnp.array([1.0, 0.5, 0.0])
  loss, _ = methods.weighted(STUDENT, teacher(weight=w), {'mask': MASK})
  ce = -(np_softmax(TEACHER) * np.log(np_softmax(STUDENT))).sum(-1)
  assert float(loss) == pytest.approx((ce[0] + 0.5 * ce[1]) / 1.5, rel=1e-6)


def test_slam_with_alpha_one_equals_vanilla():
  t = teacher(alpha=jnp.ones(3), k=jnp.array([2, 2, 2]))
  s_loss, _ = methods.slam(STUDENT, t, {'mask': MASK})
  v_loss, _ = methods.vanilla(STUDENT, teacher(), {'mask': MASK})
  assert float(s_loss) == pytest.approx(float(v_loss), rel=1e-5)


def test_slam_golden_value():
  alpha = np.array([0.9, 0.5, 0.2])
  k = np.array([2, 2, 3])
  loss, _ = methods.slam(STUDENT, teacher(alpha=jnp.asarray(alpha),
                                          k=jnp.asarray(k)), {'mask': MASK})
  ys, f = np_softmax(TEACHER), np_softmax(STUDENT)
  ranks = np.argsort(np.argsort(-ys, -1), -1)
  mask = (ranks < k[:, None]).astype(float)
  mix = alpha[:, None] * f + (1 - alpha[:, None]) * (1 - f) * mask
  ref = -(ys * np.log(np.clip(mix, 1e-7, None))).sum(-1).mean()
  assert float(loss) == pytest.approx(ref, rel=1e-5)
  assert float(loss) == pytest.approx(0.57960, abs=1e-5)     # golden


def test_slam_normalized_divides_by_k_minus_one():
  alpha, k = np.array([0.3, 0.6, 0.9]), np.array([2, 3, 4])
  loss, _ = methods.slam(STUDENT, teacher(alpha=jnp.asarray(alpha),
                                          k=jnp.asarray(k)), {'mask': MASK},
                         normalize=True)
  ys, f = np_softmax(TEACHER), np_softmax(STUDENT)
  ranks = np.argsort(np.argsort(-ys, -1), -1)
  mask = (ranks < k[:, None]) / (k[:, None] - 1.0)
  mix = alpha[:, None] * f + (1 - alpha[:, None]) * (1 - f) * mask
  ref = -(ys * np.log(np.clip(mix, 1e-7, None))).sum(-1).mean()
  assert float(loss) == pytest.approx(ref, rel=1e-5)


def test_topk_mask_uses_teacher_ranking_and_per_example_k():
  probs = jnp.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
  mask = methods.topk_mask(probs, jnp.array([1, 2]))
  np.testing.assert_array_equal(mask, [[0, 1, 0], [1, 0, 1]])


def test_taylor_ce_golden_value():
  loss, _ = methods.taylor_ce(STUDENT, teacher(), {'mask': MASK}, order=2)
  p = np_softmax(STUDENT)[np.arange(3), np.asarray(TEACHER).argmax(-1)]
  assert float(loss) == pytest.approx(np.mean((1 - p) + (1 - p) ** 2 / 2),
                                      rel=1e-6)


def test_pseudo_label_keeps_confident_examples_only():
  loss, m = methods.pseudo_label(STUDENT, teacher(), {'mask': MASK},
                                 threshold=0.8)
  conf = np_softmax(TEACHER).max(-1)          # 0.84, 0.67, 0.96
  keep = conf >= 0.8
  y = np.asarray(TEACHER).argmax(-1)
  ce = -np.log(np_softmax(STUDENT)[np.arange(3), y])
  assert float(loss) == pytest.approx(ce[keep].mean(), rel=1e-6)
  assert [float(x) for x in m['kept_fraction']] == [2.0, 3.0]


def test_distillation_metrics_report_true_accuracy_when_labels_exist():
  batch = {'mask': MASK, 'label': jnp.array([0, 1, 1])}
  _, m = methods.vanilla(STUDENT, teacher(), batch)
  # Student argmax is [0, 0, 1] (ties go to the first class).
  assert [float(x) for x in m['accuracy']] == [2.0, 3.0]
