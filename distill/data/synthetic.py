"""Stand-in datasets with a config's shapes, for benchmarks and the compile
check: no dataset files, no downloads. Values are random; only shapes,
dtypes and class counts are real.

    from distill.data import synthetic
    data = synthetic.data_like(config)       # a loading.Data
"""
import numpy as np

from core.errors import ConfigError
from distill.data import datasets
from distill.data import loading

# dataset name -> (input key, raw input shape (None: from the config), dtype,
# classes). Catalog images are generated at the config's image_size
# (+ 32 pixels, so that crops have room).
_IMAGE = {'digits': ((8, 8, 1), 10), 'mnist5k': ((28, 28, 1), 10),
          'mnist': ((28, 28, 1), 10), 'fashion_mnist': ((28, 28, 1), 10),
          'cifar10_jpeg': ((32, 32, 3), 10), 'cifar10': ((32, 32, 3), 10),
          'cifar100': ((32, 32, 3), 100), 'imagenet2012': (None, 1000)}
CHOICES = sorted(list(_IMAGE) + ['mnist1d', 'tiny_shakespeare'])


class Synthetic:
  """A part of `n` random examples shaped like `example` (a batch of one)."""

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


def example_like(data_cfg):
  """(one raw example as a batch of one, number of classes or vocabulary)."""
  name = data_cfg.name
  if datasets.spec(data_cfg).task == 'lm':
    vocab = data_cfg.get('vocab_size') or 65   # 65: Tiny Shakespeare's chars
    return {'tokens': np.full((1, data_cfg.seq_len + 1), vocab - 1, np.int32),
            'id': np.zeros(1, np.int64)}, vocab
  if name == 'mnist1d':
    return {'signal': np.zeros((1, 40, 1), np.float32),
            'label': np.full(1, 9, np.int64), 'id': np.zeros(1, np.int64)}, 10
  if name not in _IMAGE:
    raise ConfigError(f'no synthetic stand-in for dataset {name!r}; valid '
                      f'choices: {", ".join(CHOICES)} or a text set')
  shape, classes = _IMAGE[name]
  if shape is None:
    size = int(data_cfg.get('image_size') or 224) + 32
    shape = (size, size, 3)
  return {'image': np.full((1,) + shape, 255, np.uint8),
          'label': np.full(1, classes - 1, np.int64),
          'id': np.zeros(1, np.int64)}, classes


def data_like(config, n=None):
  """A `loading.Data` with the shapes of `config.data`, every part the same
  `n` random examples (default: one batch, at least 64)."""
  example, classes = example_like(config.data)
  known = config.data.name in datasets.OFFLINE or 'tokens' in example
  spec = datasets.spec(config.data) if known else datasets.DatasetSpec(
      'image', 'classification', mean=(127.5,) * 3, std=(64.0,) * 3)
  part = Synthetic(example, n=n or max(64, config.batch_size))
  return loading.Data(spec, {p: part for p in ('labeled', 'validation',
                                             'unlabeled', 'test')}, classes)


def example_inputs(config, data):
  """One example's model inputs (a batch of one, as the model reads it)."""
  from distill.data import pipeline  # pylint: disable=g-import-not-at-top
  inputs = pipeline.Inputs(data.spec, image_size=config.data.image_size)
  return inputs.device(inputs.host_eval(
      data.parts['labeled'].get(np.arange(1)))['inputs'])


def teacher_targets(n, classes, seq_len=None, seed=0):
  """Random cached teacher targets for `n` examples, with every key a
  distillation method reads (logits; weight; alpha and k)."""
  rng = np.random.default_rng(seed)
  shape = (n, classes) if seq_len is None else (n, seq_len, classes)
  return {'logits': rng.normal(size=shape).astype(np.float32),
          'weight': rng.uniform(size=n).astype(np.float32),
          'alpha': rng.uniform(size=n).astype(np.float32),
          'k': np.full(n, min(2, classes), np.int32)}
