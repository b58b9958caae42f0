"""Teacher-reliability estimates fitted on the validation part (numpy, once).

    probs_v, labels_v = teacher probabilities and true labels on validation
    w = fitting.teacher_correctness(probs_v, labels_v, probs_u)   # weighted
    alpha = fitting.teacher_correctness(..., floor=1e-3)           # SLaM alpha
    k = fitting.global_k(probs_v, labels_v, delta=0.05)            # SLaM k

The statistic is the teacher's margin (top-1 minus top-2 probability), and
P[teacher correct | margin] is an isotonic (non-decreasing, [0, 1]) regression
of correctness on it: hyper-parameter free, as Weighted Distillation
(Iliopoulos et al. 2022) and SLaM (Kontonis et al. 2023) describe. See
`../shared/docs/papers.md` sections 1.2 and 2.2 for what is verified.
"""
import numpy as np
from sklearn.isotonic import IsotonicRegression

from core.errors import check_choice

WEIGHT_MODES = ('isotonic', 'debiased')


def margin(probs):
  """Top-1 minus top-2 probability, per row."""
  top2 = np.sort(probs, axis=-1)[..., -2:]
  return top2[..., 1] - top2[..., 0]


def fit_correctness(probs_v, labels_v):
  """Isotonic map margin -> P[teacher's argmax is the true label]."""
  correct = (np.argmax(probs_v, -1) == labels_v).astype(np.float64)
  iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True,
                           out_of_bounds='clip')
  iso.fit(margin(probs_v), correct)
  return iso


def teacher_correctness(probs_v, labels_v, probs_u, mode='isotonic',
                        floor=0.0):
  """Per-example estimate of the teacher being right on `probs_u`.

  mode='isotonic': a(x) = P[correct | margin], the importance weight of
    hard labels (papers.md 1.2, step 3).
  mode='debiased': max(0, (C a(x) - 1) / (C - 1)), the symmetric-noise
    debiasing alternative (papers.md 1.2, step 4).
  `floor` clips from below (SLaM clips alpha to [1e-3, 1]).
  """
  check_choice('weight mode', mode, WEIGHT_MODES)
  a = fit_correctness(probs_v, labels_v).predict(margin(probs_u))
  if mode == 'debiased':
    c = probs_u.shape[-1]
    a = np.maximum(0.0, (c * a - 1.0) / (c - 1.0))
  return np.clip(a, floor, 1.0).astype(np.float32)


def topk_accuracy(probs, labels, k):
  ranks = np.argsort(-probs, axis=-1)[:, :k]
  return float(np.mean(np.any(ranks == labels[:, None], axis=-1)))


def global_k(probs_v, labels_v, delta=0.05, k_min=2):
  """Smallest k >= k_min whose teacher top-k accuracy on validation is
  at least 1 - delta (papers.md 2.2, option a)."""
  c = probs_v.shape[-1]
  for k in range(k_min, c + 1):
    if topk_accuracy(probs_v, labels_v, k) >= 1.0 - delta:
      return k
  return c


def per_example_k(probs_v, labels_v, probs_u, delta=0.05, k_min=2, bins=5):
  """k(x) from margin quantile bins of validation: in each bin the smallest
  k whose top-k accuracy there is >= 1 - delta (papers.md 2.2, option b),
  then made non-increasing in the margin."""
  m_v, m_u = margin(probs_v), margin(probs_u)
  edges = np.quantile(m_v, np.linspace(0, 1, bins + 1)[1:-1])
  bin_v, bin_u = np.digitize(m_v, edges), np.digitize(m_u, edges)
  ks = np.array([
      global_k(probs_v[bin_v == b], labels_v[bin_v == b], delta, k_min)
      if np.any(bin_v == b) else probs_v.shape[-1] for b in range(bins)])
  ks = np.minimum.accumulate(ks)    # more confident bins never need more
  return ks[bin_u].astype(np.int32)


def weight_stats(w):
  """Mean, effective sample size share and share near zero of weights."""
  w = np.asarray(w, np.float64)
  ess = w.sum() ** 2 / max((w ** 2).sum(), 1e-12)
  return {'mean': float(w.mean()), 'ess_fraction': float(ess / len(w)),
          'near_zero_fraction': float(np.mean(w < 0.05))}
