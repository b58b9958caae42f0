"""The methods compose through config alone (README: Layout; docs/methods/):
- a LAuReL ResNet student trained with the SLaM loss on RAD-selected queries;
- a LAuReL LM student initialised by GUIDE from a standard teacher and
  distilled from it online."""
import pytest
import json

import numpy as np

from configs import active_distill, guide_lm
from distill import run


@pytest.mark.slow
def test_laurel_resnet_student_by_slam_on_rad_queries(tmp_path):
  c = active_distill.get_config('dataset=mnist5k,strategy=rad,method=slam,'
                                'student=resnet,residual=laurel_rw_lr,'
                                'runlocal')
  run.execute(c, str(tmp_path))
  with open(tmp_path / 'rounds.json') as f:
    final = json.load(f)['final']
  assert final['round'] >= 1 and final['queries'] == c.active.budget
  assert 0 <= final['test_accuracy'] <= 1
  with open(tmp_path / 'round1' / 'config.json') as f:
    student = json.load(f)
  assert student['method'] == 'slam' and student['model_name'] == 'resnet'
  assert student['model']['residual'] == 'laurel_rw_lr'


@pytest.mark.slow
def test_laurel_lm_student_guided_from_a_standard_teacher(tmp_path):
  text = tmp_path / 'corpus.txt'
  rng = np.random.default_rng(0)
  text.write_text(' '.join(''.join(rng.choice(list('abcdefgh '), 7))
                           for _ in range(3000)))
  c = guide_lm.get_config(f'init=guide,method=vanilla,residual=laurel_rw_lr,'
                          f'text={text},runlocal')
  assert c.teacher.config.model.get('residual', 'standard') == 'standard'
  out = run.execute(c, str(tmp_path / 'run'))
  assert np.isfinite(out['student/test/loss']) and out['init'] == 'guide'
  with open(tmp_path / 'run' / 'student' / 'config.json') as f:
    student = json.load(f)
  assert student['init']['method'] == 'guide'
  assert student['model']['residual'] == 'laurel_rw_lr'
