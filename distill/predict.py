"""Batched, sharded inference of a model over a data part.

    logits = predict.logits(model, variables, part, inputs, mesh, 1000)

Returns a host numpy array in the part's order: what the teacher-labeling
pass caches, and what student/teacher agreement is measured on.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from distill import sharding
from distill.data import pipeline


def logits(model, variables, part, inputs, mesh, batch_size,
           features=False, workers=0):
  """Model logits (float32) for every example of `part`, in order; with
  `features=True` also the sown `pre_logits` (e.g. for k-center selection),
  as a pair (logits, features). `inputs`: the dataset's `pipeline.Inputs`
  (host reading, device normalisation)."""
  batch_sh = sharding.batch_sharding(mesh)
  shards = math.lcm(sharding.batch_shards(mesh), jax.process_count())
  batch_size = -(-batch_size // shards) * shards     # a multiple of shards
  rep = sharding.replicated(mesh)
  variables = jax.device_put(variables, rep)
  def run(v, x):
    x = inputs.device(x)
    if not features:
      return model.apply(v, x, train=False)
    out, inter = model.apply(v, x, train=False, mutable=['intermediates'])
    return out, inter['intermediates']['pre_logits'][0]

  apply = jax.jit(run, in_shardings=(rep, batch_sh), out_shardings=batch_sh)
  outs = []
  for batch in pipeline.eval_batches(part, batch_size, inputs.host_eval,
                                     jax.process_index(), jax.process_count(),
                                     workers=workers):
    x = sharding.put_batch(batch['inputs'], batch_sh)
    out = apply(variables, x)
    outs.append(jax.tree.map(np.asarray, multihost_utils.process_allgather(
        out, tiled=True)))
  if not outs:
    raise ValueError('predict.logits: the part is empty')
  joined = jax.tree.map(lambda *a: np.concatenate(a)[:len(part)].astype(
      np.float32), *outs)
  return joined


def topk_logprobs(model, variables, part, inputs, mesh, batch_size, k):
  """Yields (positions, topk_ids (b, T, k) int32, topk_logp (b, T, k)
  float32) over `part` in order: a language model's per-token top-k
  log-probabilities (temperature 1), batch by batch (never the whole part's
  (N, T, V) logits); the offline LM cache's labeling pass
  (distill/lm_cache.py)."""
  batch_sh = sharding.batch_sharding(mesh)
  shards = math.lcm(sharding.batch_shards(mesh), jax.process_count())
  batch_size = -(-batch_size // shards) * shards
  rep = sharding.replicated(mesh)
  variables = jax.device_put(variables, rep)

  def run(v, x):
    logp = jax.nn.log_softmax(
        model.apply(v, inputs.device(x), train=False).astype(jnp.float32))
    values, ids = jax.lax.top_k(logp, k)
    return ids.astype(jnp.int32), values

  apply = jax.jit(run, in_shardings=(rep, batch_sh), out_shardings=batch_sh)
  start = 0
  for batch in pipeline.eval_batches(part, batch_size, inputs.host_eval,
                                     jax.process_index(), jax.process_count()):
    x = sharding.put_batch(batch['inputs'], batch_sh)
    ids, values = jax.tree.map(
        np.asarray, multihost_utils.process_allgather(apply(variables, x),
                                                      tiled=True))
    n = min(len(ids), len(part) - start)
    yield np.arange(start, start + n), ids[:n], values[:n]
    start += n
