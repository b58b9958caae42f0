"""A language model teacher's sparse per-token top-k, on disk, read by
example id: the offline LM distillation cache (never densified).

    cache = lm_cache.SparseCache('<teacher>/teacher_cache/unlabeled_top8')
    targets = cache.get_or_build(fingerprint, ids, batches, k=8,
                                 dtype='bfloat16')
    part = lm_cache.WithSparseTeacher(data.parts['unlabeled'], targets)

    python -m pytest -q tests/test_lm_offline.py

One folder per part: `ids.npy` (N,) int64 example ids, sorted;
`topk_ids.npy` (N, T, k) int32 token ids, best first; `topk_logp.npy`
(N, T, k) the teacher's log-probabilities at temperature 1 in the storage
dtype (float32, or bfloat16 / float16 stored as their 2-byte patterns), and
`meta.json` (the fingerprint, k, dtype). The labeling pass writes batch by
batch into memory-mapped files in a temporary folder, renamed into place
when complete (a crash never leaves a half-written cache; a cache whose
meta differs is rebuilt). Reading maps the files: a batch reads only its
rows, looked up by example id. Bytes per token: k * (4 + 4 or 2).
"""
import os
import shutil

import ml_dtypes
import numpy as np

from core.errors import ConfigError, check_choice
from distill import files

DTYPES = {'float32': np.float32, 'bfloat16': ml_dtypes.bfloat16,
          'float16': np.float16}
_STORED = {'float32': np.float32, 'bfloat16': np.uint16,
           'float16': np.float16}


def bytes_per_token(k, dtype):
  check_choice('distill.cache_dtype', dtype, DTYPES)
  return k * (4 + np.dtype(_STORED[dtype]).itemsize)


class SparseTargets:
  """The memory-mapped cache of one part: `rows(ids)` maps example ids to
  rows; `get(rows)` reads {'topk_ids', 'topk_logp' (float32)} of them."""

  def __init__(self, directory, dtype):
    self.directory = directory
    self.dtype = dtype
    self.ids = np.load(os.path.join(directory, 'ids.npy'))
    self.topk_ids = np.load(os.path.join(directory, 'topk_ids.npy'),
                            mmap_mode='r')
    self.topk_logp = np.load(os.path.join(directory, 'topk_logp.npy'),
                             mmap_mode='r')
    if not (len(self.ids) == len(self.topk_ids) == len(self.topk_logp)):
      raise ValueError(f'{directory}: ids, topk_ids and topk_logp differ in '
                       'length')

  def __len__(self):
    return len(self.ids)

  def rows(self, example_ids):
    example_ids = np.asarray(example_ids, np.int64)
    rows = np.searchsorted(self.ids, example_ids)
    rows = np.minimum(rows, len(self.ids) - 1)
    if not np.array_equal(self.ids[rows], example_ids):
      missing = example_ids[self.ids[rows] != example_ids][:5]
      raise KeyError(f'example ids {missing.tolist()} are not in the teacher '
                     f'cache {self.directory}')
    return rows

  def get(self, rows):
    rows = np.asarray(rows, np.int64)
    logp = np.asarray(self.topk_logp[rows])
    if self.dtype == 'bfloat16':
      logp = logp.view(ml_dtypes.bfloat16)
    return {'topk_ids': np.asarray(self.topk_ids[rows]),
            'topk_logp': logp.astype(np.float32)}


class WithSparseTeacher:
  """A part whose batches carry the cached sparse teacher under `teacher`,
  read by each example's `id` (datasets.WithTargets' sparse counterpart)."""

  def __init__(self, part, targets):
    self.part = part
    self.targets = targets

  def __len__(self):
    return len(self.part)

  def get(self, indices):
    out = self.part.get(indices)
    out['teacher'] = self.targets.get(self.targets.rows(out['id']))
    return out


class SparseCache:
  """One part's sparse cache folder (see the module doc)."""

  def __init__(self, directory):
    if not files.is_local(directory):
      raise ConfigError(f'the sparse teacher cache {directory} must be on a '
                        'local disk (it is memory-mapped)')
    self.directory = directory

  def load(self, meta):
    """The cache if complete and its meta equals `meta`, else None."""
    path = os.path.join(self.directory, 'meta.json')
    if not os.path.exists(path):
      return None
    try:
      if files.read_json(path) != meta:
        return None
      return SparseTargets(self.directory, meta['dtype'])
    except Exception:  # pylint: disable=broad-except
      return None

  def build(self, meta, ids, batches, seq_len):
    """Writes the cache: `ids` the part's example ids (N,) in order,
    `batches` yields (positions, topk_ids (b, T, k), topk_logp (b, T, k))
    for positions into `ids`; returns the SparseTargets."""
    k, dtype = meta['k'], meta['dtype']
    check_choice('distill.cache_dtype', dtype, DTYPES)
    ids = np.asarray(ids, np.int64)
    order = np.argsort(ids, kind='stable')
    where = np.empty_like(order)
    where[order] = np.arange(len(order))      # position -> sorted row
    tmp = self.directory + '.tmp'
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
    os.makedirs(tmp)
    shape = (len(ids), seq_len, k)
    np.save(os.path.join(tmp, 'ids.npy'), ids[order])
    t_ids = np.lib.format.open_memmap(os.path.join(tmp, 'topk_ids.npy'), 'w+',
                                      np.int32, shape)
    t_logp = np.lib.format.open_memmap(os.path.join(tmp, 'topk_logp.npy'),
                                       'w+', _STORED[dtype], shape)
    written = np.zeros(len(ids), bool)
    for positions, b_ids, b_logp in batches:
      rows = where[np.asarray(positions)]
      t_ids[rows] = np.asarray(b_ids, np.int32)
      logp = np.asarray(b_logp, np.float32).astype(DTYPES[dtype])
      t_logp[rows] = logp.view(np.uint16) if dtype == 'bfloat16' else logp
      written[rows] = True
    if not written.all():
      raise ValueError(f'the labeling pass missed {int((~written).sum())} '
                       'examples')
    t_ids.flush()
    t_logp.flush()
    del t_ids, t_logp
    files.write_json(os.path.join(tmp, 'meta.json'), meta)
    if os.path.exists(self.directory):
      old = self.directory + '.old'
      if os.path.exists(old):
        shutil.rmtree(old)
      os.rename(self.directory, old)
      os.rename(tmp, self.directory)
      shutil.rmtree(old)
    else:
      os.rename(tmp, self.directory)
    return SparseTargets(self.directory, dtype)

  def get_or_build(self, meta, ids, batches, seq_len):
    """(targets, rebuilt): the cache if valid, else built from `batches`
    (a callable returning the iterator, only called when building)."""
    cached = self.load(meta)
    if cached is not None:
      return cached, False
    return self.build(meta, ids, batches(), seq_len), True


def part_ids(part, chunk=4096):
  """The example ids of `part`, in its order (read in chunks)."""
  return np.concatenate([
      np.asarray(part.get(np.arange(i, min(i + chunk, len(part))))['id'],
                 np.int64) for i in range(0, len(part), chunk)])
