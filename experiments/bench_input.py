"""The input pipeline, old against new, in one run: examples/s delivered by
the host, per host core, and as a share of what one accelerator consumes.

    python -m experiments.bench_input            # or: experiments.bench --sections=input

Sources (generated here, so no dataset file is needed):
  cifar_memory   10,000 uint8 32x32 images held in RAM, crop + flip;
  cifar_jpeg     5,000 32x32 JPEGs in an array_record TFDS dataset (our
                 cifar10_jpeg builder on a generated archive), decoded per
                 batch, crop + flip;
  imagenet_jpeg  400 JPEGs of 375x500 (ImageNet's typical size), decoded
                 and inception-cropped to 224x224;
  lm_tokens      windows of 1,024 tokens from the `text` builder.
Pipelines:
  old            the pipeline before grain, kept here as the reference: one
                 thread reads, decodes, crops/flips and normalises to float32
                 on the host (`LegacyBatches`);
  new, w workers distill/data/pipeline.py: grain with w worker processes;
                 images stay uint8 on the host, normalisation and crop/flip
                 run on the device inside the step (not counted here: on an
                 accelerator they overlap with the step; `new, device work on
                 this CPU` adds their cost where the device is this CPU).
Accelerator consumption (for the ratio): CIFAR-10 at airbench94's pace,
9.9 epochs of 50,000 images in 3.83 s on one A100 (KellerJordan/
cifar10-airbench, airbench94.py), about 129,000 images/s; ImageNet ResNet-50
v1.5 training with mixed precision on one A100 80GB, 2,470 images/s
(NVIDIA DeepLearningExamples, PyTorch resnet50v1.5 README); LM tokens: a
1B-parameter model at 6 FLOPs per parameter per token and 50% of an A100's
312 bfloat16 TFLOP/s, about 26,000 tokens/s (an estimate, not a
measurement).
"""
import io
import os
import queue
import tarfile
import tempfile
import threading
import time

import numpy as np

CONSUMPTION = {   # examples (tokens for the LM) per second, one accelerator
    'cifar_memory': 9.9 * 50_000 / 3.83,
    'cifar_jpeg': 9.9 * 50_000 / 3.83,
    'imagenet_jpeg': 2470.0,
    'lm_tokens': 0.5 * 312e12 / (6 * 1e9),
}
BATCH = {'cifar_memory': 256, 'cifar_jpeg': 256, 'imagenet_jpeg': 32,
         'lm_tokens': 32}


# --- the pipeline before grain (reference) ------------------------------------
def legacy_crop_flip(images, rng, pad=4):
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
  rows = dy[:, None] + np.arange(h)[None]
  cols = dx[:, None] + np.arange(w)[None]
  flip = rng.random(n) < 0.5
  cols = np.where(flip[:, None], cols[:, ::-1], cols)
  return padded[np.arange(n)[:, None, None], rows[:, :, None],
                cols[:, None, :]]


def legacy_preprocess(spec, augment='', image_size=0):
  """The old host preprocessing: crops, flips, float32 normalisation."""
  from distill.data import pipeline  # pylint: disable=g-import-not-at-top
  host = pipeline.Host(spec, augment, image_size)
  mean = None if spec.mean is None else np.asarray(spec.mean, np.float32)
  std = None if spec.std is None else np.asarray(spec.std, np.float32)

  def fn(raw, rng):
    out = host(raw, rng)
    if spec.task == 'lm':
      return out
    x = out['inputs']
    if augment == 'crop_flip':
      x = legacy_crop_flip(x, rng)
    x = x.astype(np.float32)
    out['inputs'] = (x - mean) / std if mean is not None else x
    return out

  return fn


class LegacyBatches:
  """The old iterator: one thread computes the batches of steps in order."""

  def __init__(self, part, batch, preprocess, prefetch=2):
    from distill.data import pipeline  # pylint: disable=g-import-not-at-top
    self.indices = pipeline.BatchIndices(len(part), batch)
    self.part, self.preprocess = part, preprocess
    self.queue = queue.Queue(prefetch)
    self.stop = threading.Event()
    self.thread = threading.Thread(target=self._work, daemon=True)
    self.thread.start()

  def _work(self):
    step = 0
    while not self.stop.is_set():
      rng = np.random.default_rng([0, step, 0, 1])
      item = self.preprocess(self.part.get(self.indices[step]), rng)
      while not self.stop.is_set():
        try:
          self.queue.put(item, timeout=0.1)
          break
        except queue.Full:
          pass
      step += 1

  def __next__(self):
    return self.queue.get()

  def close(self):
    self.stop.set()
    self.thread.join(timeout=5)


# --- sources -------------------------------------------------------------------
def _images(n, h, w, seed):
  """Smooth random images (so that JPEG sizes are realistic)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 255, (n, max(2, h // 16), max(2, w // 16), 3))
  big = np.repeat(np.repeat(small, 16, 1), 16, 2)[:, :h, :w]
  noise = rng.integers(-12, 12, big.shape)
  return np.clip(big + noise, 0, 255).astype(np.uint8)


def _jpeg(image):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'JPEG', quality=90)
  return buf.getvalue()


class JpegList:
  """Encoded JPEGs decoded by `get` (variable-size ImageNet-like images)."""

  def __init__(self, blobs):
    self.blobs = blobs

  def __len__(self):
    return len(self.blobs)

  def get(self, indices):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = np.empty(len(indices), object)
    images[:] = [np.asarray(Image.open(io.BytesIO(self.blobs[i])).convert(
        'RGB')) for i in indices]
    return {'image': images, 'label': np.zeros(len(indices), np.int64),
            'id': np.asarray(indices)}


def sources(tmp):
  """{name: (part, spec, augment, image_size)} of the benchmark."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  out = {}
  images = _images(10_000, 32, 32, 0)
  memory = datasets.ArraySource.of(image=images,
                                   label=np.arange(10_000) % 10,
                                   id=np.arange(10_000))
  cifar_spec = datasets.OFFLINE['cifar10_jpeg'][1]
  out['cifar_memory'] = (memory, cifar_spec, 'crop_flip', 0)

  archive = os.path.join(tmp, 'cifar10_jpeg.tar.gz')
  with tarfile.open(archive, 'w:gz') as tar:
    for split, n in (('train', 5000), ('test', 100)):
      for i, image in enumerate(_images(n, 32, 32, 1 if split == 'train'
                                        else 2)):
        blob = _jpeg(image)
        info = tarfile.TarInfo(f'{split}/cat/{i:05d}.jpg')
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
  cfg = common.base_config().data
  cfg.update(dict(name='cifar10_jpeg', manual_dir=tmp,
                  data_dir=os.path.join(tmp, 'tfds')))
  out['cifar_jpeg'] = (datasets.load_split(cfg, 'train'), cifar_spec,
                       'crop_flip', 0)

  blobs = [_jpeg(im) for im in _images(400, 375, 500, 3)]
  imagenet_spec = datasets.DatasetSpec('image', 'classification',
                                       mean=(123.7, 116.3, 103.5),
                                       std=(58.4, 57.1, 57.4))
  out['imagenet_jpeg'] = (JpegList(blobs), imagenet_spec, 'inception_crop',
                          224)

  text = os.path.join(tmp, 'corpus.txt')
  rng = np.random.default_rng(4)
  with open(text, 'w') as f:
    f.write(' '.join(''.join(rng.choice(list('abcdefghij '), 7))
                     for _ in range(300_000)))
  cfg = common.base_config().data
  cfg.update(dict(name='text', manual_dir=text, seq_len=1024,
                  data_dir=os.path.join(tmp, 'tfds')))
  out['lm_tokens'] = (datasets.load_split(cfg, 'train'), datasets.LM_SPEC,
                      '', 0)
  return out


# --- measurement ---------------------------------------------------------------
def _rate(make, batches, rounds, warmup=3):
  """Best examples/s of `batches` batches after `warmup` (worker start)."""
  best = 0.0
  for _ in range(rounds):
    it = make()
    try:
      for _ in range(warmup):
        first = next(it)
      n = len(first['id'])
      start = time.perf_counter()
      for _ in range(batches):
        next(it)
      best = max(best, n * batches / (time.perf_counter() - start))
    finally:
      (it.close if hasattr(it, 'close') else (lambda: None))()
  return best


def _device_seconds(spec, augment, batch_shape, rounds=3):
  """Seconds per batch of the on-device half (normalise, crop/flip) run on
  this CPU, jitted."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from distill.data import augment as augment_lib  # pylint: disable=g-import-not-at-top
  fn = jax.jit(augment_lib.model_inputs(spec, augment))
  x = jnp.zeros(batch_shape, jnp.uint8)
  key = jax.random.PRNGKey(0)
  fn(x, key).block_until_ready()
  best = float('inf')
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(10):
      fn(x, key).block_until_ready()
    best = min(best, (time.perf_counter() - start) / 10)
  return best


def run(rounds=2, batches=20, workers=(0, 1, 2)):
  """Rows of the table (one per source and pipeline)."""
  from distill.data import pipeline  # pylint: disable=g-import-not-at-top
  cores = os.cpu_count() or 1
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for name, (part, spec, augment, size) in sources(tmp).items():
      batch = BATCH[name]
      tokens = 1024 if name == 'lm_tokens' else 1
      n = batches if name != 'imagenet_jpeg' else max(4, batches // 4)
      rates = {'old': _rate(lambda: LegacyBatches(
          part, batch, legacy_preprocess(spec, augment, size)), n, rounds)}
      host = pipeline.Host(spec, augment, size)
      for w in workers:
        rates[f'new, {w} workers'] = _rate(
            lambda w=w: pipeline.train_batches(part, batch, host, workers=w),
            n, rounds)
      if spec.task != 'lm':
        shape = (batch, size or 32, size or 32, 3)
        device = _device_seconds(spec, augment, shape)
        host_only = rates['new, 0 workers']
        rates['new, device work on this CPU'] = 1 / (
            1 / host_only + device / batch)
      for pipe, rate in rates.items():
        rows.append(dict(
            source=name, pipeline=pipe, batch=batch,
            examples_per_s=rate, per_host_core=rate / cores,
            share_of_one_accelerator=rate * tokens / CONSUMPTION[name]))
      base = rates['new, 1 workers']
      rows.append(dict(source=name, pipeline='2 workers / 1 worker',
                       batch=batch, examples_per_s=rates['new, 2 workers'] /
                       base, per_host_core=float('nan'),
                       share_of_one_accelerator=float('nan')))
      print(f'-- {name}: ' + ', '.join(f'{k} {v:.0f}/s'
                                       for k, v in rates.items()), flush=True)
  return rows


def main():
  import json  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS(['bench_input'])
  print(json.dumps(run(), indent=1))


if __name__ == '__main__':
  main()
