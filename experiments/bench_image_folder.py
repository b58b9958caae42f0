"""Your own images: what preparing an image folder and the teacher's
labeling pass cost, against their floors.

    python -m experiments.bench_image_folder [--images=200] [--size=224]

Writes experiments/results/bench_image_folder.md:
  preparation   images/s of `data.name=image_folder` preparing a generated
                folder of JPEGs of 375x500 (ImageNet's typical size) into
                array_record (decode, resize, center square, write), against
                decoding and resizing alone (the same PIL calls, nothing
                written);
  labeling      images/s of the teacher's labeling pass (distill/predict.py:
                logits of a part, with its host pipeline) against its jitted
                eval step alone on batches already on the device; a
                ResNet-18 at `--size` on this CPU.
The images are generated here: nothing is downloaded.
"""
import argparse
import os
import tempfile
import time

import numpy as np


def _write_jpegs(root, n, classes=4):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
  for i in range(n):
    folder = os.path.join(root, f'class{i % classes}')
    os.makedirs(folder, exist_ok=True)
    img = np.roll(base, i, axis=1)
    Image.fromarray(img).save(os.path.join(folder, f'{i:05d}.jpg'),
                              quality=90)


def _data_cfg(root, data_dir, size):
  from configs import common  # pylint: disable=g-import-not-at-top
  cfg = common.base_config().data
  cfg.name, cfg.manual_dir, cfg.data_dir = 'image_folder', root, data_dir
  cfg.image_size = size
  cfg.in_memory = False
  return cfg


def bench_preparation(root, data_dir, size, n):
  from distill.data import builders, datasets  # pylint: disable=g-import-not-at-top
  paths = [os.path.join(base, f) for base, _, names in os.walk(root)
           for f in names]
  stored = datasets.stored_size(size)
  t = time.perf_counter()
  for p in paths:
    builders.decode_image(p, stored)
  decode = n / (time.perf_counter() - t)
  t = time.perf_counter()
  datasets.load_split(_data_cfg(root, data_dir, size), 'train')
  prepare = n / (time.perf_counter() - t)
  return decode, prepare


def bench_labeling(root, data_dir, size, batch):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from distill import predict, sharding  # pylint: disable=g-import-not-at-top
  from distill.data import loading, pipeline  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  cfg = _data_cfg(root, data_dir, size)
  data = loading.load_data(cfg)
  part = data.parts['labeled']
  model = models.build('resnet_imagenet', data.num_classes, depth=18)
  x = jnp.zeros((batch, size, size, 3), jnp.uint8)
  inputs = pipeline.Inputs(data.spec, image_size=size)
  variables = nn.meta.unbox(model.init(jax.random.PRNGKey(0),
                                       inputs.device(x)))
  config = common.base_config()
  mesh = sharding.stage_mesh(config)
  step = jax.jit(lambda v, b: model.apply(v, inputs.device(b)))
  step(variables, x).block_until_ready()
  t, reps = time.perf_counter(), max(1, len(part) // batch)
  for _ in range(reps):
    step(variables, x).block_until_ready()
  eval_only = reps * batch / (time.perf_counter() - t)
  # predict.logits jits per call: the second call reads the first's
  # program from the compilation cache (a folder of this run)
  jax.config.update('jax_compilation_cache_dir',
                    os.path.join(data_dir, 'xla-cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  predict.logits(model, variables, part, inputs, mesh, batch)
  t = time.perf_counter()
  predict.logits(model, variables, part, inputs, mesh, batch)
  labeling = len(part) / (time.perf_counter() - t)
  return eval_only, labeling


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--images', type=int, default=200)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch', type=int, default=50)
  parser.add_argument('--out', default=os.path.join(
      os.path.dirname(__file__), 'results', 'bench_image_folder.md'))
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix='bench-image-folder-') as tmp:
    root = os.path.join(tmp, 'images')
    _write_jpegs(root, args.images)
    decode, prepare = bench_preparation(root, os.path.join(tmp, 'tfds'),
                                        args.size, args.images)
    eval_only, labeling = bench_labeling(root, os.path.join(tmp, 'tfds'),
                                         args.size, args.batch)
  rows = [
      ('preparation: decode + resize alone', decode),
      ('preparation: image_folder into array_record', prepare),
      ('labeling: ResNet-18 eval step alone', eval_only),
      ('labeling: the teacher\'s labeling pass', labeling),
  ]
  text = ['# Your own images: preparation and labeling',
          '',
          f'`python -m experiments.bench_image_folder --images={args.images} '
          f'--size={args.size}` ({os.cpu_count()} CPU cores, shared; '
          f'375x500 JPEGs, inputs {args.size}x{args.size}).',
          '',
          '| what | images/s |', '|---|---|']
  text += [f'| {name} | {value:.1f} |' for name, value in rows]
  text += ['', f'Preparation runs at {prepare / decode:.2f} of decoding '
           f'alone; the labeling pass at {labeling / eval_only:.2f} of the '
           'eval step alone.', '']
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write('\n'.join(text))
  print('\n'.join(text))


if __name__ == '__main__':
  main()
