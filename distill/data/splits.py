"""Deterministic carving of a training split into the papers' parts.

    parts = carve(n=50_000, labeled=5000, validation=500, seed=0,
                  mode='random')
    parts['labeled'], parts['validation'], parts['unlabeled']  # index arrays

The parts are disjoint, sorted, and a pure function of their arguments. With
`mode='first'` the labeled part is the first `labeled` examples, validation
the next ones and unlabeled the rest (in source order); with `mode='random'`
the same happens on a permutation seeded by `seed`. The test split is never
touched. At most one part may be `-1`:
"all the rest".
"""
import numpy as np

from core.errors import ConfigError, check_choice

PARTS = ('labeled', 'validation', 'unlabeled')
MODES = ('first', 'random')


def carve(n, labeled=-1, validation=0, unlabeled=-1, seed=0, mode='random'):
  """Index arrays of the labeled, validation and unlabeled parts of [0, n)."""
  check_choice('data.carve', mode, MODES)
  order = (np.arange(n) if mode == 'first'
           else np.random.default_rng(seed).permutation(n))
  sizes = {'labeled': labeled, 'validation': validation,
           'unlabeled': unlabeled}
  for k, v in sizes.items():
    if v is not None and v < -1:
      raise ConfigError(f'data.{k}={v} must be >= 0 (or -1: all the rest)')
  rest = [k for k, v in sizes.items() if v is None or v < 0]
  if len(rest) > 1:
    raise ConfigError(f'only one of data.{", data.".join(rest)} may be -1 '
                      '("all the rest")')
  fixed = sum(v for k, v in sizes.items() if k not in rest)
  if fixed > n:
    raise ConfigError(
        f'data.labeled={labeled}, validation={validation}, '
        f'unlabeled={unlabeled} ask for {fixed} examples; the training split '
        f'has {n}')
  for k in rest:
    sizes[k] = n - fixed
  out, start = {}, 0
  for name in PARTS:
    out[name] = np.sort(order[start:start + sizes[name]])
    start += sizes[name]
  return out
