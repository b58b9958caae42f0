"""Host input pipeline: deterministic batches as a pure function of the step.

Training batches: for global step `s`, the batch is positions
`[s*B, (s+1)*B)` of an endless stream made of per-epoch permutations seeded
by `(seed, epoch)`. Augmentation randomness is seeded by `(seed, step)`. So a
run resumed at step `s` sees exactly the batches an uninterrupted run sees,
and the only iterator state to checkpoint is the next step.

Each process takes its contiguous slice of the global batch; the train loop
assembles the global array with `jax.make_array_from_process_local_data`.
A background thread prefetches `prefetch` batches.
"""
import queue
import threading

import numpy as np


def preprocessor(spec, augment='', image_size=0):
  """Returns `fn(raw_batch, rng) -> batch` with keys inputs/label|targets/id/mask.

  `image_size > 0` resizes images (ImageNet-style sets of variable size): for
  evaluation, the shorter side to image_size / 0.875 then a center crop;
  for training with augment='inception_crop', a random-resized crop (area
  8-100%, aspect 3/4-4/3) and a flip.
  """
  mean = None if spec.mean is None else np.asarray(spec.mean, np.float32)
  std = None if spec.std is None else np.asarray(spec.std, np.float32)

  def fn(raw, rng):
    x = raw[spec.input_key]
    out = {'id': raw['id']}
    if spec.task == 'lm':
      out['inputs'] = x[:, :-1].astype(np.int32)
      out['targets'] = x[:, 1:].astype(np.int32)
    else:
      if image_size:
        train = augment == 'inception_crop' and rng is not None
        x = np.stack([inception_crop(im, image_size, rng) if train
                      else center_crop(im, image_size) for im in x])
      elif augment and rng is not None:
        x = AUGMENTATIONS[augment](x, rng)
      x = x.astype(np.float32)
      if mean is not None:
        x = (x - mean) / std
      out['inputs'] = x
      out['label'] = raw[spec.label_key].astype(np.int32)
    out['mask'] = np.ones(len(x), np.float32)
    if 'teacher' in raw:
      out['teacher'] = raw['teacher']
    return out

  return fn


def crop_flip(images, rng, pad=4):
  """Random crop with `pad` pixels of zero padding, and random h-flip (NHWC)."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy = rng.integers(0, 2 * pad + 1, n)
  dx = rng.integers(0, 2 * pad + 1, n)
  rows = dy[:, None] + np.arange(h)[None]          # (n, h)
  cols = dx[:, None] + np.arange(w)[None]          # (n, w)
  flip = rng.random(n) < 0.5
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def flip(images, rng):
  f = rng.random(len(images)) < 0.5
  return np.where(f[:, None, None, None], images[:, :, ::-1], images)


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


AUGMENTATIONS = {'crop_flip': crop_flip, 'flip': flip,
                 'inception_crop': None}   # applied with data.image_size


class TrainBatches:
  """Endless, resumable iterator of process-local training batches."""

  def __init__(self, source, global_batch_size, preprocess, seed=0,
               start_step=0, process_index=0, process_count=1, prefetch=2,
               shuffle=True):
    if global_batch_size % process_count:
      raise ValueError(f'batch size {global_batch_size} is not divisible by '
                       f'the process count {process_count}')
    self.source = source
    self.n = len(source)
    if self.n == 0:
      raise ValueError('cannot train on an empty split')
    self.batch = global_batch_size
    self.local = global_batch_size // process_count
    self.offset = process_index * self.local
    self.process_index = process_index
    self.preprocess = preprocess
    self.seed = seed
    self.shuffle = shuffle
    self.step = start_step
    self._perm_cache = {}
    self._prefetch = prefetch
    self._queue = None
    self._thread = None
    self._stop = threading.Event()

  def _perm(self, epoch):
    if epoch not in self._perm_cache:
      if len(self._perm_cache) > 4:
        self._perm_cache.clear()
      self._perm_cache[epoch] = (
          np.random.default_rng([self.seed, epoch]).permutation(self.n)
          if self.shuffle else np.arange(self.n))
    return self._perm_cache[epoch]

  def indices(self, step):
    """Source indices of this process's part of the global batch at `step`."""
    pos = step * self.batch + self.offset + np.arange(self.local)
    epochs, within = np.divmod(pos, self.n)
    out = np.empty(self.local, np.int64)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self._perm(int(e))[within[sel]]
    return out

  def batch_at(self, step):
    rng = np.random.default_rng([self.seed, step, self.process_index, 1])
    return self.preprocess(self.source.get(self.indices(step)), rng)

  def state(self):
    """What a checkpoint stores to resume this iterator."""
    return {'next_step': int(self.step), 'seed': int(self.seed),
            'num_examples': int(self.n)}

  def _worker(self, start):
    step = start
    while not self._stop.is_set():
      item = self.batch_at(step)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      step += 1

  def __iter__(self):
    return self

  def __next__(self):
    if self._prefetch <= 0:
      out = self.batch_at(self.step)
    else:
      if self._thread is None:
        self._queue = queue.Queue(self._prefetch)
        self._thread = threading.Thread(target=self._worker,
                                        args=(self.step,), daemon=True)
        self._thread.start()
      out = self._queue.get()
    self.step += 1
    return out

  def close(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)


def eval_batches(source, global_batch_size, preprocess, process_index=0,
                 process_count=1):
  """One pass over `source` in order; the last batch is padded, mask=0."""
  local = global_batch_size // process_count
  n = len(source)
  for start in range(0, n, global_batch_size):
    pos = start + process_index * local + np.arange(local)
    valid = pos < n
    batch = preprocess(source.get(np.where(valid, pos, 0)), None)
    batch['mask'] = batch['mask'] * valid.astype(np.float32)
    yield batch
