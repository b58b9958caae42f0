"""The input pipeline, through grain: the batch of step `s` is a pure function
of `(seed, s)`.

    batches = pipeline.train_batches(part, 128, host, seed=0, start_step=0,
                                     workers=2)
    on_device = pipeline.device_prefetch(batches, put, size=2)

Training: `BatchIndices` (a grain MapDataset) maps step `s` to this process's
contiguous slice of the global batch's positions `[s*B, (s+1)*B)` in an
endless stream of per-epoch permutations seeded by `(seed, epoch)`; grain's
`map_with_index` reads those examples and runs the host work (`Host`:
decoding, crops of variable-size images, LM targets) with a generator seeded
by `(seed, s, process)`; `to_iter_dataset` prefetches with one thread, or
`mp_prefetch` with `workers` processes (`data.workers`). A run resumed at step
`s` starts the dataset there, so it sees exactly the batches an uninterrupted
run sees: the iterator's state is the next step, stored in the checkpoint,
whatever the worker count. `device_prefetch` places the next batches on the
devices ahead of the step. Evaluation (`eval_batches`): one pass in order, the
last batch padded with mask 0.

Images stay uint8 here; normalisation and crop/flip run on the device inside
the jitted step (distill/data/augment.py).
"""
import collections
import os
import signal
import sys
import threading
import time

import grain
import numpy as np

from distill.data import augment as augment_lib

AUGMENTATIONS = augment_lib.AUGMENTATIONS


class Host:
  """The host half of preprocessing: a raw batch (dict of numpy arrays) to
  `inputs` (uint8 images, int32 tokens), `label` or `targets`, `id`, `mask`
  and the `teacher` targets a part carries. `image_size > 0` resizes
  variable-size images (ImageNet-style sets): for evaluation the shorter side
  to image_size / 0.875 and a center crop; for training with
  augment='inception_crop' a random-resized crop (area 8-100%, aspect
  3/4-4/3) and a flip."""

  def __init__(self, spec, augment='', image_size=0):
    self.spec = spec
    self.augment = augment
    self.image_size = image_size

  def __call__(self, raw, rng=None):
    x = raw[self.spec.input_key]
    out = {'id': raw['id']}
    if self.spec.task == 'lm':
      out['inputs'] = x[:, :-1].astype(np.int32)
      out['targets'] = x[:, 1:].astype(np.int32)
      if 'token_mask' in raw:          # padded document windows
        out['target_mask'] = raw['token_mask'][:, 1:].astype(np.float32)
    else:
      if self.image_size:
        train = self.augment == 'inception_crop' and rng is not None
        x = np.stack([inception_crop(im, self.image_size, rng) if train
                      else center_crop(im, self.image_size) for im in x])
      out['inputs'] = x
      out['label'] = raw[self.spec.label_key].astype(np.int32)
    out['mask'] = np.ones(len(x), np.float32)
    if 'teacher' in raw:
      out['teacher'] = raw['teacher']
    return out


def _resize(image, height, width):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.fromarray(image).resize(
      (width, height), Image.Resampling.BILINEAR))


def center_crop(image, size, crop_fraction=0.875):
  """Shorter side to size / crop_fraction, then the central size x size."""
  h, w = image.shape[:2]
  scale = size / crop_fraction / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  image = _resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top:top + size, left:left + size]


def inception_crop(image, size, rng, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  """A random crop of random area and aspect ratio, resized, maybe flipped."""
  h, w = image.shape[:2]
  for _ in range(10):
    target = rng.uniform(*area) * h * w
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    ch, cw = int(round(np.sqrt(target / aspect))), int(round(np.sqrt(
        target * aspect)))
    if 0 < ch <= h and 0 < cw <= w:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      image = image[top:top + ch, left:left + cw]
      break
  image = _resize(image, size, size)
  return image[:, ::-1] if rng.random() < 0.5 else image


class Inputs:
  """How a dataset's raw examples become model inputs: the host halves
  (`host_train` with the augmentation's host part, `host_eval`) and the
  device half (`device(x, key=None)`, jittable; a key applies the training
  augmentation)."""

  def __init__(self, spec, augment='', image_size=0):
    self.spec = spec
    self.host_train = Host(spec, augment, image_size)
    self.host_eval = Host(spec, '', image_size)
    self.device = augment_lib.model_inputs(spec, augment)


class BatchIndices(grain.MapDataset):
  """Step `s` -> the source indices of this process's slice of the global
  batch of step `s`: positions `[s*B, (s+1)*B)` of an endless stream made of
  per-epoch permutations of the `n` examples, seeded by `(seed, epoch)`
  (numpy's `default_rng([seed, epoch])`, the identity without `shuffle`);
  process `p` of `P` takes the contiguous `[p*B/P, (p+1)*B/P)`."""

  def __init__(self, n, global_batch, seed=0, process_index=0,
               process_count=1, shuffle=True):
    super().__init__()
    if n == 0:
      raise ValueError('cannot train on an empty split')
    if global_batch % process_count:
      raise ValueError(f'batch size {global_batch} is not divisible by the '
                       f'process count {process_count}')
    self.n, self.batch, self.seed, self.shuffle = n, global_batch, seed, shuffle
    self.local = global_batch // process_count
    self.offset = process_index * self.local
    self._perms = collections.OrderedDict()

  def __len__(self):
    return sys.maxsize

  def _perm(self, epoch):
    if epoch not in self._perms:
      if len(self._perms) > 4:
        self._perms.popitem(last=False)
      self._perms[epoch] = (
          np.random.default_rng([self.seed, epoch]).permutation(self.n)
          if self.shuffle else np.arange(self.n))
    return self._perms[epoch]

  def __getitem__(self, step):
    if isinstance(step, slice):
      return self.slice(step)
    pos = step * self.batch + self.offset + np.arange(self.local)
    epochs, within = np.divmod(pos, self.n)
    out = np.empty(self.local, np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self._perm(int(e))[within[sel]]
    return out


class _ReadStep:
  """Step, indices -> the host batch (a picklable map for grain workers)."""

  def __init__(self, part, host, seed, process_index, start):
    self.part, self.host = part, host
    self.seed, self.process_index, self.start = seed, process_index, start

  def __call__(self, i, indices):
    step = self.start + i
    rng = np.random.default_rng([self.seed, step, self.process_index, 1])
    return self.host(self.part.get(indices), rng)


def train_batches(part, global_batch, host, seed=0, start_step=0,
                  process_index=0, process_count=1, workers=0, prefetch=2,
                  shuffle=True):
  """An endless grain iterator of this process's training batches from
  `start_step` on; `close()` it (workers are processes)."""
  steps = BatchIndices(len(part), global_batch, seed, process_index,
                       process_count, shuffle)[start_step:]
  ds = steps.map_with_index(_ReadStep(part, host, seed, process_index,
                                      start_step))
  return _iterate(ds, workers, prefetch)


def _iterate(ds, workers, prefetch):
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=1 if prefetch and not workers else 0,
      prefetch_buffer_size=max(prefetch, 1)))
  if workers:
    _grain_flags_ready()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=workers, per_worker_buffer_size=max(prefetch, 1)),
                        worker_init_fn=_exit_with_parent)
  return iter(it)


def _exit_with_parent(worker_index, worker_count):
  """In each input worker: exit as soon as the training process is gone
  (killed with -9, it cannot stop its workers itself), and ignore Ctrl-C,
  which a terminal sends to them too: the training process saves and
  stops them."""
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(1.0)
    os._exit(0)

  threading.Thread(target=watch, daemon=True).start()


def _grain_flags_ready():
  """grain's multiprocessing reads absl flags: parse them (to their
  defaults) where no absl app did, e.g. under pytest or in a notebook."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class _ReadEval:
  """Batch number -> the padded host batch of one pass in order."""

  def __init__(self, part, host, global_batch, process_index, process_count):
    self.part, self.host, self.batch = part, host, global_batch
    self.local = global_batch // process_count
    self.offset = process_index * self.local

  def __call__(self, j):
    n = len(self.part)
    pos = j * self.batch + self.offset + np.arange(self.local)
    valid = pos < n
    out = self.host(self.part.get(np.where(valid, pos, 0)), None)
    out['mask'] = out['mask'] * valid.astype(np.float32)
    return out


def eval_batches(part, global_batch, host, process_index=0, process_count=1,
                 workers=0, prefetch=2):
  """One pass over `part` in order (a grain iterator); the last batch is
  padded, with mask 0 on the padding."""
  count = -(-len(part) // global_batch)
  ds = grain.MapDataset.range(count).map(_ReadEval(
      part, host, global_batch, process_index, process_count))
  it = _iterate(ds, workers, prefetch)
  try:
    yield from it
  finally:
    close(it)


def close(iterator):
  """Stops a grain iterator's threads and worker processes."""
  stop = getattr(iterator, 'close', None)
  if stop is not None:
    stop()


def device_prefetch(batches, put, size=2):
  """Yields `put(batch)` (placed on the devices, asynchronously) `size`
  batches ahead of the consumer."""
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
