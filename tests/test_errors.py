"""Bad input gives one clear line naming the problem and the valid choices."""
import re
import subprocess
import sys

import pytest

from configs import common, digits_teacher
from conftest import REPO
from core.errors import ConfigError
from distill import config_lib, train


def run_launcher(*args):
  proc = subprocess.run([sys.executable, '-m', 'launch.main', *args],
                        cwd=REPO, capture_output=True, text=True, check=False,
                        timeout=300)
  lines = proc.stderr.strip().splitlines()
  return proc.returncode, lines


@pytest.mark.slow
@pytest.mark.parametrize('flag,expected', [
    ('--config.optimizer.lrr=0.1',
     "error: unknown config key 'optimizer.lrr'; valid choices in "
     'config.optimizer: b1, b2, frozen, grad_clip, lr, momentum, name, '
     'nesterov, weight_decay'),
    ('--config.modle_name=mlp', "error: unknown config key 'modle_name'"),
    ('--config.model_name=vit',
     "error: unknown model 'vit'; valid choices: cnn, mlp, resnet, "
     'resnet_imagenet, '
     'transformer_lm'),
    ('--config.optimizer.name=lion',
     "error: unknown optimizer.name 'lion'; valid choices: adam, adamw, sgd"),
    ('--config.data.name=cifar11', "error: unknown dataset 'cifar11'"),
    ('--config.total_steps=10',
     'error: set total_steps=10 or total_epochs=30.0, not both'),
])
def test_launcher_errors_are_one_line(flag, expected, tmp_path):
  code, lines = run_launcher('--config=configs/digits_teacher.py',
                             f'--workdir={tmp_path}', flag)
  assert code == 2
  assert len(lines) == 1 and lines[0].startswith(expected), lines
  assert not (tmp_path / 'checkpoints').exists()


def test_bad_config_argument(tmp_path):
  code, lines = run_launcher('--config=configs/digits_teacher.py:labled=5',
                             f'--workdir={tmp_path}')
  assert code == 2 and len(lines) == 1
  assert "unknown config argument 'labled'; valid choices: labeled, " \
         'runlocal' in lines[0]


def bad(**overrides):
  return common.override(digits_teacher.get_config('runlocal'), overrides)


@pytest.mark.parametrize('overrides,match', [
    (dict(method='slamm'), "unknown method 'slamm'; valid choices: "),
    (dict(model_dtype='float16'),
     "unknown model_dtype 'float16'; valid choices: bfloat16, float32"),
    (dict(**{'schedule.name': 'step'}),
     "unknown schedule.name 'step'; valid choices: constant, cosine, linear"),
    (dict(**{'data.augment': 'mixup'}),
     "unknown data.augment 'mixup'; valid choices: crop_flip, flip, "
     'inception_crop'),
    (dict(**{'data.train_on': 'test'}),
     "unknown data.train_on 'test'; valid choices: labeled, unlabeled, "
     'validation'),
    (dict(eval_splits='validation,dev'),
     "unknown eval_splits entry 'dev'; valid choices: labeled, test"),
    (dict(**{'data.labeled': 1400}),
     'ask for 1500 examples; the training split has 1400'),
    (dict(**{'model.hiden': 3}),
     "unknown option(s) hiden for model 'mlp'; valid choices: dropout, "
     'hidden'),
    (dict(model_name='transformer_lm', model=common.base_config().model),
     "model 'transformer_lm' does not fit dataset 'digits' (classification)"),
    (dict(**{'method_kw.temperature': 2.0}),
     "method_kw.temperature=2.0 is not an option of method 'supervised'; its "
     'options: label_smoothing'),
    (dict(**{'mesh.data': 2}), 'needs 2 devices per slice, but there are 1'),
])
def test_invalid_configs(overrides, match, tmp_path):
  config = bad(**overrides)
  with pytest.raises(ConfigError, match=re.escape(match)) as info:
    train.Trainer(config, str(tmp_path))
  assert '\n' not in str(info.value)


def test_batch_must_divide_over_the_mesh():
  config = bad(batch_size=12)
  with pytest.raises(ConfigError, match=re.escape(
      'batch_size=12 is not divisible by the 8 batch shards')):
    config_lib.validate_for_mesh(config, 8, 1)
  config_lib.validate_for_mesh(bad(batch_size=16, eval_batch_size=64), 8, 1)


@pytest.mark.parametrize('overrides,match', [
    (dict(batch_size=-1), 'batch_size must be >= 1, got -1'),
    (dict(**{'optimizer.lr': -0.1}),
     'optimizer.lr must be a finite number > 0, got -0.1'),
    (dict(**{'data.validation': -10}),
     'data.validation=-10 must be >= 0 (or -1: all the rest)'),
    (dict(keep_checkpoints=0), 'keep_checkpoints must be >= 1, got 0'),
])
def test_impossible_values(overrides, match, tmp_path):
  with pytest.raises(ConfigError, match=re.escape(match)):
    train.Trainer(bad(**overrides), str(tmp_path))


@pytest.mark.parametrize('arg,match', [
    ('per_round=-5', 'active_distill per_round=-5 must be positive'),
    ('budget=0', 'active_distill budget=0 must be positive'),
])
def test_impossible_active_arguments(arg, match):
  from configs import active_distill  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=re.escape(match)):
    active_distill.get_config(f'dataset=digits,{arg}')


@pytest.mark.slow
def test_missing_teacher_checkpoint_is_one_line_before_any_work(tmp_path):
  code, lines = run_launcher(
      f'--config=configs/digits_distill.py:teacher={tmp_path}/no_teacher',
      f'--workdir={tmp_path}/run')
  assert code == 2
  assert lines == [f'error: no trained run at {tmp_path}/no_teacher: '
                   f'{tmp_path}/no_teacher/config.json is missing']
  assert not (tmp_path / 'run' / 'student').exists()
