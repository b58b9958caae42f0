"""The pod path, checked here: the compile check (a config's train step
lowered and compiled for a mesh of simulated CPU devices, memory per device)
and the Cloud TPU launcher's dry run (the exact gcloud commands)."""
import json
import subprocess
import sys

import pytest

from conftest import REPO


def _compile_check(*args):
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.compile_check', *args], cwd=REPO,
      capture_output=True, text=True, timeout=600, check=False)
  return proc.returncode, proc.stdout, proc.stderr


def test_compile_check_reports_per_device_memory_of_a_sharded_step():
  code, out, err = _compile_check(
      '--config=configs/shakespeare_lm.py:runlocal', '--devices=8',
      '--mesh=data=2,fsdp=2,model=2', '--batch_size=16', '--json')
  assert code == 0, err[-2000:]
  r = json.loads(out.strip().splitlines()[-1])
  assert r['devices'] == 8 and r['mesh'] == {'data': 2, 'fsdp': 2,
                                             'model': 2}
  full = r['params'] * 4                       # float32
  # fsdp x model shard the big matrices: a device holds well under a copy
  assert r['params_bytes'] < 0.6 * full
  # adam keeps two moments sharded like the parameters
  assert r['opt_state_bytes'] == pytest.approx(2 * r['params_bytes'],
                                               rel=0.05)
  assert r['temp_bytes'] > 0 and r['flops_per_step'] > 0
  assert r['peak_bytes'] == (r['argument_bytes'] + r['output_bytes'] +
                             r['temp_bytes'] - r['alias_bytes'])
  # the same step on one device holds the whole model
  code, out, err = _compile_check(
      '--config=configs/shakespeare_lm.py:runlocal', '--devices=1',
      '--mesh=data=1', '--batch_size=16', '--json')
  assert code == 0, err[-2000:]
  one = json.loads(out.strip().splitlines()[-1])
  assert one['params'] == r['params'] and one['params_bytes'] == full


def test_compile_check_of_a_student_and_a_memory_limit():
  code, out, err = _compile_check(
      '--config=configs/digits_distill.py:method=slam,runlocal',
      '--devices=4', '--mesh=data=-1', '--batch_size=32',
      '--device_memory_gib=0.000001')
  assert code == 1, err[-2000:]
  assert '(student step)' in out and 'DOES NOT FIT in 1e-06 GiB' in out


@pytest.mark.parametrize('args,expected', [
    (['--mesh=data=3'], 'error: config.mesh'),
    (['--mesh=data'], "--mesh item 'data' is not AXIS=SIZE"),
    (['--mesh=pipeline=2'], "error: unknown mesh axis 'pipeline'"),
])
def test_compile_check_bad_input_is_one_line(args, expected):
  code, _, err = _compile_check('--config=configs/digits_teacher.py',
                                '--devices=8', *args)
  assert code != 0
  assert expected in err.strip().splitlines()[-1], err[-1000:]
