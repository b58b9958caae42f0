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
import os

import jax
import numpy as np

from core.errors import one_line
from distill import files


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
    files.makedirs(directory)

  def _paths(self, name):
    base = os.path.join(self.directory, name)
    return base + '.npz', base + '.json'

  def load(self, name, fingerprint):
    """Cached logits of `name` if its fingerprint matches, else None. A
    cache file that does not read back (truncated, garbled) is set aside to
    `teacher_cache_unreadable/` and treated as absent, so it is rebuilt."""
    data_path, meta_path = self._paths(name)
    if not (files.exists(data_path) and files.exists(meta_path)):
      return None
    try:
      if files.read_json(meta_path) != fingerprint:
        return None
      return _logits_of(files.read_npz(data_path),
                        fingerprint['num_classes'])
    except Exception as e:  # pylint: disable=broad-except
      reason = one_line(e, 120) or type(e).__name__
      if files.is_main():
        moved = [files.set_aside(p) for p in (data_path, meta_path)
                 if files.exists(p)]
        print(f'teacher cache {data_path} is unreadable ({reason}); moved '
              f'it to {os.path.dirname(moved[0])}; rebuilding it.',
              flush=True)
      return None

  def save(self, name, fingerprint, ids, logits, topk=0):
    data_path, meta_path = self._paths(name)
    arrays = _stored(ids, logits, topk)
    # Meta last: a data file without matching meta is never trusted.
    if files.exists(meta_path) and files.is_main():
      files.remove(meta_path)
    files.write_npz(data_path, **arrays)
    files.write_json(meta_path, fingerprint)

  def get_or_build(self, name, fingerprint, ids, compute, topk=0):
    """Returns (logits, rebuilt): cached if valid, else computed and saved."""
    cached = self.load(name, fingerprint)
    if cached is not None:
      return cached, False
    logits = compute()
    self.save(name, fingerprint, ids, logits, topk)
    # What a later load returns (only the main process writes the file).
    return _logits_of(_stored(ids, logits, topk), logits.shape[-1]), True


def _stored(ids, logits, topk):
  """The arrays a cache file holds: ids and logits, or their top-k."""
  arrays = {'ids': np.asarray(ids, np.int64)}
  if topk:
    idx = np.argsort(-logits, -1)[..., :topk]
    arrays['topk_indices'] = idx.astype(np.int32)
    arrays['topk_values'] = np.take_along_axis(logits, idx, -1)
  else:
    arrays['logits'] = logits.astype(np.float32)
  return arrays


def _logits_of(arrays, num_classes):
  if 'topk_values' in arrays:
    return densify_topk(arrays['topk_values'], arrays['topk_indices'],
                        num_classes)
  return np.asarray(arrays['logits'])
