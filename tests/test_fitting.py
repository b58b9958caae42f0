"""Teacher-reliability fitting: isotonic estimates and k."""
import numpy as np
import pytest

from distill import fitting


def synthetic(n=2000, c=10, seed=0):
  """A teacher whose accuracy grows with its margin, plus true labels."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(n, c)) * rng.uniform(0.2, 4.0, (n, 1))
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  pred = probs.argmax(-1)
  p_correct = 0.2 + 0.8 * fitting.margin(probs)
  correct = rng.random(n) < p_correct
  other = (pred + rng.integers(1, c, n)) % c
  labels = np.where(correct, pred, other)
  return probs, labels


def test_isotonic_is_monotone_in_the_margin_and_in_unit_interval():
  probs, labels = synthetic()
  probs_u, _ = synthetic(seed=1)
  w = fitting.teacher_correctness(probs, labels, probs_u)
  order = np.argsort(fitting.margin(probs_u))
  assert np.all(np.diff(w[order]) >= -1e-7)
  assert w.min() >= 0.0 and w.max() <= 1.0
  # It recovers the planted P[correct | margin] = 0.2 + 0.8 margin roughly.
  truth = 0.2 + 0.8 * fitting.margin(probs_u)
  assert np.mean(np.abs(w - truth)) < 0.08


def test_debiased_weights_and_floor():
  probs, labels = synthetic()
  a = fitting.teacher_correctness(probs, labels, probs)
  d = fitting.teacher_correctness(probs, labels, probs, mode='debiased')
  np.testing.assert_allclose(d, np.maximum(0, (10 * a - 1) / 9), rtol=1e-6)
  floored = fitting.teacher_correctness(probs, labels, probs, floor=0.3)
  assert floored.min() >= 0.3
  with pytest.raises(ValueError, match='valid choices: debiased, isotonic'):
    fitting.teacher_correctness(probs, labels, probs, mode='platt')


def test_global_k_is_smallest_k_reaching_coverage():
  probs, labels = synthetic()
  k = fitting.global_k(probs, labels, delta=0.1)
  assert fitting.topk_accuracy(probs, labels, k) >= 0.9
  assert k == 2 or fitting.topk_accuracy(probs, labels, k - 1) < 0.9
  # A perfect teacher still gets k >= 2 (SLaM needs a second class).
  assert fitting.global_k(np.eye(10), np.arange(10)) == 2


def test_per_example_k_does_not_grow_with_the_margin():
  probs, labels = synthetic()
  k = fitting.per_example_k(probs, labels, probs, delta=0.1)
  order = np.argsort(fitting.margin(probs))
  assert np.all(np.diff(k[order]) <= 0)
  assert k.min() >= 2 and k.max() <= 10


def test_weight_stats():
  s = fitting.weight_stats(np.array([1.0, 1.0, 0.0, 0.0]))
  assert s == {'mean': 0.5, 'ess_fraction': 0.5, 'near_zero_fraction': 0.5}
