"""Train-step cost of model variants, measured in one process: parameters,
the best step time over interleaved rounds (the least disturbed by
other load), and XLA's peak-memory estimate.
Used by experiments/laurel.py (cost columns) and experiments/bench_laurel.py.
"""
import time

import jax
import ml_collections
import numpy as np

from distill import sharding, train
from distill.data import datasets


class Synthetic:
  """A training part of random examples with the real data's shapes."""

  def __init__(self, example, n=512, seed=0):
    rng = np.random.default_rng(seed)
    self.arrays = {}
    for k, v in example.items():
      v = np.asarray(v)
      if k == 'id':
        self.arrays[k] = np.arange(n)
      elif v.dtype.kind in 'iu':
        hi = max(int(v.max()) + 1, 2)
        self.arrays[k] = rng.integers(0, hi, (n,) + v.shape[1:]).astype(
            v.dtype)
      else:
        self.arrays[k] = rng.normal(size=(n,) + v.shape[1:]).astype(v.dtype)
    self.indices = np.arange(n)

  def __len__(self):
    return len(self.indices)

  def get(self, idx):
    return {k: v[np.asarray(idx)] for k, v in self.arrays.items()}


def peak_bytes(trainer, state, batch):
  """XLA's memory estimate for one compiled train step (None if absent)."""
  with jax.set_mesh(trainer.mesh):
    compiled = trainer.train_step.lower(state, batch).compile()
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
             mem.temp_size_in_bytes - mem.alias_size_in_bytes)


def _count(state):
  return int(sum(x.size for x in jax.tree.leaves(state.params)))


def measure(configs, data, steps=10, rounds=3):
  """{label: {params, step_s, peak_bytes}} for {label: config}, on one
  batch of `data` (a `train.Data`, shared by every config)."""
  runs = {}
  for label, config in configs.items():
    config = ml_collections.ConfigDict(config.to_dict())
    config.progress = False
    trainer = train.Trainer(config, '/nonexistent', data=data)
    raw = trainer.train_part.get(np.arange(config.batch_size))
    batch = sharding.put_batch(
        trainer.preprocess_train(raw, np.random.default_rng(0)),
        trainer.batch_sharding)
    state = trainer.state
    with jax.set_mesh(trainer.mesh):
      for _ in range(2):                                # compile + warm up
        state, metrics = trainer.train_step(state, batch)
      jax.block_until_ready(metrics)
    runs[label] = dict(trainer=trainer, state=state, batch=batch, times=[],
                       params=_count(state),
                       peak_bytes=peak_bytes(trainer, state, batch))
  for _ in range(rounds):
    for run in runs.values():
      trainer, state = run['trainer'], run['state']
      with jax.set_mesh(trainer.mesh):
        start = time.perf_counter()
        for _ in range(steps):
          state, metrics = trainer.train_step(state, run['batch'])
        jax.block_until_ready(metrics)
      run['times'].append((time.perf_counter() - start) / steps)
      run['state'] = state
  return {label: dict(params=run['params'], peak_bytes=run['peak_bytes'],
                      step_s=float(np.min(run['times'])))
          for label, run in runs.items()}


def relative(costs, base):
  """Adds params_added_pct, step_rel and mem_rel against the row `base`."""
  ref = costs[base]
  for c in costs.values():
    c['params_added_pct'] = 100 * (c['params'] - ref['params']) / ref['params']
    c['step_rel'] = c['step_s'] / ref['step_s']
    c['mem_rel'] = (c['peak_bytes'] / ref['peak_bytes']
                    if c['peak_bytes'] and ref['peak_bytes'] else None)
  return costs


def synthetic_data(config):
  """A stand-in dataset with the config's shapes (no dataset files needed):
  CIFAR-shaped images, or windows of a 65-character vocabulary."""
  if config.model_name == 'transformer_lm':
    spec = datasets.DatasetSpec('tokens', 'lm', label_key=None)
    example = {'tokens': np.full((1, config.data.seq_len + 1), 64, np.int32),
               'id': np.zeros(1, np.int64)}
    classes = 65
  else:
    spec = datasets.DatasetSpec('image', 'classification',
                                mean=(127.5,) * 3, std=(64.0,) * 3)
    example = {'image': np.full((1, 32, 32, 3), 255, np.uint8),
               'label': np.full(1, 9, np.int64), 'id': np.zeros(1, np.int64)}
    classes = 10
  part = Synthetic(example, n=max(64, config.batch_size))
  return train.Data(spec, {p: part for p in ('labeled', 'validation',
                                             'unlabeled', 'test')}, classes)
