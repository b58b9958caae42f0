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

Each estimate is a map of the teacher's probabilities fitted on validation
(`correctness_map`, `k_map`), applied with numpy to the cached outputs of
the unlabeled part, or with jax.numpy (`xp=jnp`) to the teacher's outputs
inside the student's step (online distillation of augmented views).
"""
import dataclasses

import numpy as np

from core.errors import check_choice

WEIGHT_MODES = ('isotonic', 'debiased')


def margin(probs, xp=np):
  """Top-1 minus top-2 probability, per row."""
  top2 = xp.sort(probs, axis=-1)[..., -2:]
  return top2[..., 1] - top2[..., 0]


def fit_correctness(probs_v, labels_v):
  """Isotonic map margin -> P[teacher's argmax is the true label]."""
  correct = (np.argmax(probs_v, -1) == labels_v).astype(np.float64)
  # sklearn takes a second to import: only runs that fit pay for it.
  from sklearn.isotonic import IsotonicRegression  # pylint: disable=g-import-not-at-top
  iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True,
                           out_of_bounds='clip')
  iso.fit(margin(probs_v), correct)
  return iso


@dataclasses.dataclass(frozen=True)
class CorrectnessMap:
  """probs -> the estimate that the teacher is right (`teacher_correctness`),
  as fitted: the isotonic regression's margin thresholds `x` and values
  `y` (linear between them, clipped at the ends, as its predict), the
  debiasing `mode` and the `floor`."""
  x: np.ndarray
  y: np.ndarray
  mode: str
  floor: float

  def __call__(self, probs, xp=np):
    a = _linear(margin(probs, xp), self.x, self.y, xp).astype(probs.dtype)
    if self.mode == 'debiased':
      c = probs.shape[-1]
      a = xp.maximum(0.0, (c * a - 1.0) / (c - 1.0))
    return xp.clip(a, self.floor, 1.0).astype(np.float32)


def _linear(t, x, y, xp):
  """The isotonic regression's predict, in numpy or jax.numpy: `t` clipped
  to [x[0], x[-1]], then linear between the thresholds, computed as scipy's
  interp1d does (so both give sklearn's numbers to the bit)."""
  if len(x) == 1:
    return xp.full(t.shape, y[0])
  t = xp.clip(t.astype(x.dtype), x[0], x[-1])
  hi = xp.clip(xp.searchsorted(x, t, side='left'), 1, len(x) - 1)
  x, y = xp.asarray(x), xp.asarray(y)
  slope = (y[hi] - y[hi - 1]) / (x[hi] - x[hi - 1])
  return slope * (t - x[hi - 1]) + y[hi - 1]


def correctness_map(probs_v, labels_v, mode='isotonic', floor=0.0):
  """The CorrectnessMap fitted on the validation part."""
  check_choice('weight mode', mode, WEIGHT_MODES)
  iso = fit_correctness(probs_v, labels_v)
  return CorrectnessMap(np.asarray(iso.X_thresholds_),
                        np.asarray(iso.y_thresholds_), mode, float(floor))


def teacher_correctness(probs_v, labels_v, probs_u, mode='isotonic',
                        floor=0.0):
  """Per-example estimate of the teacher being right on `probs_u`.

  mode='isotonic': a(x) = P[correct | margin], the importance weight of
    hard labels (papers.md 1.2, step 3).
  mode='debiased': max(0, (C a(x) - 1) / (C - 1)), the symmetric-noise
    debiasing alternative (papers.md 1.2, step 4).
  `floor` clips from below (SLaM clips alpha to [1e-3, 1]).
  """
  return correctness_map(probs_v, labels_v, mode, floor)(probs_u)


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


@dataclasses.dataclass(frozen=True)
class KMap:
  """probs -> SLaM's k(x): `ks[b]` for the margin bin b that the validation
  quantile `edges` put it in (one bin, no edges: a global k)."""
  edges: np.ndarray
  ks: np.ndarray

  def __call__(self, probs, xp=np):
    bins = xp.digitize(margin(probs, xp), self.edges)
    return xp.asarray(self.ks)[bins].astype(np.int32)


def k_map(probs_v, labels_v, delta=0.05, k_min=2, bins=None):
  """SLaM's k as a KMap: global (`bins` None: papers.md 2.2, option a) or
  per margin quantile bin of validation (option b: in each bin the
  smallest k whose top-k accuracy there is >= 1 - delta, then made
  non-increasing in the margin)."""
  if bins is None:
    return KMap(np.zeros((0,), np.float64),
                np.array([global_k(probs_v, labels_v, delta, k_min)]))
  m_v = margin(probs_v)
  edges = np.quantile(m_v, np.linspace(0, 1, bins + 1)[1:-1])
  bin_v = np.digitize(m_v, edges)
  ks = np.array([
      global_k(probs_v[bin_v == b], labels_v[bin_v == b], delta, k_min)
      if np.any(bin_v == b) else probs_v.shape[-1] for b in range(bins)])
  ks = np.minimum.accumulate(ks)    # more confident bins never need more
  return KMap(np.asarray(edges, np.float64), ks.astype(np.int32))


def per_example_k(probs_v, labels_v, probs_u, delta=0.05, k_min=2, bins=5):
  """k(x) of `probs_u` from margin quantile bins of validation (`k_map`)."""
  return k_map(probs_v, labels_v, delta, k_min, bins)(probs_u)


def weight_stats(w):
  """Mean, effective sample size share and share near zero of weights."""
  w = np.asarray(w, np.float64)
  ess = w.sum() ** 2 / max((w ** 2).sum(), 1e-12)
  return {'mean': float(w.mean()), 'ess_fraction': float(ess / len(w)),
          'near_zero_fraction': float(np.mean(w < 0.05))}
