"""Your own images: data.name=image_folder and data.unlabeled_from.folder
(distill/data/builders.py: ImageFolder).

    python -m pytest -q tests/test_data_image_folder.py
"""
import io
import os
import tarfile

import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image

from core.errors import ConfigError
from distill import config_lib
from distill.data import builders, datasets, loading


def write_image(path, seed, size=(12, 9), fmt=None):
  """A random RGB image of `size` (w, h) at `path` (JPEG or PNG by name)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(
      0, 256, (size[1], size[0], 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path, format=fmt)


def write_folder(root, classes=('cat', 'dog'), per_class=4, test=1, seed=0):
  """root/<class>/<i>.png|jpg of mixed sizes, root/test/<class>/ with `test`
  each."""
  k = seed
  for split, n in (('', per_class), ('test', test)):
    for cls in classes:
      for i in range(n):
        ext = 'png' if i % 2 else 'jpg'
        write_image(os.path.join(root, split, cls, f'{i}.{ext}'), k,
                    size=(10 + i, 8 + 2 * i))
        k += 1
  return root


def data_cfg(root, data_dir, **kw):
  base = dict(name='image_folder', data_dir=str(data_dir), manual_dir=str(root),
              in_memory=False, num_samples=0, seq_len=0, tokenizer='char',
              vocab_size=0, image_size=8, test_dir='', skip_bad_images=False,
              labeled=-1, validation=0, unlabeled=0, carve='random',
              carve_seed=0, test_split='test',
              unlabeled_from=dict(name='', manual_dir='', size=-1, folder=''))
  base.update(kw)
  return ConfigDict(base)


def test_an_image_folder_is_prepared_once_with_classes_ids_and_sources(
    tmp_path):
  root = write_folder(str(tmp_path / 'pets'))
  cfg = data_cfg(root, tmp_path / 'tfds')
  config_lib.validate_data(cfg)
  train = datasets.load_split(cfg, 'train')
  test = datasets.load_split(cfg, 'test')
  assert (len(train), len(test)) == (8, 2)
  batch = train.get(np.arange(8))
  assert batch['image'].shape == (8, 9, 9, 3)       # stored at 8 / 0.875
  assert batch['image'].dtype == np.uint8
  np.testing.assert_array_equal(batch['label'], [0] * 4 + [1] * 4)
  np.testing.assert_array_equal(batch['id'], np.arange(8))
  assert datasets.class_names(cfg) == ['cat', 'dog']
  assert datasets.num_classes(cfg) == 2
  assert datasets.input_shape(cfg) == (8, 8, 3)
  record = datasets.source_record(cfg)
  assert len(record['source']) == 10                # train and test files
  assert all(len(f['sha256']) == 64 for f in record['source'])
  # prepared once: a second builder reads the same directory
  prepared = datasets._builder(cfg).data_dir
  assert datasets._builder(cfg).data_dir == prepared
  # another image (or a changed one) is another source, prepared apart
  write_image(os.path.join(root, 'dog', '9.png'), 99)
  other = datasets._builder(cfg)
  assert other.data_dir != prepared and len(datasets.load_split(
      cfg, 'train')) == 9
  assert datasets.source_record(cfg) != record


def test_without_a_test_folder_a_fixed_tenth_is_the_test_split(tmp_path):
  root = write_folder(str(tmp_path / 'pets'), per_class=10, test=0)
  assert not os.path.exists(os.path.join(root, 'test'))
  cfg = data_cfg(root, tmp_path / 'tfds')
  assert (len(datasets.load_split(cfg, 'train')),
          len(datasets.load_split(cfg, 'test'))) == (18, 2)


def test_a_test_dir_elsewhere(tmp_path):
  root = write_folder(str(tmp_path / 'pets'), test=0)
  test_dir = tmp_path / 'held'
  write_image(str(test_dir / 'dog' / 'a.png'), 5)
  cfg = data_cfg(root, tmp_path / 'tfds', test_dir=str(test_dir))
  test = datasets.load_split(cfg, 'test')
  assert len(test) == 1 and test.get([0])['label'][0] == 1


@pytest.mark.parametrize('bad,match', [
    ('dog/broken.jpg', r'dog/broken.jpg is not a readable image'),
    ('dog/notes.txt', r'dog/notes.txt is not a .jpg/.jpeg/.png image'),
])
def test_a_bad_file_is_one_line_naming_it_or_skipped_and_counted(
    tmp_path, capsys, bad, match):
  root = write_folder(str(tmp_path / 'pets'))
  with open(os.path.join(root, bad), 'wb') as f:
    f.write(b'not an image')
  cfg = data_cfg(root, tmp_path / 'tfds')
  with pytest.raises(ConfigError, match=match + '.*skip_bad_images=True'):
    datasets.load_split(cfg, 'train')
  assert not os.path.exists(tmp_path / 'tfds' / 'image_folder')  # nothing left
  cfg = data_cfg(root, tmp_path / 'tfds', skip_bad_images=True)
  capsys.readouterr()
  assert len(datasets.load_split(cfg, 'train')) == 8
  assert "Prepared 'image_folder' without 1 file(s)" in capsys.readouterr().out
  skipped = datasets._builder(cfg).info.metadata['skipped']
  assert len(skipped) == 1 and os.path.basename(bad) in skipped[0]


@pytest.mark.parametrize('kw,match', [
    (dict(image_size=0), 'image_folder needs data.image_size > 0'),
    (dict(manual_dir=''), "'image_folder' needs data.manual_dir: a folder of "
     '<class>/<image> folders'),
])
def test_image_folder_config_errors(tmp_path, kw, match):
  cfg = data_cfg(str(tmp_path), tmp_path / 'tfds', **kw)
  with pytest.raises(ConfigError, match=match):
    config_lib.validate_data(cfg)
    datasets.load_split(cfg, 'train')


def test_a_folder_without_class_folders_is_one_line(tmp_path):
  write_image(str(tmp_path / 'flat' / 'a.png'), 0)
  cfg = data_cfg(str(tmp_path / 'flat'), tmp_path / 'tfds')
  with pytest.raises(ConfigError, match='holds no <class>/<image> folders'):
    datasets.load_split(cfg, 'train')


def test_a_test_class_unknown_to_training_is_one_line(tmp_path):
  root = write_folder(str(tmp_path / 'pets'))
  write_image(os.path.join(root, 'test', 'fox', 'a.png'), 3)
  cfg = data_cfg(root, tmp_path / 'tfds')
  with pytest.raises(ConfigError, match="test class 'fox' has no training"):
    datasets.load_split(cfg, 'train')


@pytest.mark.parametrize('glob_pattern', [False, True])
def test_unlabeled_images_from_a_folder_or_glob(tmp_path, glob_pattern):
  root = write_folder(str(tmp_path / 'pets'))
  unl = tmp_path / 'unlabeled'
  for i in range(5):
    write_image(str(unl / ('sub' if i % 2 else '') / f'u{i}.jpg'), 50 + i,
                size=(20, 7))
  folder = str(unl / '**' / '*.jpg') if glob_pattern else str(unl)
  cfg = data_cfg(root, tmp_path / 'tfds',
                 unlabeled_from=dict(name='', manual_dir='', size=-1,
                                     folder=folder))
  config_lib.validate_data(cfg)
  data = loading.load_data(cfg)
  part = data.parts['unlabeled']
  assert len(part) == 5
  batch = part.get(np.arange(5))
  assert batch['image'].shape == (5, 9, 9, 3)
  np.testing.assert_array_equal(batch['label'], [-1] * 5)   # no labels
  assert len(data.source['unlabeled_from']['source']) == 5
  assert len(data.parts['labeled']) == 8


def test_an_unlabeled_folder_with_nothing_is_one_line(tmp_path):
  root = write_folder(str(tmp_path / 'pets'))
  cfg = data_cfg(root, tmp_path / 'tfds', unlabeled_from=dict(
      name='', manual_dir='', size=-1, folder=str(tmp_path / 'nope' / '*.png')))
  with pytest.raises(ConfigError, match='data.unlabeled_from.folder=.*nope'):
    loading.load_data(cfg)


def test_cifar10_jpeg_of_other_classes_is_one_line(tmp_path):
  archive = tmp_path / 'cifar10_jpeg.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    for split in ('train', 'test'):
      buf = io.BytesIO()
      Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, 'JPEG')
      info = tarfile.TarInfo(f'{split}/tulip/0.jpg')
      info.size = len(buf.getvalue())
      tar.addfile(info, io.BytesIO(buf.getvalue()))
  cfg = data_cfg(str(archive), tmp_path / 'tfds', name='cifar10_jpeg')
  with pytest.raises(ConfigError, match="test/tulip/ is not a CIFAR-10 class|"
                     "train/tulip/ is not a CIFAR-10 class"):
    datasets.load_split(cfg, 'train')
  assert builders.CIFAR10_CLASSES[0] == 'airplane'
