"""Data: builders, deterministic carving, the resumable pipeline."""
import io
import os
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from ml_collections import ConfigDict
from PIL import Image

from conftest import REPO
from core.errors import ConfigError
from distill.data import augment, builders, datasets, pipeline, splits


def data_cfg(**kw):
  base = dict(name='digits', data_dir='', manual_dir='', in_memory=True,
              num_samples=5000, seq_len=128)
  base.update(kw)
  return ConfigDict(base)


# --- carving -----------------------------------------------------------------
def test_carve_is_deterministic_disjoint_and_complete():
  a = splits.carve(1000, labeled=100, validation=50, unlabeled=-1, seed=3)
  b = splits.carve(1000, labeled=100, validation=50, unlabeled=-1, seed=3)
  for k in splits.PARTS:
    np.testing.assert_array_equal(a[k], b[k])
  sizes = {k: len(v) for k, v in a.items()}
  assert sizes == {'labeled': 100, 'validation': 50, 'unlabeled': 850}
  union = np.concatenate(list(a.values()))
  assert len(np.unique(union)) == 1000
  c = splits.carve(1000, labeled=100, validation=50, unlabeled=-1, seed=4)
  assert not np.array_equal(a['labeled'], c['labeled'])


def test_carve_first_mode_takes_the_first_examples():
  p = splits.carve(20, labeled=5, validation=3, unlabeled=-1, mode='first')
  np.testing.assert_array_equal(p['labeled'], np.arange(5))
  np.testing.assert_array_equal(p['validation'], np.arange(5, 8))
  np.testing.assert_array_equal(p['unlabeled'], np.arange(8, 20))


def test_carve_labeled_is_nested_across_sizes():
  """A larger labeled set contains the smaller one (same seed): the papers'
  curves over labeled sizes then differ only by the added labels."""
  small = splits.carve(500, labeled=50, validation=0, unlabeled=-1, seed=0)
  large = splits.carve(500, labeled=100, validation=0, unlabeled=-1, seed=0)
  assert set(small['labeled']) <= set(large['labeled'])


@pytest.mark.parametrize('kw,match', [
    (dict(labeled=900, validation=200), 'ask for 1100 examples'),
    (dict(labeled=-1, unlabeled=-1), 'only one of'),
    (dict(mode='sorted'), 'valid choices: first, random'),
])
def test_carve_errors(kw, match):
  with pytest.raises(ConfigError, match=match):
    splits.carve(1000, **kw)


# --- pipeline ----------------------------------------------------------------
class ArraySource:
  def __init__(self, n):
    self.x = np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1)
    self.y = np.arange(n) % 10

  def __len__(self):
    return len(self.y)

  def get(self, idx):
    return {'image': self.x[idx], 'label': self.y[idx], 'id': np.asarray(idx)}


SPEC = datasets.DatasetSpec('image', 'classification', mean=(0.,), std=(1.,))


def _ids(batches, n):
  out = [next(batches)['id'] for _ in range(n)]
  pipeline.close(batches)
  return out


@pytest.mark.slow
@pytest.mark.parametrize('workers', [0, 2])
def test_train_batches_are_a_function_of_the_step(workers):
  """The grain path: the batch of step s depends on (seed, s) alone, with
  any number of workers; a run started at step 7 sees steps 7.. as they
  were; each epoch is a permutation."""
  src = ArraySource(37)
  host = pipeline.Host(SPEC)
  first = _ids(pipeline.train_batches(src, 8, host, seed=1,
                                      workers=workers), 12)
  resumed = _ids(pipeline.train_batches(src, 8, host, seed=1, start_step=7,
                                        prefetch=0), 5)
  for x, y in zip(first[7:], resumed):
    np.testing.assert_array_equal(x, y)
  stream = np.concatenate(first)
  assert sorted(stream[:37]) == list(range(37))
  other_seed = _ids(pipeline.train_batches(src, 8, host, seed=2), 1)
  assert not np.array_equal(other_seed[0], first[0])


def test_processes_split_the_global_batch_disjointly():
  """Each process reads a contiguous slice of the global batch; over an
  epoch the slices are disjoint and cover the part."""
  n, batch, procs = 48, 8, 4
  whole = pipeline.BatchIndices(n, batch, seed=0)
  parts = [pipeline.BatchIndices(n, batch, seed=0, process_index=p,
                                 process_count=procs) for p in range(procs)]
  for step in range(n // batch):
    np.testing.assert_array_equal(
        np.concatenate([p[step] for p in parts]), whole[step])
  per_process = [np.concatenate([p[s] for s in range(n // batch)])
                 for p in parts]
  assert sorted(np.concatenate(per_process)) == list(range(n))


def test_eval_batches_cover_each_example_once():
  src = ArraySource(23)
  seen = []
  for batch in pipeline.eval_batches(src, 10, pipeline.Host(SPEC)):
    assert len(batch['id']) == 10
    seen.extend(batch['id'][batch['mask'] > 0].tolist())
  assert seen == list(range(23))


def test_device_prefetch_keeps_the_order():
  put = []
  out = list(pipeline.device_prefetch(iter(range(7)),
                                      lambda b: put.append(b) or b, size=2))
  assert out == list(range(7)) and put == list(range(7))


def test_images_cross_as_uint8_and_are_normalised_on_device():
  spec = datasets.DatasetSpec('image', 'classification', mean=(100.0,),
                              std=(50.0,))
  raw = ArraySource(5).get(np.arange(5))
  host = pipeline.Host(spec)(raw)
  assert host['inputs'].dtype == np.uint8
  x = augment.model_inputs(spec)(jnp.asarray(host['inputs']))
  np.testing.assert_allclose(x, (raw['image'].astype(np.float32) - 100) / 50)


@pytest.mark.slow
def test_device_crop_flip_draws_offsets_and_flips_like_the_host_did():
  """Each image is a crop of its 4-pixel zero padding at an offset in
  [0, 8] x [0, 8], flipped or not: offsets uniform over the 81 cells and
  flips at rate 1/2 (the host version drew them so), a new draw per key."""
  n, h = 4000, 12
  images = np.arange(1, h * h + 1, dtype=np.float32).reshape(1, h, h, 1)
  images = jnp.asarray(np.repeat(images, n, 0))
  out = np.asarray(augment.crop_flip(images, jax.random.PRNGKey(3)))
  padded = np.pad(np.asarray(images[0, :, :, 0]), 4)
  offsets, flips = [], []
  for img in out[..., 0]:
    found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
             if np.array_equal(padded[dy:dy + h, dx:dx + h][:, ::-1] if f
                               else padded[dy:dy + h, dx:dx + h], img)]
    assert len(found) == 1              # a crop of the padding, or its mirror
    dy, dx, f = found[0]
    offsets.append(dy * 9 + dx)
    flips.append(f)
  counts = np.bincount(offsets, minlength=81)
  expected = n / 81
  chi2 = float(np.sum((counts - expected) ** 2 / expected))
  assert chi2 < 130, chi2                 # 80 d.o.f.: p > 0.0003
  assert abs(np.mean(flips) - 0.5) < 0.04
  again = np.asarray(augment.crop_flip(images, jax.random.PRNGKey(4)))
  assert not np.array_equal(out, again)


# --- builders ----------------------------------------------------------------
def test_digits_builder(tmp_path):
  cfg = data_cfg(name='digits', data_dir=str(tmp_path))
  train, test = (datasets.load_split(cfg, s) for s in ('train', 'test'))
  assert (len(train), len(test)) == (1400, 397)
  b = train.get([0, 5])
  assert b['image'].shape == (2, 8, 8, 1) and b['image'].dtype == np.uint8
  ids = np.concatenate([train.get(np.arange(1400))['id'],
                        test.get(np.arange(397))['id']])
  assert sorted(ids) == list(range(1797))       # stable, disjoint ids
  assert datasets.num_classes(cfg) == 10


def test_mnist1d_builder_any_size(tmp_path):
  cfg = data_cfg(name='mnist1d', data_dir=str(tmp_path), num_samples=600)
  train = datasets.load_split(cfg, 'train')
  assert len(train) == 480
  assert train.get([0])['signal'].shape == (1, 40, 1)


@pytest.mark.slow
def test_mnist5k_builder(tmp_path):
  cfg = data_cfg(name='mnist5k', data_dir=str(tmp_path))
  train, test = (datasets.load_split(cfg, s) for s in ('train', 'test'))
  assert (len(train), len(test)) == (4000, 1000)
  labels = test.get(np.arange(1000))['label']
  assert len(np.unique(labels)) == 10


def _jpeg(color):
  buf = io.BytesIO()
  Image.fromarray(np.full((32, 32, 3), color, np.uint8)).save(buf, 'JPEG')
  return buf.getvalue()


def test_cifar10_jpeg_builder_reads_the_archive(tmp_path):
  archive = tmp_path / 'cifar10_jpeg.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    for split, n in (('train', 3), ('test', 1)):
      for cls in ('airplane', 'truck'):
        for i in range(n):
          data = _jpeg(200 if cls == 'truck' else 20)
          info = tarfile.TarInfo(f'{split}/{cls}/{i:04d}.jpg')
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  cfg = data_cfg(name='cifar10_jpeg', data_dir=str(tmp_path / 'tfds'),
                 manual_dir=str(tmp_path))
  train = datasets.load_split(cfg, 'train')
  test = datasets.load_split(cfg, 'test')
  assert (len(train), len(test)) == (6, 2)
  batch = train.get(np.arange(6))
  assert batch['image'].shape == (6, 32, 32, 3)
  trucks = batch['label'] == builders.CIFAR10_CLASSES.index('truck')
  assert trucks.sum() == 3
  assert batch['image'][trucks].mean() > 150 > batch['image'][~trucks].mean()


def test_cifar10_jpeg_needs_manual_dir(tmp_path):
  cfg = data_cfg(name='cifar10_jpeg', data_dir=str(tmp_path))
  with pytest.raises(ConfigError, match='needs data.manual_dir'):
    datasets.load_split(cfg, 'train')


def test_tiny_shakespeare_builder(tmp_path):
  text = 'To be, or not to be: that is the question.\n' * 40
  (tmp_path / 'tiny_shakespeare.txt').write_text(text)
  cfg = data_cfg(name='tiny_shakespeare', data_dir=str(tmp_path / 'tfds'),
                 manual_dir=str(tmp_path), seq_len=16)
  train = datasets.load_split(cfg, 'train')
  vocab = sorted(set(text))
  assert datasets.num_classes(cfg) == len(vocab)
  tokens = train.get([0])['tokens'][0]
  assert ''.join(vocab[t] for t in tokens) == text[:17]
  assert len(train) == int(0.9 * len(text)) // 17


# --- preparing a dataset: one process at a time ------------------------------
# A process that reads the digits split of `data_dir` (argv[1]), printing
# its size; with argv[2] == 'stall', it stops mid-preparation (after 10
# examples, saying so) until its stdin closes or it is killed.
_READER = """
import sys
from ml_collections import ConfigDict
from distill.data import builders, datasets
if sys.argv[2:] == ['stall']:
  generate = builders.Digits._generate_examples
  def stalled(self, *args):
    for n, example in enumerate(generate(self, *args)):
      if n == 10:
        print('mid-way', flush=True)
        sys.stdin.readline()
      yield example
  builders.Digits._generate_examples = stalled
cfg = ConfigDict(dict(name='digits', data_dir=sys.argv[1], manual_dir=''))
print('examples', len(datasets.load_split(cfg, 'train')), flush=True)
"""


def _reader(data_dir, *args):
  return subprocess.Popen(
      [sys.executable, '-c', _READER, data_dir, *args], cwd=REPO,
      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _prepared_here(out):
  return 'Downloading and preparing' in out


def test_a_second_process_waits_for_the_preparation_then_reads_it(tmp_path):
  """While this process prepares digits (holding the lock), another that
  needs it waits, then reads what was prepared without preparing again."""
  data_dir = str(tmp_path / 'tfds')
  cfg = data_cfg(data_dir=data_dir)
  builder = builders.Digits(data_dir=data_dir)
  with datasets.preparing(builder, 'digits', data_dir):
    other = _reader(data_dir)
    waiting = other.stdout.readline()       # it is blocked on the lock
    assert waiting.startswith(f'Waiting for pid {os.getpid()} on '), waiting
    assert 'preparing dataset \'digits\'' in waiting
    datasets._prepare(builder, cfg, 'digits')  # pylint: disable=protected-access
  out, _ = other.communicate(timeout=300)
  assert other.returncode == 0, out
  assert not _prepared_here(out), out
  assert 'examples 1400' in out, out


@pytest.mark.slow
def test_two_processes_at_once_prepare_one_dataset_once(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  procs = [_reader(data_dir) for _ in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert all('examples 1400' in o for o in outs), outs
  assert sum(map(_prepared_here, outs)) == 1, outs
  assert sorted(os.listdir(os.path.join(data_dir, 'digits'))) == ['1.0.0']


@pytest.mark.slow
def test_a_preparation_killed_midway_leaves_nothing_taken_for_data(tmp_path):
  """kill -9 in the middle of writing the examples: no prepared dataset
  (its half-written folder is TFDS's `incomplete.*`), the lock is free, and
  the next reader prepares it whole and removes the remains."""
  data_dir = str(tmp_path / 'tfds')
  proc = _reader(data_dir, 'stall')
  for line in proc.stdout:           # TFDS's 'Downloading and preparing'
    if line.strip() == 'mid-way':
      break
  proc.kill()
  proc.wait()
  folder = os.path.join(data_dir, 'digits')
  left = os.listdir(folder)
  assert '1.0.0' not in left and any(
      n.startswith('incomplete.') for n in left), left
  assert not builders.Digits(data_dir=data_dir).is_prepared()
  source = datasets.load_split(data_cfg(data_dir=data_dir), 'train')
  assert len(source) == 1400
  assert sorted(os.listdir(folder)) == ['1.0.0'], os.listdir(folder)


def test_tfds_catalog_dataset_with_mock_data():
  cfg = data_cfg(name='cifar10')
  with tfds.testing.mock_data(num_examples=12):
    src = datasets.load_split(cfg, 'train')
    batch = src.get([0, 1, 2])
  assert len(src) == 12
  assert batch['image'].shape == (3, 32, 32, 3)
  assert batch['id'].tolist() == [0, 1, 2]


def test_unknown_dataset_lists_choices():
  with pytest.raises(ConfigError, match='valid choices: cifar10_jpeg, digits'):
    datasets.spec(data_cfg(name='cifar11'))


def test_in_memory_split_matches_direct_reads_and_is_shared(tmp_path):
  cfg = data_cfg(name='digits', data_dir=str(tmp_path))
  src = datasets.load_split(cfg, 'train')
  mem = datasets.load_split_in_memory(cfg, 'train')
  assert datasets.load_split_in_memory(cfg, 'train') is mem
  idx = np.array([5, 3, 99])
  direct = datasets.Subset(src, idx).get([2, 0])
  cached = datasets.Subset(mem, idx).get([2, 0])
  for k in direct:
    np.testing.assert_array_equal(direct[k], cached[k])
  assert cached['id'].tolist() == src.get([99, 5])['id'].tolist()


def test_concat_and_with_targets():
  a, b = ArraySource(5), ArraySource(3)
  both = datasets.WithTargets(datasets.Concat([a, b]),
                              {'w': np.arange(8, dtype=np.float32)})
  out = both.get([6, 0, 4, 5])
  assert out['id'].tolist() == [1, 0, 4, 0]       # b[1], a[0], a[4], b[0]
  assert out['teacher']['w'].tolist() == [6, 0, 4, 5]
  with pytest.raises(ValueError, match='has 2 rows, the part has 5'):
    datasets.WithTargets(a, {'w': np.zeros(2)})


def test_resizing_crops_for_variable_size_images():
  rng = np.random.default_rng(0)
  images = np.empty(2, object)
  images[:] = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8),
               rng.integers(0, 255, (90, 30, 3), dtype=np.uint8)]
  raw = {'image': images, 'label': np.array([1, 2]), 'id': np.arange(2)}
  spec = datasets.DatasetSpec('image', 'classification', mean=(0.,) * 3,
                              std=(1.,) * 3)
  evaluated = pipeline.Host(spec, image_size=16)(raw, None)
  trained = pipeline.Host(spec, 'inception_crop', 16)(
      raw, np.random.default_rng(1))
  assert evaluated['inputs'].shape == trained['inputs'].shape == (2, 16, 16, 3)
  assert trained['inputs'].dtype == np.uint8     # decoded and cropped on host
  # The center crop of a constant image is that constant.
  flat = np.empty(1, object)
  flat[:] = [np.full((50, 80, 3), 7, np.uint8)]
  out = pipeline.Host(spec, image_size=8)(
      {'image': flat, 'label': np.array([0]), 'id': np.arange(1)}, None)
  assert np.all(out['inputs'] == 7)
