"""The teacher-labeling pass, cached on disk and keyed by example id.

    cache = teacher_cache.TeacherCache(os.path.join(workdir, 'teacher_cache'))
    logits = cache.get_or_build('unlabeled', part, fingerprint, compute_fn)

One `.npz` per part holds `ids` and `logits` (float32, or the top-k values
and indices with `topk > 0` for large label spaces), and a JSON fingerprint:
the teacher (workdir, checkpoint step, a hash of its parameters), the data
(dataset, carving, the part's ids) and the output shape. A cache whose
fingerprint differs is rebuilt, never silently reused; files are written to a
temporary name and renamed, so a crash never leaves a half-written cache.
"""
import hashlib
import json
import os

import jax
import numpy as np


def params_digest(variables):
  """A short hash of all parameter bytes (identifies a trained teacher)."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(variables):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]


def ids_digest(ids):
  return hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()[:16]


def densify_topk(values, indices, num_classes, fill=None):
  """Dense logits from top-k (values, indices); others get `fill` (default:
  the row's smallest kept logit minus 10, i.e. near-zero probability)."""
  if fill is None:
    fill = values.min(-1, keepdims=True) - 10.0
  dense = np.broadcast_to(fill, values.shape[:-1] + (num_classes,)).copy()
  np.put_along_axis(dense, indices, values, -1)
  return dense.astype(np.float32)


class TeacherCache:
  """A folder of cached teacher outputs, one file per data part."""

  def __init__(self, directory):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)

  def _paths(self, name):
    base = os.path.join(self.directory, name)
    return base + '.npz', base + '.json'

  def load(self, name, fingerprint):
    """Cached logits of `name` if its fingerprint matches, else None."""
    data_path, meta_path = self._paths(name)
    if not (os.path.exists(data_path) and os.path.exists(meta_path)):
      return None
    with open(meta_path) as f:
      if json.load(f) != fingerprint:
        return None
    with np.load(data_path) as z:
      if 'topk_values' in z:
        return densify_topk(z['topk_values'], z['topk_indices'],
                            fingerprint['num_classes'])
      return z['logits']

  def save(self, name, fingerprint, ids, logits, topk=0):
    data_path, meta_path = self._paths(name)
    arrays = {'ids': np.asarray(ids, np.int64)}
    if topk:
      idx = np.argsort(-logits, -1)[:, :topk]
      arrays['topk_indices'] = idx.astype(np.int32)
      arrays['topk_values'] = np.take_along_axis(logits, idx, -1)
    else:
      arrays['logits'] = logits.astype(np.float32)
    # Meta last: a data file without matching meta is never trusted.
    if os.path.exists(meta_path):
      os.remove(meta_path)
    tmp = data_path + '.tmp.npz'
    np.savez(tmp, **arrays)
    os.replace(tmp, data_path)
    with open(meta_path + '.tmp', 'w') as f:
      json.dump(fingerprint, f, indent=1, sort_keys=True)
    os.replace(meta_path + '.tmp', meta_path)

  def get_or_build(self, name, fingerprint, ids, compute, topk=0):
    """Returns (logits, rebuilt): cached if valid, else computed and saved."""
    cached = self.load(name, fingerprint)
    if cached is not None:
      return cached, False
    logits = compute()
    self.save(name, fingerprint, ids, logits, topk)
    return self.load(name, fingerprint), True
