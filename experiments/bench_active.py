"""Benchmark: the cost of one selection step on a 50,000-point pool, against
one round of student training (the CIFAR-10 active-distillation student:
configs/active_distill.py:dataset=cifar10), measured in the same run.

    python -m experiments.bench_active
    python -m experiments.bench_active --pool=50000 --per_round=3500

Selection inputs are synthetic (student probabilities over 10 classes and
64-d features); the student step is timed on synthetic CIFAR-shaped batches.
"""
import sys
import time

import numpy as np
from absl import app
from absl import flags

from configs import active_distill
from distill import active
from distill import distillation
from experiments import costs

_POOL = flags.DEFINE_integer('pool', 50_000, 'Pool size.')
_PER_ROUND = flags.DEFINE_integer('per_round', 3500, 'Points per round (b).')
_DIM = flags.DEFINE_integer('dim', 64, 'Feature dimension for kcenter.')


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  n, b = _POOL.value, _PER_ROUND.value
  probs = rng.dirichlet(np.full(10, 0.3), size=n)
  feats = rng.normal(size=(n, _DIM.value)).astype(np.float32)
  labeled = rng.normal(size=(1000, _DIM.value)).astype(np.float32)
  config = distillation.student_config(
      active_distill.get_config('dataset=cifar10'))
  del config['active']
  config.method = 'supervised'     # the distillation losses cost 1.01-1.06x
  config.data.train_on = 'labeled'
  config.progress = False
  step = costs.measure({'student': config}, costs.synthetic_data(config),
                       steps=10, rounds=2)['student']['step_s']
  round_s = step * config.total_steps
  print(f'pool {n}, b {b}; one round of student training: '
        f'{config.total_steps} steps x {1000 * step:.0f} ms = {round_s:.1f} s')
  print(f'{"strategy":10s} {"seconds":>8s} {"x round":>8s}')
  for name in sorted(active.STRATEGIES):
    start = time.perf_counter()
    active.select(name, b, np.random.default_rng(1), probs=probs,
                  embeddings=feats, labeled_embeddings=labeled,
                  m=int(0.4 * n))
    sec = time.perf_counter() - start
    print(f'{name:10s} {sec:8.2f} {sec / round_s:8.3f}')


if __name__ == '__main__':
  sys.exit(app.run(main))
