"""Shared test helpers: paths, the shared datasets, quiet logging.

The session shares one persistent XLA compilation cache (a temporary directory,
removed at exit) with every process it starts: the fault table, the kill -9
tests and the two-process runs compile the same programs many times over.
Set DISTILL_TEST_CACHE=0 to compile everything afresh. Processes the tests
start use one CPU device unless a test says otherwise.
"""
import atexit
import os
import shutil
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets')
sys.path.insert(0, REPO)

if os.environ.get('DISTILL_TEST_CACHE', '1') != '0' and (
    'JAX_COMPILATION_CACHE_DIR' not in os.environ):
  _CACHE = tempfile.mkdtemp(prefix='distill-tests-xla-cache-')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  # Environment, not jax.config: the processes the tests start inherit it.
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'

# The runs the tests start use one CPU device each (compiling for one is
# quicker); tests/test_host_devices.py checks the default (several).
os.environ.setdefault('DISTILL_CPU_DEVICES', '1')


def shared_file(name):
  """Path of a file of ../shared/datasets, or skip the test with a reason."""
  path = os.path.join(SHARED_DATASETS, name)
  if not os.path.exists(path):
    pytest.skip(f'{path} is absent (the shared datasets are not beside the '
                'repository)')
  return path


@pytest.fixture(autouse=True, scope='session')
def _quiet():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  tfds.disable_progress_bar()
