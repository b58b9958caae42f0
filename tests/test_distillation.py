"""The distillation pipeline: teacher, cached labeling pass, fitted state,
student; cache reuse and invalidation."""
import json
import os

import numpy as np
import pytest

from configs import common, digits_distill
from core.errors import ConfigError
from distill import distillation, teacher_cache, train
from distill.data import loading
from distill.logging_utils import read_metrics


def cfg(method, teacher='', **kw):
  c = digits_distill.get_config(f'method={method},runlocal')
  c.teacher.workdir = teacher
  return common.override(c, kw)


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  """One small trained teacher shared by the tests (as experiments do)."""
  workdir = str(tmp_path_factory.mktemp('teacher'))
  t = cfg('vanilla').teacher.config
  t.total_steps = 30
  train.train(t, workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('method', ['vanilla', 'hard', 'weighted', 'slam',
                                    'taylor_ce', 'pseudo_label'])
def test_every_method_runs_end_to_end(method, teacher_dir, tmp_path):
  summary = distillation.run(cfg(method, teacher_dir), str(tmp_path))
  assert summary['student/step'] == 2
  assert 0 <= summary['student/test_agreement'] <= 1
  assert summary['teacher/test_accuracy'] > 0.3
  if method == 'weighted':
    assert 0 < summary['fit/weight_mean'] <= 1
    assert 0 < summary['fit/weight_ess_fraction'] <= 1
  if method == 'slam':
    assert summary['fit/k_mean'] >= 2
  with open(tmp_path / 'summary.json') as f:
    assert json.load(f)['method'] == method


@pytest.mark.slow
def test_cache_is_reused_and_rebuilt_when_the_teacher_changes(
    teacher_dir, tmp_path, capsys):
  distillation.run(cfg('vanilla', teacher_dir), str(tmp_path / 'a'))
  capsys.readouterr()
  distillation.run(cfg('slam', teacher_dir), str(tmp_path / 'b'))
  assert 'rebuilt nothing' in capsys.readouterr().out
  # A different carving of the validation part is a different cache entry.
  distillation.run(cfg('slam', teacher_dir, **{'data.validation': 120,
                                               'teacher.workdir': teacher_dir}),
                   str(tmp_path / 'c'))
  assert "rebuilt ['validation', 'unlabeled']" in capsys.readouterr().out


def test_stale_cache_fingerprint_is_rebuilt(tmp_path):
  cache = teacher_cache.TeacherCache(str(tmp_path))
  fp = {'teacher_step': 10, 'num_classes': 3}
  logits = np.arange(6, dtype=np.float32).reshape(2, 3)
  got, built = cache.get_or_build('u', fp, [4, 7], lambda: logits)
  assert built and np.array_equal(got, logits)
  got, built = cache.get_or_build('u', fp, [4, 7], lambda: logits * 0)
  assert not built and np.array_equal(got, logits)
  newer = dict(fp, teacher_step=20)
  got, built = cache.get_or_build('u', newer, [4, 7], lambda: logits + 1)
  assert built and np.array_equal(got, logits + 1)


def test_topk_cache_keeps_the_ranking(tmp_path):
  cache = teacher_cache.TeacherCache(str(tmp_path))
  fp = {'num_classes': 5}
  logits = np.array([[0.1, 3.0, -1.0, 2.0, 0.0]], np.float32)
  got, _ = cache.get_or_build('u', fp, [0], lambda: logits, topk=2)
  assert got[0, 1] == 3.0 and got[0, 3] == 2.0
  assert np.all(got[0, [0, 2, 4]] < -7)


def test_carving_mismatch_between_teacher_and_student_is_refused(tmp_path):
  c = cfg('slam', **{'teacher.config.data.labeled': 300})
  with pytest.raises(ConfigError, match="the teacher trained on .* of the "
                     "student's validation/unlabeled parts"):
    distillation.run(c, str(tmp_path))


def test_methods_and_roles_are_checked(tmp_path):
  with pytest.raises(ConfigError, match='does not learn from a teacher'):
    distillation.run(cfg('supervised'), str(tmp_path))
  student = distillation.student_config(cfg('slam'))  # pylint: disable=protected-access
  with pytest.raises(ConfigError, match='learns from a teacher'):
    train.Trainer(student, str(tmp_path))


def test_add_labeled_appends_true_labels(teacher_dir, tmp_path):
  summary = distillation.run(cfg('weighted', teacher_dir,
                                 **{'distill.add_labeled': True}),
                             str(tmp_path))
  assert summary['student/step'] == 2


@pytest.mark.slow
def test_out_of_distribution_unlabeled_then_finetune(teacher_dir, tmp_path):
  from configs import digits_ood_distill  # pylint: disable=g-import-not-at-top
  c = digits_ood_distill.get_config(f'runlocal,teacher={teacher_dir}')
  data = loading.load_data(c.data)
  unlabeled = data.parts['unlabeled'].get(np.arange(3))
  assert unlabeled['image'].shape == (3, 8, 8, 1)       # MNIST resized
  assert unlabeled['label'].tolist() == [-1, -1, -1]     # no true labels
  assert len(data.parts['unlabeled']) == 4000
  summary = distillation.run(c, str(tmp_path))
  assert summary['teacher/unlabeled_accuracy'] is None
  assert summary['finetuned/step'] == 2
  # images without labels: no accuracy logged as if measured
  logged = [r for r in read_metrics(str(tmp_path / 'student'))
            if 'train/loss' in r]
  assert logged and not [r for r in logged if 'train/accuracy' in r], logged
  assert all('train/teacher_agreement' in r for r in logged)
  assert os.path.exists(tmp_path / 'finetuned' / 'final_metrics.json')


def test_out_of_distribution_needs_unlabeled_zero(tmp_path):
  from configs import digits_ood_distill  # pylint: disable=g-import-not-at-top
  c = digits_ood_distill.get_config('runlocal')
  c.data.unlabeled = -1
  with pytest.raises(ConfigError, match='set data.unlabeled=0'):
    loading.load_data(c.data)


@pytest.mark.slow
def test_init_from_a_different_model_is_refused(teacher_dir, tmp_path):
  c = cfg('vanilla').teacher.config
  c.model_name = 'cnn'
  c.model = {'widths': (8,)}
  c.init_from = teacher_dir
  with pytest.raises(ConfigError, match=r'init_from=.*: params/\S+ is .* '
                     'there, .* here; give a run of the same model'):
    train.train(c, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()     # refused before any write
