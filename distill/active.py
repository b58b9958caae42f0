"""Active distillation: which unlabeled points to pay the teacher to label.

Selection strategies, registered by name, choose `b` pool indices per round
from the *student's* outputs on the pool (never the teacher's):

    chosen = active.select('rad', b, rng, probs=student_probs,
                           embeddings=student_features, m=expected_errors)

  random    b points uniformly without replacement
  margin    the b smallest student margins (top-1 minus top-2 probability)
  entropy   the b largest student entropies
  kcenter   greedy k-center (coreset) on student embeddings, seeded by the
            points already labeled
  rad       Robust Active Distillation (Baykal et al., ICLR 2023): gains
            g = 1 - margin, selection probabilities from the max-min game
            against an adversary who mislabels m points
            (`rad_probabilities`, water-filling), then exactly b points by
            dependent rounding (`depround`), which keeps P[i chosen] = p_i.

Spec and the reconstruction of the game: ../shared/docs/papers.md section 3.
"""
import numpy as np

from core import registry
from core.errors import ConfigError, check_choice

STRATEGIES = {}
register = registry.registrar(STRATEGIES, 'active strategy')


# --- the RAD game -------------------------------------------------------------

def game_value(p, g, m):
  """The learner's payoff: sum_i p_i g_i minus the m largest p_i g_i (the
  points an adversary mislabels earn nothing)."""
  v = np.asarray(p, np.float64) * np.asarray(g, np.float64)
  m = int(min(max(m, 0), len(v)))
  if m == 0:
    return float(v.sum())
  top = np.partition(v, len(v) - m)[len(v) - m:]
  return float(v.sum() - top.sum())


def _water_fill(gs, b, level):
  """p for gains sorted descending at water level `level`: each point in
  turn gets min(1, level / g) until the budget b is spent (the last one
  fractionally). None when the pool cannot absorb b at this level."""
  q = np.minimum(1.0, level / gs)
  spent = np.cumsum(q)
  k = int(np.searchsorted(spent, b - 1e-12))
  if k >= len(gs):
    return None
  p = np.zeros_like(gs)
  p[:k] = q[:k]
  p[k] = b - (spent[k - 1] if k else 0.0)
  return p


def rad_probabilities(g, b, m, grid=256, refine=60):
  """Selection probabilities p (sum b, each in [0, 1]) maximising
  `game_value(p, g, m)`. The optimum is a water-filling allocation; its
  level is found on a grid of candidate levels, then refined by
  golden-section search. m = 0 gives margin sampling's top-b."""
  g = np.asarray(g, np.float64)
  n = len(g)
  if not 0 < b <= n:
    raise ConfigError(f'RAD: per-round budget b={b} must be in [1, {n}] '
                      '(the pool size)')
  if m <= 0:
    p = np.zeros(n)
    p[np.argsort(-g, kind='stable')[:b]] = 1.0
    return p
  g = np.maximum(g, 1e-12)          # a zero gain is worth nothing but costs
  order = np.argsort(-g, kind='stable')
  gs = g[order]
  lowest = b / np.sum(1.0 / gs)     # the level that spreads b over the pool
  candidates = np.concatenate([
      np.geomspace(lowest, gs[0], grid),
      np.quantile(gs, np.linspace(0, 1, grid)),
      gs if n <= 4 * grid else gs[:0]])
  candidates = np.unique(candidates[candidates >= lowest * (1 - 1e-12)])

  def value(level):
    p = _water_fill(gs, b, level)
    return -np.inf if p is None else game_value(p, gs, m)

  values = np.array([value(c) for c in candidates])
  j = int(np.argmax(values))
  best_level, best = candidates[j], values[j]
  lo = candidates[max(j - 1, 0)]
  hi = candidates[min(j + 1, len(candidates) - 1)]
  for _ in range(refine):
    a, c = lo + 0.382 * (hi - lo), lo + 0.618 * (hi - lo)
    va, vc = value(a), value(c)
    if va > vc:
      hi = c
    else:
      lo = a
    for level, v in ((a, va), (c, vc)):
      if v > best:
        best, best_level = v, level
  p = np.zeros(n)
  p[order] = _water_fill(gs, b, best_level)
  return np.clip(p, 0.0, 1.0)


def depround(p, rng, tol=1e-9):
  """Dependent rounding (Gandhi et al. 2006): exactly round(sum p) indices,
  each index i chosen with probability p_i. Pairs two fractional entries at a
  time and moves mass between them so that one becomes 0 or 1."""
  p = np.asarray(p, np.float64).copy()
  total = p.sum()
  if abs(total - round(total)) > 1e-6:
    raise ValueError(f'depround needs an integer sum, got {total}')
  frac = [int(i) for i in np.flatnonzero((p > tol) & (p < 1 - tol))]
  current = frac.pop() if frac else None
  while frac:
    i, j = current, frac.pop()
    up, down = min(1 - p[i], p[j]), min(p[i], 1 - p[j])
    if rng.random() < down / (up + down):
      p[i] += up
      p[j] -= up
    else:
      p[i] -= down
      p[j] += down
    current = i if tol < p[i] < 1 - tol else j
  chosen = np.flatnonzero(p > 1 - tol)
  if len(chosen) != round(total):     # float residue on the last entry
    rest = np.setdiff1d(np.argsort(-p), chosen)[:round(total) - len(chosen)]
    chosen = np.sort(np.concatenate([chosen, rest]))
  return chosen


# --- informativeness from the student ----------------------------------------

def margins(probs):
  """Top-1 minus top-2 probability per row."""
  top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
  return top2[:, 1] - top2[:, 0]


def entropy(probs):
  return -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=1)


# --- strategies ---------------------------------------------------------------

@register('random')
def _random(b, rng, probs=None, **unused):
  return np.sort(rng.choice(len(probs), b, replace=False))


@register('margin')
def _margin(b, rng, probs=None, **unused):
  del rng
  return np.sort(np.argsort(margins(probs), kind='stable')[:b])


@register('entropy')
def _entropy(b, rng, probs=None, **unused):
  del rng
  return np.sort(np.argsort(-entropy(probs), kind='stable')[:b])


@register('kcenter')
def _kcenter(b, rng, embeddings=None, labeled_embeddings=None, chunk=8192,
             **unused):
  """Greedy k-center: repeatedly the pool point farthest from every center
  (the labeled points, then the chosen ones)."""
  x = np.asarray(embeddings, np.float32)
  dist = np.full(len(x), np.inf, np.float32)
  centers = (np.asarray(labeled_embeddings, np.float32)
             if labeled_embeddings is not None and len(labeled_embeddings)
             else x[rng.integers(len(x))][None])
  for s in range(0, len(centers), chunk):
    c = centers[s:s + chunk]
    d = (np.sum(x * x, 1)[:, None] - 2 * x @ c.T + np.sum(c * c, 1)[None])
    dist = np.minimum(dist, d.min(1))
  chosen = []
  for _ in range(b):
    i = int(np.argmax(dist))
    chosen.append(i)
    dist = np.minimum(dist, np.sum((x - x[i]) ** 2, 1))
    dist[i] = -np.inf
  return np.sort(np.asarray(chosen))


@register('rad')
def _rad(b, rng, probs=None, m=0, **unused):
  p = rad_probabilities(1.0 - margins(probs), b, m)
  return depround(p, rng)


def select(name, b, rng, **inputs):
  """`b` pool indices by strategy `name` (see the module docstring)."""
  check_choice('active.strategy', name, STRATEGIES)
  n = len(inputs.get('probs') if inputs.get('probs') is not None
          else inputs['embeddings'])
  if not 0 < b <= n:
    raise ConfigError(f'active: cannot select b={b} of a pool of {n}')
  chosen = STRATEGIES[name](b, rng, **inputs)
  assert len(chosen) == b and len(np.unique(chosen)) == b, name
  return chosen


def expected_errors(teacher_val_accuracy, pool_size):
  """m: the teacher's validation error rate times the pool size."""
  return int(round((1.0 - teacher_val_accuracy) * pool_size))
