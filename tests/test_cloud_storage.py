"""A gs:// workdir's own files go through etils.epath (distill/files.py):
here gs:// is mapped onto a local folder with etils' mock, so the real code
paths run (claiming the workdir, its lock, identity, JSON/NPZ results,
metrics appends and their truncation on resume, the teacher cache and its
set-aside). Orbax writes checkpoints to gs:// itself (tensorstore), which
this test cannot reach; nothing here touches a network."""
import json
import os
import time

import ml_collections
import numpy as np
import pytest
from etils.epath import testing as epath_testing

from configs import digits_teacher
from core.errors import WorkdirBusy
from distill import checkpoint, files, teacher_cache, workdir
from distill.logging_utils import MetricWriter, read_metrics


@pytest.fixture
def gcs(tmp_path):
  """gs://... paths stored under tmp_path/gcs (yields that folder)."""
  root = str(tmp_path / 'gcs')
  os.makedirs(root)

  def local(path):
    return str(path).replace('gs://', root + '/')

  def remote(path):
    return str(path).replace(root + '/', 'gs://')

  def one(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  def two(fn, path, dst, *args, **kwargs):
    return fn(local(path), local(dst), *args, **kwargs)

  def open_(fn, path, mode, *args, **kwargs):    # objects need no folders
    if 'w' in mode or 'a' in mode:
      os.makedirs(os.path.dirname(local(path)), exist_ok=True)
    return fn(local(path), mode, *args, **kwargs)

  def walk(fn, top, **kwargs):
    for base, dirs, names in fn(local(top), **kwargs):
      yield remote(base), dirs, names

  with epath_testing.mock_epath(
      open=open_, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
      remove=one, rmtree=one, stat=one, glob=one, walk=walk, rename=two,
      replace=two, copy=two):
    yield root


def test_claim_writes_the_identity_and_refuses_another_config(gcs):
  config = digits_teacher.get_config('runlocal')
  with workdir.claim('gs://bucket/run', config):
    with open(os.path.join(gcs, 'bucket/run/LOCK')) as f:
      assert json.load(f)['pid'] == os.getpid()      # held, with a heartbeat
  assert open(os.path.join(gcs, 'bucket/run/LOCK')).read() == ''   # released
  assert files.read_json('gs://bucket/run/config.json')['total_steps'] == 2
  with open(os.path.join(gcs, 'bucket/run/command.txt')) as f:
    assert f.read().count('\n') == 1               # appended once
  other = ml_collections.ConfigDict(config.to_dict())
  other.optimizer.lr = 0.5
  with pytest.raises(Exception, match='optimizer.lr is 0.002 there, 0.5 here'):
    with workdir.claim('gs://bucket/run', other):
      pass


def test_remote_lock_refuses_a_live_holder_and_takes_over_a_silent_one(gcs):
  config = digits_teacher.get_config('runlocal')
  lock = os.path.join(gcs, 'bucket/run/LOCK')
  os.makedirs(os.path.dirname(lock))
  holder = {'host': 'worker-3', 'pid': 4242, 'since': 'then',
            'command': 'python -m launch.main', 'heartbeat': time.time()}
  with open(lock, 'w') as f:
    json.dump(holder, f)
  with pytest.raises(WorkdirBusy, match='in use by pid 4242 on worker-3'):
    with workdir.claim('gs://bucket/run', config):
      pass
  holder['heartbeat'] -= 3600                  # silent for an hour: dead
  with open(lock, 'w') as f:
    json.dump(holder, f)
  with workdir.claim('gs://bucket/run', config):
    assert json.load(open(lock))['pid'] == os.getpid()


def test_results_metrics_and_cache_round_trip(gcs):
  files.write_json('gs://b/w/summary.json', {'a': 1})
  assert files.read_json('gs://b/w/summary.json') == {'a': 1}
  files.write_npz('gs://b/w/x.npz', logits=np.arange(6.0).reshape(2, 3))
  np.testing.assert_array_equal(files.read_npz('gs://b/w/x.npz')['logits'],
                                np.arange(6.0).reshape(2, 3))

  writer = MetricWriter('gs://b/w')
  for step in (1, 2, 3):
    writer.write(step, {'loss': float(step)})
  assert [r['step'] for r in read_metrics('gs://b/w')] == [1, 2, 3]
  MetricWriter('gs://b/w', keep_records=2)      # resumed after 2 records
  assert [r['step'] for r in read_metrics('gs://b/w')] == [1, 2]

  cache = teacher_cache.TeacherCache('gs://b/w/teacher_cache')
  logits = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
  got, built = cache.get_or_build('part', {'n': 5, 'num_classes': 4},
                                  np.arange(5), lambda: logits)
  assert built and np.allclose(got, logits)
  got, built = cache.get_or_build('part', {'n': 5, 'num_classes': 4},
                                  np.arange(5), lambda: 1 / 0)
  assert not built and np.allclose(got, logits)
  with open(os.path.join(gcs, 'b/w/teacher_cache/part.npz'), 'wb') as f:
    f.write(b'garbage')
  got, built = cache.get_or_build('part', {'n': 5, 'num_classes': 4},
                                  np.arange(5), lambda: logits)
  assert built
  assert os.listdir(os.path.join(gcs, 'b/w/teacher_cache_unreadable'))


def test_checkpoint_steps_are_listed_from_gcs(gcs):
  for step in ('100', '200', '300.orbax-checkpoint-tmp-7'):
    os.makedirs(os.path.join(gcs, 'b/run/checkpoints', step))
  assert checkpoint.steps_of('gs://b/run') == [100, 200]
  assert files.abspath('gs://b/run/') == 'gs://b/run'
