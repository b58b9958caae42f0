"""Benchmark: student step time per distillation loss, and the teacher cache.

    python -m experiments.bench_methods            # CIFAR-shaped, ResNet-8
    python -m experiments.bench_methods --model=mlp --steps=200

Prints, measured in one run on the same student, batch and machine:
1. the jitted train-step time with each method's loss relative to a plain
   cross-entropy (`supervised`) step (goal: at most 1.10x);
2. the time of one teacher pass over an unlabeled set against reading the
   cached logits back (what a student pays per epoch without the cache).
"""
import os
import tempfile
import time

import jax
import numpy as np
from absl import app
from absl import flags

from configs import common
from distill import methods, predict, teacher_cache, train
from distill.data import datasets, loading, pipeline

_MODEL = flags.DEFINE_enum('model', 'resnet', ['resnet', 'mlp'],
                           'Student: CIFAR ResNet-8 or an MLP.')
_STEPS = flags.DEFINE_integer('steps', 30, 'Timed steps per method.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds.')
_UNLABELED = flags.DEFINE_integer('unlabeled', 4096,
                                  'Unlabeled examples for the cache check.')


class RandomImages:
  """A synthetic CIFAR-shaped part (the benchmark needs no dataset files)."""

  def __init__(self, n, shape=(32, 32, 3), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    self.x = rng.integers(0, 255, (n,) + shape, dtype=np.uint8)
    self.y = rng.integers(0, classes, n)
    self.indices = np.arange(n)

  def __len__(self):
    return len(self.y)

  def get(self, idx):
    idx = np.asarray(idx)
    return {'image': self.x[idx], 'label': self.y[idx], 'id': idx}


def _config():
  c = common.base_config()
  c.data.name = 'digits'   # only for validation; the parts are synthetic
  c.batch_size = _BATCH.value
  c.total_steps = 1000
  c.progress = False
  if _MODEL.value == 'resnet':
    c.model_name, c.model.depth = 'resnet', 8
  else:
    c.model_name, c.model.hidden = 'mlp', (512, 512)
  return c


def _time_steps(trainer, batch, steps):
  state = trainer.state
  for _ in range(3):                                # compile + warm up
    state, m = trainer.train_step(state, batch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = trainer.train_step(state, batch)
  jax.block_until_ready(m)
  trainer.state = state
  return (time.perf_counter() - start) / steps


def main(argv):
  del argv
  spec = datasets.DatasetSpec('image', 'classification', mean=(127.5,) * 3,
                              std=(64.0,) * 3)
  part = RandomImages(max(_UNLABELED.value, _BATCH.value))
  data = loading.Data(spec, {p: part for p in ('labeled', 'validation',
                                             'unlabeled', 'test')}, 10)
  config = _config()
  with tempfile.TemporaryDirectory() as workdir:
    trainer = train.Trainer(config, workdir, data=data)
  rng = np.random.default_rng(0)
  host = pipeline.Host(spec)
  raw = part.get(np.arange(_BATCH.value))
  raw['teacher'] = {
      'logits': rng.normal(size=(_BATCH.value, 10)).astype(np.float32) * 3,
      'weight': rng.random(_BATCH.value).astype(np.float32),
      'alpha': rng.random(_BATCH.value).astype(np.float32),
      'k': np.full(_BATCH.value, 3, np.int32)}
  batch = jax.device_put(host(raw), trainer.batch_sharding)

  print(f'student {_MODEL.value}, batch {_BATCH.value}, {_STEPS.value} steps, '
        f'{jax.device_count()} {jax.devices()[0].platform} device(s)')
  names = ['supervised'] + methods.names(needs_teacher=True)
  steps = {}
  for name in names:
    trainer.loss_fn = methods.get(name).loss_fn({})
    trainer.build_steps()
    steps[name] = trainer.train_step
  # Interleaved rounds, best of them: machine noise hits every method alike.
  best = {n: float('inf') for n in names}
  for _ in range(_ROUNDS.value):
    for name in names:
      trainer.train_step = steps[name]
      best[name] = min(best[name], _time_steps(trainer, batch, _STEPS.value))
  for name in names:
    print(f'  {name:13s} {1000 * best[name]:8.2f} ms/step   '
          f'{best[name] / best["supervised"]:5.2f}x CE')

  variables = {'params': trainer.state.params, **trainer.state.model_state}
  predict.logits(trainer.model, variables, part, trainer.inputs, trainer.mesh,
                 512)
  start = time.perf_counter()
  logits = predict.logits(trainer.model, variables, part, trainer.inputs,
                          trainer.mesh, 512)
  online = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as d:
    cache = teacher_cache.TeacherCache(d)
    fp = {'num_classes': 10}
    cache.save('u', fp, part.indices, logits)
    start = time.perf_counter()
    cache.load('u', fp)
    cached = time.perf_counter() - start
  print(f'teacher pass over {len(part)} examples: {online:.2f} s online, '
        f'{1000 * cached:.1f} ms from the cache '
        f'({online / cached:.0f}x faster per epoch)')


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  app.run(main)
