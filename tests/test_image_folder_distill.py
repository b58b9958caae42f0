"""Your own images end to end (configs/image_folder_distill.py): a teacher
from pretrained weights (a new head) fine-tunes on a labeled folder, labels
an unlabeled folder, a student learns from it; at tiny scale on images the
test writes.

    python -m pytest -q tests/test_image_folder_distill.py
"""
import json
import os

import numpy as np
import pytest

from configs import image_folder_distill
from core.errors import ConfigError
from distill import distillation
from distill.logging_utils import read_metrics
from test_data_image_folder import write_folder, write_image


def _pretrained(path):
  """A tiny Hugging Face ResNet-18 (width 1/8, 5 classes) in safetensors."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(0)
  model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
      embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[2, 2, 2, 2],
      layer_type='basic', num_labels=5))
  model.save_pretrained(path, safe_serialization=True)
  return os.path.join(path, 'model.safetensors')


@pytest.fixture(autouse=True)
def _torch_cache_outside_tmpdir(tmp_path, monkeypatch):
  monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'inductor'))


@pytest.mark.slow
def test_pretrained_teacher_labels_an_unlabeled_folder_for_a_student(
    tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds'))
  labeled = write_folder(str(tmp_path / 'pets'), per_class=6, test=2)
  for i in range(6):
    write_image(str(tmp_path / 'unlabeled' / f'u{i}.jpg'), 70 + i,
                size=(24, 16))
  weights = _pretrained(str(tmp_path / 'hf'))
  config = image_folder_distill.get_config(
      f'labeled_dir={labeled},unlabeled={tmp_path / "unlabeled"},'
      f'weights={weights},teacher_arch=resnet18,student_arch=resnet18,'
      'validation=2,runlocal,pretrained_on=imagenet')
  summary = distillation.run(config, str(tmp_path / 'run'))
  out = capsys.readouterr().out
  assert 'a new 2-class head' in out
  # pretrained elsewhere: declared, recorded, not checked; one line says so
  assert (f"== teacher: started from {weights} (pretrained on 'imagenet', "
          'as declared; not checked)') in out
  assert summary['student/step'] == 2
  assert summary['teacher/unlabeled_accuracy'] is None   # no labels there
  assert 0 <= summary['student/test_agreement'] <= 1
  student = read_metrics(str(tmp_path / 'run' / 'student'))
  assert not any('train/accuracy' in r for r in student)
  inputs = json.load(open(tmp_path / 'run' / 'student' / 'inputs.json'))
  text = json.dumps(inputs)
  assert text.count('sha256') >= 6 + 16 and 'unlabeled_from' in text
  t_inputs = json.load(open(tmp_path / 'run' / 'teacher' / 'inputs.json'))
  assert t_inputs['init_weights']['pretrained_on'] == 'imagenet'
  assert t_inputs['init_weights']['path'] == weights


@pytest.mark.parametrize('arg,match', [
    ('labeled_dir=x,teacher_arch=vgg16,unlabeled=y', "teacher_arch='vgg16'; "
     'valid choices: resnet18'),
    ('labeled_dir=x', 'without unlabeled=DIR|GLOB set labeled=N'),
])
def test_config_arguments_are_checked(arg, match):
  with pytest.raises(ConfigError, match=match):
    image_folder_distill.get_config(arg)


def test_without_a_folder_the_run_names_data_manual_dir(tmp_path):
  with pytest.raises(ConfigError, match="dataset 'image_folder' needs "
                     'data.manual_dir: a folder of <class>/<image> folders'):
    distillation.run(image_folder_distill.get_config('runlocal'),
                     str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_a_pretrained_teacher_s_data_is_declared_and_the_checks_cover_its_fine_tuning():
  """distillation.pretrained_note: the one log line; the data-name check
  still applies to the fine-tuning run; pretrained_on needs a pretrained
  init."""
  from distill import config_lib  # pylint: disable=g-import-not-at-top
  config = image_folder_distill.get_config(
      'labeled_dir=x,labeled=4,weights=w.safetensors,runlocal')
  t_config = config.teacher.config
  note = distillation.pretrained_note(t_config)
  assert note.startswith('== teacher: started from w.safetensors '
                         '(pretrained on unknown data; not checked)'), note
  assert "fine-tuning on 'image_folder' here" in note
  assert distillation.pretrained_note(
      image_folder_distill.get_config('labeled_dir=x,labeled=4,runlocal')
      .teacher.config) is None
  t_config.init.pretrained_on = 'imagenet'
  assert "pretrained on 'imagenet', as declared" in (
      distillation.pretrained_note(t_config))
  t_config.data.name = 'mnist'          # fine-tuned on other data: refused
  with pytest.raises(ConfigError, match="teacher data 'mnist' differs"):
    distillation._check_teacher_data(t_config, config, None)  # pylint: disable=protected-access
  t_config.init.method = ''
  with pytest.raises(ConfigError, match='init.pretrained_on=.imagenet. '
                     'declares .*needs init.method=pretrained'):
    config_lib.validate(t_config)
