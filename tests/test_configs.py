"""Every config in configs/ trains 2 steps in runlocal mode (catches bit-rot)."""
import glob
import importlib
import os

import pytest
import tensorflow_datasets as tfds

from conftest import REPO, shared_file
from distill import train
from distill.data import datasets
from distill.run import execute

CONFIGS = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
    if not os.path.basename(p).startswith(('_', 'common')))

NEEDS_SHARED = {'cifar10_teacher': 'cifar10_jpeg.tar.gz',
                'cifar10_distill': 'cifar10_jpeg.tar.gz',
                'cifar10_laurel_distill': 'cifar10_jpeg.tar.gz',
                'shakespeare_lm': 'tiny_shakespeare.txt',
                'laurel_lm': 'tiny_shakespeare.txt',
                'guide_lm': 'tiny_shakespeare.txt'}


def test_every_config_is_listed():
  assert {'digits_teacher', 'cifar10_teacher', 'mnist5k_teacher',
          'mnist1d_teacher', 'shakespeare_lm', 'tfds_teacher',
          'digits_distill', 'mnist5k_distill', 'cifar10_distill',
          'digits_ood_distill', 'tfds_distill', 'imagenet_distill'
          } <= set(CONFIGS)


# Thin wrappers of another config that would only repeat its (slow) run;
# checked here by building their models. The LAuReL student trained by
# distillation runs in tests/test_laurel.py.
BUILD_ONLY = {'cifar10_laurel_distill': 'cifar10_distill with a ResNet student',
              # runs on images it writes: tests/test_image_folder_distill.py
              'image_folder_distill': 'your own images'}


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_runlocal_two_steps(name, tmp_path):
  config = importlib.import_module(f'configs.{name}').get_config('runlocal')
  if name in BUILD_ONLY:
    import models  # pylint: disable=g-import-not-at-top
    for c in (config, config.teacher.config):
      models.build(c.model_name, 10, c.model_dtype, **c.model.to_dict())
    assert config.model.residual.startswith(('laurel_', 'standard'))
    return
  if name in NEEDS_SHARED:
    path = shared_file(NEEDS_SHARED[name])
    config.data.manual_dir = os.path.dirname(path)
    if 'teacher' in config:
      config.teacher.config.data.manual_dir = os.path.dirname(path)
  if config.data.name not in datasets.OFFLINE:   # TFDS catalog: mock data
    with tfds.testing.mock_data(num_examples=32):
      result = execute(config, str(tmp_path))
  else:
    result = execute(config, str(tmp_path))
  if 'active' in config:      # teacher, initial set, one round, last student
    assert result['forward_passes'] == config.active.budget
    assert 0 <= result['round1/test_accuracy'] <= 1
    return
  if 'teacher' in config:     # teacher, labeling pass, student
    assert result['student/step'] == 2
    assert os.path.exists(tmp_path / 'summary.json')
  else:
    assert result['step'] == 2
    assert os.path.exists(tmp_path / 'final_metrics.json')
  metrics = [k for k in result if k.endswith('/accuracy')]
  assert metrics and all(0.0 <= result[k] <= 1.0 for k in metrics)


@pytest.mark.slow
def test_bfloat16_compute_trains(tmp_path):
  """bfloat16 activations with float32 parameters and optimizer state."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import mnist5k_teacher  # pylint: disable=g-import-not-at-top
  config = mnist5k_teacher.get_config('runlocal')
  config.model_dtype = 'bfloat16'
  config.total_steps = 5
  trainer = train.Trainer(config, str(tmp_path))
  result = trainer.run()
  assert result['step'] == 5
  assert all(x.dtype == 'float32'
             for x in jax.tree.leaves(trainer.state.params))
  assert 0.0 <= result['validation/accuracy'] <= 1.0
