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
from distill.data import synthetic


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
  batch of `data` (a `loading.Data`, shared by every config)."""
  runs = {}
  for label, config in configs.items():
    config = ml_collections.ConfigDict(config.to_dict())
    config.progress = False
    trainer = train.Trainer(config, '/nonexistent', data=data)
    raw = trainer.train_part.get(np.arange(config.batch_size))
    batch = sharding.put_batch(
        trainer.inputs.host_train(raw, np.random.default_rng(0)),
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
  """A stand-in dataset with the config's shapes (no dataset files needed)."""
  return synthetic.data_like(config)
