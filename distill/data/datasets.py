"""Datasets by name: our offline builders first, then the TFDS catalog.

    source = datasets.load_split(data_config, 'train')   # random access
    batch = source.get(np.arange(8))                       # dict of arrays

Our builders (`digits`, `mnist5k`, `mnist1d`, `cifar10_jpeg`,
`tiny_shakespeare`) build offline; any other name goes to
`tfds.data_source(name, data_dir=...)` (a prepared data dir, or a machine with
internet). Everything is read through array_record data sources: no
TensorFlow.
"""
import contextlib
import dataclasses
import errno
import fcntl
import glob
import os
import shutil
import socket
import tarfile
import tempfile
import zlib
from typing import Any, Callable, Optional

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from core.errors import ConfigError, EnvironmentFault, errno_of
from core.errors import no_space, one_line
from distill import files
from distill.data import builders
from distill.data import splits
from distill.data import text
from distill.data import tokenizers


_from_bucket = tfds.core.DatasetInfo.initialize_from_bucket


def _initialize_from_bucket(self):
  """TFDS's DatasetInfo.initialize_from_bucket, run whenever a builder of a
  dataset not yet prepared is made, copies files into a folder of
  `tempfile.mkdtemp` it never removes (an empty one with Cloud Storage off):
  here that folder is inside one removed right after."""
  with tempfile.TemporaryDirectory(prefix='distill-tfds-info-') as folder:
    before, tempfile.tempdir = tempfile.tempdir, folder
    try:
      _from_bucket(self)
    finally:
      tempfile.tempdir = before


tfds.core.DatasetInfo.initialize_from_bucket = _initialize_from_bucket


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the rest of the code needs to know about a dataset."""
  input_key: str            # feature holding the model input
  task: str                 # 'classification' or 'lm'
  label_key: Optional[str] = 'label'
  mean: Any = None          # per-channel mean of uint8 inputs (0..255 scale)
  std: Any = None


_CIFAR_MEAN = (125.3, 123.0, 113.9)
_CIFAR_STD = (63.0, 62.1, 66.7)

# name -> (builder factory(data_config) -> builder, spec).
def _mnist1d(cfg, data_dir):
  return builders.Mnist1d(
      config=builders.mnist1d_config(cfg.get('num_samples', 5000) or 5000),
      data_dir=data_dir)


def _text(cfg, data_dir, source):
  return builders.TextFiles(
      config=builders.text_config(source, cfg.get('seq_len', 128) or 128,
                                  cfg.get('tokenizer', 'char') or 'char',
                                  cfg.get('vocab_size', 0) or 0),
      data_dir=data_dir)


LM_SPEC = DatasetSpec('tokens', 'lm', label_key=None)

# Your own images are normalised like ImageNet's (pretrained weights' inputs).
_IMAGENET_MEAN = (123.7, 116.3, 103.5)
_IMAGENET_STD = (58.4, 57.1, 57.4)


def stored_size(image_size):
  """The square side an image folder is prepared at for model inputs of
  `image_size`: the evaluation resize (image_size / 0.875, as
  pipeline.center_crop) so the crops of training and evaluation have
  margin."""
  return max(image_size, round(image_size / 0.875))


def _image_folder(cfg, data_dir, source, labeled=True):
  return builders.ImageFolder(
      config=builders.image_folder_config(
          source, stored_size(cfg.get('image_size') or 0),
          test_dir=cfg.get('test_dir') or '' if labeled else '',
          skip_bad=bool(cfg.get('skip_bad_images', False)),
          labeled=labeled),
      data_dir=data_dir)


# name -> (factory(data config, data dir, local source path) -> builder,
# spec, the file data.manual_dir holds ('' for a file or folder of any name;
# None: an embedded set)).
OFFLINE: dict[str, tuple[Callable[..., Any], DatasetSpec, Any]] = {
    'digits': (lambda cfg, d, s: builders.Digits(data_dir=d),
               DatasetSpec('image', 'classification', mean=(127.5,),
                           std=(127.5,)), None),
    'mnist5k': (lambda cfg, d, s: builders.Mnist5k(data_dir=d),
                DatasetSpec('image', 'classification', mean=(33.3,),
                            std=(78.6,)), None),
    'mnist1d': (lambda cfg, d, s: _mnist1d(cfg, d),
                DatasetSpec('signal', 'classification'), None),
    'cifar10_jpeg': (lambda cfg, d, s: builders.Cifar10Jpeg(
        config=builders.cifar10_config(s), data_dir=d),
                     DatasetSpec('image', 'classification', mean=_CIFAR_MEAN,
                                 std=_CIFAR_STD), 'cifar10_jpeg.tar.gz'),
    # Any UTF-8 file or folder (data.manual_dir), tokenized by
    # data.tokenizer into windows of data.seq_len + 1.
    'text': (_text, LM_SPEC, ''),
    # Your own images: data.manual_dir/<class>/<image> (JPEG/PNG), test
    # images in <dir>/test/<class>/ or data.test_dir; prepared at
    # data.image_size / 0.875.
    'image_folder': (_image_folder,
                     DatasetSpec('image', 'classification', mean=_IMAGENET_MEAN,
                                 std=_IMAGENET_STD), ''),
    # Images without labels (data.unlabeled_from.folder: a folder or glob).
    'image_files': (lambda cfg, d, s: _image_folder(cfg, d, s, labeled=False),
                    DatasetSpec('image', 'classification', label_key=None,
                                mean=_IMAGENET_MEAN, std=_IMAGENET_STD), '*'),
    'tiny_shakespeare': (_text, LM_SPEC, 'tiny_shakespeare.txt'),
}

# Input statistics of well-known catalog sets; others default to 0..1 scaling.
_CATALOG_STATS = {
    'cifar10': (_CIFAR_MEAN, _CIFAR_STD),
    'cifar100': ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    'imagenet2012': ((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)),
    'mnist': ((33.3,), (78.6,)),
    'fashion_mnist': ((72.9,), (90.0,)),
}


def default_data_dir():
  return os.environ.get('TFDS_DATA_DIR',
                        os.path.join(os.path.expanduser('~'),
                                     'tensorflow_datasets'))


_MANUAL_WHAT = {
    'image_folder': 'a folder of <class>/<image> folders (JPEG/PNG)',
    'image_files': 'a folder of JPEG/PNG images or a glob (e.g. dir/*.jpg)',
}
_MANUAL_KEY = {'image_files': 'data.unlabeled_from.folder'}


def _manual_file(cfg):
  """The local source of an offline builder that needs one, checked:
  data.manual_dir is that file or a folder holding it (for `text`, any file
  or a folder of text files)."""
  name = OFFLINE[cfg.name][2]
  if name is None:
    return None
  manual = cfg.get('manual_dir')
  what = _MANUAL_WHAT.get(cfg.name, 'the path of a UTF-8 text file or folder')
  if not manual:
    raise ConfigError(f'dataset {cfg.name!r} needs data.manual_dir: '
                      + (f'the folder of {name} or its path (e.g. '
                         '../shared/datasets)' if name else what))
  if name == '*':             # a folder, or a glob of files
    if not (os.path.isdir(manual) or glob.glob(manual, recursive=True)):
      raise ConfigError(f'{_MANUAL_KEY.get(cfg.name, "data.manual_dir")}='
                        f'{manual} is no folder and matches no file; give '
                        f'{what}')
    return manual
  if not os.path.exists(manual):
    raise ConfigError(f'data.manual_dir does not exist: {manual}')
  if not name:
    if os.path.isdir(manual) and not builders.source_files(manual):
      raise ConfigError(f'data.manual_dir={manual} holds no file; give '
                        + _MANUAL_WHAT.get(cfg.name, 'a UTF-8 text file or a '
                                           'folder of them'))
    return manual
  path = os.path.join(manual, name) if os.path.isdir(manual) else manual
  if not os.path.isfile(path):
    raise ConfigError(f'data.manual_dir={manual} holds no {name}; give its '
                      'folder or its path')
  return path


def _prepare(builder, cfg, source):
  """builder.download_and_prepare, each fault one line: an unreadable
  source file, a data dir that cannot be written, a full disk."""
  data_dir = cfg.get('data_dir') or default_data_dir()
  try:
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(
            manual_dir=cfg.get('manual_dir') or None))
  except builders.SourceMismatch as e:
    raise ConfigError(f'{_MANUAL_KEY.get(cfg.name, "data.manual_dir")}='
                      f'{cfg.get("manual_dir")}: '
                      f'{one_line(e, 300)}' + (
                          '; remove it or set data.skip_bad_images=True'
                          if isinstance(e, builders.BadImage) else '')) from e
  except (EOFError, tarfile.TarError, zlib.error, UnicodeDecodeError,
          builders.SourceError) as e:
    raise EnvironmentFault(
        f'{source} is unreadable ({type(e).__name__}: {one_line(e, 120)}); '
        'restore the file (see ../shared/datasets/README.md)') from e
  except Exception as e:  # pylint: disable=broad-except
    raise _data_dir_fault(e, cfg.name, data_dir) or e


def _data_dir_fault(error, name, data_dir):
  """The one-line fault of a data dir that cannot be written, or None."""
  code = errno_of(error)
  if code == errno.ENOSPC:
    return EnvironmentFault(no_space(data_dir))
  if code in (errno.EROFS, errno.EACCES, errno.EPERM):
    return EnvironmentFault(
        f'cannot prepare dataset {name!r} in the TFDS data dir '
        f'{data_dir}: {os.strerror(code).lower()}; set data.data_dir (or '
        '$TFDS_DATA_DIR) to a writable folder')
  return None


@contextlib.contextmanager
def preparing(builder, name, data_dir):
  """Holds the lock of preparing `builder`'s dataset and version in its
  data dir, `<data_dir>/<dataset>[/<config>]/.<version>.lock`, an
  `fcntl.flock` the kernel releases when its holder dies (kill -9
  included). A second process waits for the first (saying so), then finds
  the dataset prepared. Under the lock, what a killed preparation left
  (TFDS's `incomplete.*` folders of this version) is removed first; TFDS
  renames a finished preparation into place, so nothing half-written is
  ever taken for prepared data. A preparation that fails removes the
  folders it created. The holder deletes the lock file before releasing
  it; a waiter that then holds a deleted file's lock takes the lock again.
  (A data dir on Cloud Storage has no flock: not locked.)"""
  target = str(builder.data_dir)
  if not files.is_local(target):
    yield
    return
  parent = os.path.dirname(target)
  created = [d for d in _parents(parent, data_dir) if not os.path.exists(d)]
  path = os.path.join(parent, f'.{os.path.basename(target)}.lock')
  ok = False
  try:
    os.makedirs(parent, exist_ok=True)
    lock = _take(path, name, data_dir)
  except OSError as e:
    _remove_empty(created)
    raise _data_dir_fault(e, name, data_dir) or e from e
  try:
    for stale in glob.glob(os.path.join(
        glob.escape(parent), f'incomplete.*_{os.path.basename(target)}')):
      shutil.rmtree(stale, ignore_errors=True)
    yield
    ok = True
  finally:
    try:
      os.remove(path)
    except OSError:
      pass
    lock.close()              # releases the flock
    if not ok:
      _remove_empty([os.path.join(data_dir, 'downloads', 'extracted'),
                     os.path.join(data_dir, 'downloads')] + created)


def _take(path, name, data_dir):
  """The open lock file at `path`, flock'ed (waiting for its holder)."""
  said = False
  while True:
    f = open(path, 'a+')
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      if not said:
        f.seek(0)
        holder = f.read().strip() or 'another process'
        print(f'Waiting for {holder} preparing dataset {name!r} in '
              f'{data_dir} ...', flush=True)
        said = True
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:                  # else its holder deleted it: take it again
      f.seek(0)
      f.truncate()
      f.write(f'pid {os.getpid()} on {socket.gethostname()}')
      f.flush()
      return f
    f.close()


def _parents(path, root):
  """`path` and its parents down to `root` (included), deepest first."""
  out, path, root = [], os.path.abspath(path), os.path.abspath(root)
  while True:
    out.append(path)
    if path == root or os.path.dirname(path) == path:
      return out
    path = os.path.dirname(path)


def _remove_empty(folders):
  for folder in folders:
    try:
      os.rmdir(folder)
    except OSError:
      pass


def _builder(cfg):
  """The prepared TFDS builder for an offline dataset (built on first use,
  into a directory of its own for each local source; one process prepares
  it while others wait, `preparing`)."""
  factory, _, _ = OFFLINE[cfg.name]
  data_dir = cfg.get('data_dir') or default_data_dir()
  source = _manual_file(cfg)

  def make():
    try:
      return factory(cfg, data_dir, source)
    except builders.SourceError as e:
      raise ConfigError(f'{_MANUAL_KEY.get(cfg.name, "data.manual_dir")}='
                        f'{cfg.manual_dir}: {e}') from e

  builder = make()
  if builder.is_prepared():
    return builder
  with preparing(builder, cfg.name, data_dir):
    builder = make()        # as another process may have prepared it
    if not builder.is_prepared():
      _prepare(builder, cfg, source or cfg.name)
      skipped = (builder.info.metadata or {}).get('skipped')
      if skipped:
        print(f'Prepared {cfg.name!r} without {len(skipped)} file(s) '
              f'(data.skip_bad_images): {skipped[0]}'
              + (' ...' if len(skipped) > 1 else ''), flush=True)
  return builder


# TFDS catalog text sets: language-model data (next-token windows).
TEXT_CATALOG = ('c4', 'lm1b', 'wikipedia', 'wiki40b', 'pg19',
                'tiny_shakespeare', 'ptb_text_only')


def catalog_base(name):
  """'c4/en:3.1.0' -> 'c4'."""
  return name.split('/')[0].split(':')[0]


def spec(cfg) -> DatasetSpec:
  """The DatasetSpec of `cfg.name` (offline or catalog)."""
  if cfg.name in OFFLINE:
    return OFFLINE[cfg.name][1]
  if catalog_base(cfg.name) in TEXT_CATALOG:
    return LM_SPEC
  if cfg.name not in tfds.list_builders(with_community_datasets=False):
    raise ConfigError(
        f'unknown dataset {cfg.name!r}; valid choices: '
        f'{", ".join(sorted(OFFLINE))} or a TFDS catalog name '
        '(e.g. cifar10, cifar100, mnist, imagenet2012)')
  mean, std = _CATALOG_STATS.get(cfg.name, ((0.0,), (255.0,)))
  return DatasetSpec('image', 'classification', mean=mean, std=std)


class Source:
  """Random access to one split: `len(src)` and `src.get(indices)`.

  `get` returns a dict of numpy arrays stacked along axis 0 (string features
  dropped), always with an int64 `id` (the builder's stable id, or the index
  in the split).
  """

  def __init__(self, data_source):
    self._ds = data_source
    self._len = len(data_source)

  def __len__(self):
    return self._len

  def get(self, indices):
    indices = np.asarray(indices, np.int64)
    keys = [int(i) for i in indices]
    try:
      items = self._ds.__getitems__(keys)
    except TypeError:  # tfds.testing.mock_data's sources read one at a time
      items = [self._ds[k] for k in keys]
    out = {}
    for k in items[0]:
      if k == 'id' or isinstance(items[0][k], (str, bytes)):
        continue
      values = [np.asarray(it[k]) for it in items]
      if len({v.shape for v in values}) > 1:   # variable-size images
        arr = np.empty(len(values), object)
        arr[:] = values
        out[k] = arr
      else:
        out[k] = np.stack(values)
    ids = np.asarray([it.get('id', -1) for it in items])
    # Our builders store an integer id; catalog sets may have none, or a
    # string one (e.g. cifar10's 'train_16399'): then the index in the split,
    # stable for a given prepared version, is the id.
    out['id'] = (ids.astype(np.int64) if np.issubdtype(ids.dtype, np.integer)
                 and 'id' in items[0] else indices)
    return out

  def get_text(self, indices, key):
    """The raw `key` feature (text, as str or bytes) of each example."""
    keys = [int(i) for i in np.asarray(indices, np.int64)]
    try:
      items = self._ds.__getitems__(keys)
    except TypeError:
      items = [self._ds[k] for k in keys]
    return [it[key] for it in items]


class Subset:
  """A part of a source (a carved part of a split, or all of it)."""

  def __init__(self, source, indices=None):
    self.source = source
    self.indices = (np.arange(len(source)) if indices is None
                    else np.asarray(indices, np.int64))

  def __len__(self):
    return len(self.indices)

  def get(self, indices):
    return self.source.get(self.indices[np.asarray(indices, np.int64)])


class Concat:
  """Parts one after the other (e.g. unlabeled then labeled)."""

  def __init__(self, parts):
    self.parts = list(parts)
    self._starts = np.cumsum([0] + [len(p) for p in self.parts])

  def __len__(self):
    return int(self._starts[-1])

  def get(self, indices):
    indices = np.asarray(indices, np.int64)
    which = np.searchsorted(self._starts, indices, side='right') - 1
    chunks, order = [], []
    for i, part in enumerate(self.parts):
      sel = np.nonzero(which == i)[0]
      if len(sel):
        chunks.append(part.get(indices[sel] - self._starts[i]))
        order.append(sel)
    inverse = np.argsort(np.concatenate(order))
    return {k: np.concatenate([c[k] for c in chunks])[inverse]
            for k in chunks[0]}


class OutOfDistribution:
  """Another dataset's images as unlabeled inputs for this dataset's models.

  Images are resized (PIL, area filter) to `shape` (H, W, C), converted
  between grayscale and RGB as needed, and put under `input_key`; their own
  labels mean other classes, so `label` is -1 (no true label).
  """

  def __init__(self, source, shape, input_key='image', label_key='label'):
    self.source = source
    self.shape = tuple(shape)
    self.input_key = input_key
    self.label_key = label_key
    self.indices = getattr(source, 'indices', np.arange(len(source)))

  def __len__(self):
    return len(self.source)

  def _adapt(self, image):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    h, w, c = self.shape
    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1
                          else image)
    img = img.convert('L' if c == 1 else 'RGB')
    if img.size != (w, h):
      img = img.resize((w, h), Image.Resampling.BOX)
    return np.asarray(img, np.uint8).reshape(h, w, c)

  def get(self, indices):
    raw = self.source.get(indices)
    images = raw['image']
    if images.shape[1:] != self.shape:
      images = np.stack([self._adapt(x) for x in images])
    out = {self.input_key: images, 'id': raw['id'],
           self.label_key: np.full(len(images), -1, np.int64)}
    return out


class WithTargets:
  """A part whose examples carry per-example arrays under `teacher`.

  `targets` maps names to arrays aligned with the part's positions (cached
  teacher logits, fitted weights, alpha, k, ...); `get` adds
  `{'teacher': {name: array[indices]}}` to what the part returns.
  """

  def __init__(self, part, targets):
    for name, value in targets.items():
      if len(value) != len(part):
        raise ValueError(f'teacher target {name!r} has {len(value)} rows, '
                         f'the part has {len(part)} examples')
    self.part = part
    self.targets = targets

  def __len__(self):
    return len(self.part)

  def get(self, indices):
    out = self.part.get(indices)
    out['teacher'] = {k: v[np.asarray(indices, np.int64)]
                      for k, v in self.targets.items()}
    return out


class ArraySource:
  """A whole split decoded into memory once; `get` is fancy indexing."""

  def __init__(self, source, chunk=4096):
    n = len(source)
    parts = [source.get(np.arange(i, min(i + chunk, n)))
             for i in range(0, n, chunk)]
    self.arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    self._len = n

  @classmethod
  def of(cls, **arrays):
    """A source of arrays already in memory (aligned on axis 0)."""
    return cls(_Arrays(arrays))

  def __len__(self):
    return self._len

  def get(self, indices):
    indices = np.asarray(indices, np.int64)
    return {k: v[indices] for k, v in self.arrays.items()}


class _Arrays:
  def __init__(self, arrays):
    self.arrays = arrays

  def __len__(self):
    return len(next(iter(self.arrays.values())))

  def get(self, indices):
    return {k: v[np.asarray(indices, np.int64)] for k, v in self.arrays.items()}


_IN_MEMORY = {}


def load_split_in_memory(cfg, split):
  """`load_split` decoded into RAM, shared by every later call in this
  process with the same dataset (experiments run many cells on one split)."""
  key = (split,) + tuple(str(cfg.get(k)) for k in (
      'name', 'data_dir', 'manual_dir', 'num_samples', 'seq_len', 'tokenizer',
      'vocab_size', 'image_size', 'test_dir', 'skip_bad_images'))
  if key not in _IN_MEMORY:
    _IN_MEMORY[key] = ArraySource(load_split(cfg, split))
  return _IN_MEMORY[key]


def load_split(cfg, split):
  """A Source for `split` ('train' or 'test') of dataset `cfg.name`."""
  spec(cfg)  # validates the name
  if cfg.name in OFFLINE:
    return Source(_builder(cfg).as_data_source(split=split))
  source = Source(_catalog_source(cfg, split))
  if spec(cfg).task == 'lm':
    return text.DocumentWindows(source, tokenizer(cfg), cfg.seq_len,
                                text.text_key(cfg))
  return source


def _catalog_source(cfg, split):
  """A TFDS catalog split, read from a prepared data dir; downloaded only
  with data.download=True (on a machine with internet), so a missing set
  fails at once rather than after minutes of retries."""
  data_dir = cfg.get('data_dir') or None
  download = bool(cfg.get('download', False))
  try:
    return tfds.data_source(
        cfg.name, split=split, data_dir=data_dir, download=download,
        download_and_prepare_kwargs={'file_format': 'array_record'})
  except ModuleNotFoundError:      # its builder code imports TensorFlow (c4)
    prepared = text.prepared_directory(cfg.name, data_dir or
                                       default_data_dir())
    if prepared:
      return tfds.builder_from_directory(prepared).as_data_source(split=split)
  except Exception:  # pylint: disable=broad-except
    if download or tfds.builder(cfg.name, data_dir=data_dir).is_prepared():
      raise
  raise ConfigError(
      f'dataset {cfg.name!r} is not prepared in the TFDS data dir '
      f'{data_dir or default_data_dir()}; prepare it there (`tfds build '
      f'{cfg.name} --data_dir=DIR --file_format=array_record` on a machine '
      'with internet) and set data.data_dir, or set data.download=True to '
      'download it here')


def has_unlabeled_from(cfg):
  """Whether `cfg.unlabeled_from` replaces the unlabeled part (another
  dataset's images, or a folder or glob of images without labels)."""
  ood = cfg.get('unlabeled_from')
  return bool(ood is not None and (ood.get('name') or ood.get('folder')))


def ood_config(cfg):
  """The data config of `cfg.unlabeled_from` (another dataset whose train
  images replace the unlabeled part; `folder`: the images of a folder or
  glob, dataset 'image_files'), or None."""
  if not has_unlabeled_from(cfg):
    return None
  ood = cfg.unlabeled_from
  if ood.get('name') and ood.get('folder'):
    raise ConfigError('data.unlabeled_from: set name (a dataset) or folder '
                      '(images without labels), not both')
  out = ml_collections.ConfigDict(cfg.to_dict())
  with out.unlocked():
    if ood.get('folder'):
      out.name, out.manual_dir = 'image_files', ood.folder
      if not out.get('image_size'):
        raise ConfigError('data.unlabeled_from.folder needs data.image_size '
                          '> 0 (the model\'s input size, e.g. 224)')
    else:
      out.name = ood.name
      out.manual_dir = ood.get('manual_dir', '')
    del out['unlabeled_from']
  return out


def part_sizes(cfg):
  """{part: number of examples} of the carved train split, without decoding
  any example (for checks before training)."""
  n = len(load_split(cfg, 'train'))
  sizes = {k: len(v) for k, v in splits.carve(
      n, cfg.labeled, cfg.validation, cfg.unlabeled, cfg.carve_seed,
      cfg.carve).items()}
  ood = ood_config(cfg)
  if ood is not None:
    size = cfg.unlabeled_from.size
    sizes['unlabeled'] = size if size >= 0 else len(load_split(ood, 'train'))
  return sizes


def tokenizer(cfg):
  """The tokenizer of a language-model dataset (stored with its prepared
  data), else None."""
  if spec(cfg).task != 'lm':
    return None
  if cfg.name in OFFLINE:
    return tokenizers.from_json(_builder(cfg).info.metadata['tokenizer'])
  return text.catalog_tokenizer(cfg, Source(_catalog_source(cfg, 'train')),
                                cfg.get('data_dir') or default_data_dir())


def source_record(cfg):
  """What the data of `cfg` was prepared from, for a run's identity: the
  builder's directory and the source files' hashes (offline builders), the
  tokenizer's digest (language models)."""
  out = {'name': cfg.name}
  if cfg.name in OFFLINE:
    builder = _builder(cfg)
    if 'source' in builder.info.metadata:
      out['source'] = [{k: f[k] for k in ('size', 'sha256')}
                       for f in builder.info.metadata['source']]
  tok = tokenizer(cfg)
  if tok is not None:
    out['tokenizer'] = tokenizers.digest(tok)
  ood = ood_config(cfg)
  if ood is not None and ood.name in OFFLINE:
    out['unlabeled_from'] = source_record(ood)
  return out


def num_classes(cfg):
  """Number of classes (or vocabulary size for LM data)."""
  if spec(cfg).task == 'lm':
    return tokenizer(cfg).vocab_size
  if cfg.name in OFFLINE:
    return _builder(cfg).info.features['label'].num_classes
  return tfds.builder(cfg.name, data_dir=cfg.get('data_dir') or None,
                      try_gcs=False).info.features['label'].num_classes


def _features(cfg):
  if cfg.name in OFFLINE:
    return _builder(cfg).info.features
  return tfds.builder(cfg.name, data_dir=cfg.get('data_dir') or None,
                      try_gcs=False).info.features


def input_shape(cfg):
  """The shape of one model input (an image: (height, width, channels)):
  a variable-size image set's (data.image_size square crop), else the
  dataset's; None for language-model data (token windows)."""
  s = spec(cfg)
  if s.task == 'lm':
    return None
  shape = tuple(_features(cfg)[s.input_key].shape)
  size = cfg.get('image_size') or 0
  if size and s.input_key == 'image':
    return (size, size, shape[-1])
  return shape


def class_names(cfg):
  """The class names of a classification dataset's labels (TFDS: the
  ClassLabel's names, '0'..'9' where it has none), else None."""
  s = spec(cfg)
  if s.task == 'lm':
    return None
  names = getattr(_features(cfg)[s.label_key], 'names', None)
  return list(names) if names else None
