"""Shared test helpers: paths, the shared datasets, quiet logging."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets')
sys.path.insert(0, REPO)


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
