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


@pytest.mark.slow
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


@pytest.mark.slow
def test_compile_check_of_a_student_and_a_memory_limit():
  code, out, err = _compile_check(
      '--config=configs/digits_distill.py:method=slam,runlocal',
      '--devices=4', '--mesh=data=-1', '--batch_size=32',
      '--device_memory_gib=0.000001')
  assert code == 1, err[-2000:]
  assert '(student step)' in out and 'DOES NOT FIT in 1e-06 GiB' in out


@pytest.mark.slow
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


# --- the Cloud TPU launcher -------------------------------------------------

TPU_ARGS = ['--name=kd-v4', '--zone=us-central2-b', '--project=my-proj',
            '--accelerator=v4-32', '--capacity=spot',
            '--config=configs/imagenet_distill.py:method=slam',
            '--workdir=gs://my-bucket/kd/in_slam',
            '--data_dir=gs://my-bucket/tfds']


def _head():
  return subprocess.run(['git', '-C', REPO, 'rev-parse', 'HEAD'],
                        capture_output=True, text=True,
                        check=True).stdout.strip()


@pytest.mark.parametrize('gcsfuse', [False, True])
def test_tpu_dry_run_prints_the_exact_commands(gcsfuse):
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.tpu', *TPU_ARGS, '--dry_run',
       f'--gcsfuse={gcsfuse}', '--', '--config.batch_size=2048'], cwd=REPO,
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  sha = _head()
  d = f'distill-{sha[:12]}'
  where = '--zone=us-central2-b --project=my-proj'
  # gs:// paths as they are, or (--gcsfuse) mounted and given as mount paths
  mounts, gs = (' my-bucket', '/gcs/my-bucket') if gcsfuse else (
      '', 'gs://my-bucket')
  assert [l for l in proc.stdout.splitlines() if l.startswith('$ ')] == [
      f'$ git -C {REPO} archive --format=tar.gz --output=/tmp/{d}.tar.gz '
      f'{sha}',
      f"$ gcloud compute tpus tpu-vm describe kd-v4 {where} "
      "'--format=value(state)'",
      f'$ gcloud compute tpus tpu-vm create kd-v4 {where} '
      '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot',
      f'$ gcloud compute tpus tpu-vm scp /tmp/{d}.tar.gz kd-v4:{d}.tar.gz '
      f'{where} --worker=all',
      f"$ gcloud compute tpus tpu-vm ssh kd-v4 {where} --worker=all "
      f"'--command=mkdir -p ~/{d} && tar xzf ~/{d}.tar.gz -C ~/{d} && bash "
      f"~/{d}/launch/tpu_bootstrap.sh ~/{d}{mounts}'",
      f"$ gcloud compute tpus tpu-vm ssh kd-v4 {where} --worker=all "
      f"'--command=cd ~/{d} && ~/venv-distill/bin/python -m launch.main "
      '--multihost --config=configs/imagenet_distill.py:method=slam '
      f'--workdir={gs}/kd/in_slam '
      f"--config.data.data_dir={gs}/tfds --config.batch_size=2048'"]


class FakeCloud:
  """Answers gcloud commands from a script of slice states and run statuses."""

  def __init__(self, states, runs):
    self.states, self.runs, self.calls = list(states), list(runs), []

  def shell(self, cmd):
    self.calls.append(cmd[4] if cmd[0] == 'gcloud' else cmd[0])
    if cmd[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe']:
      state = self.states.pop(0)
      return (0, state) if state != 'NOT_FOUND' else (1, '')
    return 0, ''

  def live(self, cmd):
    self.calls.append('run')
    return self.runs.pop(0), ''


def _job():
  from launch import cloud_tpu as tpu  # pylint: disable=g-import-not-at-top
  return tpu.Job(name='kd', zone='z', project='p', accelerator='v4-8',
                 version='v', capacity='spot', config='configs/x.py',
                 workdir='gs://b/w', data_dir='', commit='0' * 40)


def test_tpu_loop_recreates_a_preempted_slice_and_resumes_until_done():
  from launch import cloud_tpu as tpu  # pylint: disable=g-import-not-at-top
  # attempt 1: no slice -> create, run dies with the slice (PREEMPTED);
  # attempt 2: delete + create, run finishes
  cloud = FakeCloud(states=['NOT_FOUND', 'PREEMPTED', 'PREEMPTED'],
                    runs=[255, 0])
  status = tpu.launch(_job(), cloud.shell, cloud.live, backoff_s=0,
                      log=lambda _: None, sleep=lambda _: None)
  assert status == 0
  assert cloud.calls == ['git', 'describe', 'create', 'scp', 'ssh', 'run',
                         'describe', 'describe', 'delete', 'create', 'scp',
                         'ssh', 'run']


def test_tpu_loop_stops_when_the_run_fails_on_a_ready_slice():
  from launch import cloud_tpu as tpu  # pylint: disable=g-import-not-at-top
  cloud = FakeCloud(states=['READY', 'READY'], runs=[2])
  logs = []
  status = tpu.launch(_job(), cloud.shell, cloud.live, backoff_s=0,
                      log=logs.append, sleep=lambda _: None)
  assert status == 2
  assert cloud.calls == ['git', 'describe', 'scp', 'ssh', 'run', 'describe']
  assert 'not a preemption' in logs[-1]


@pytest.mark.parametrize('flag,expected', [
    ('--workdir=/tmp/run', '--workdir=/tmp/run must be a gs:// path'),
    ('--capacity=cheap', "flag --capacity=cheap: value should be one of"),
    ('--config=configs/nope.py', '--config file configs/nope.py is not in '
     'the repository'),
])
def test_tpu_bad_input_is_one_line(flag, expected):
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.tpu', *TPU_ARGS, flag, '--dry_run'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert expected in proc.stderr, proc.stderr[-1000:]
  assert '$ gcloud' not in proc.stdout


@pytest.mark.slow
def test_entry_point_refuses_an_unmounted_gcs_workdir():
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.main', '--config=configs/digits_teacher.py',
       '--workdir=gs://no-such-bucket/run', '--gcsfuse'], cwd=REPO,
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: --workdir=gs://no-such-bucket/run: bucket no-such-bucket is not '
      'mounted at /gcs/no-such-bucket; mount it with gcsfuse (launch/tpu.py '
      'does on TPU workers) or give a local path']


@pytest.mark.slow
def test_entry_point_needs_gcsfs_for_a_gcs_workdir():
  """Without --gcsfuse a gs:// workdir is read directly (etils.epath), which
  needs gcsfs: its absence is one line, before anything else happens."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec('gcsfs') is not None:
    pytest.skip('gcsfs is installed: a gs:// workdir would be used directly')
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.main', '--config=configs/digits_teacher.py',
       '--workdir=gs://no-such-bucket/run'], cwd=REPO, capture_output=True,
      text=True, timeout=120, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      'error: --workdir=gs://no-such-bucket/run: reading Cloud Storage '
      "directly needs the gcsfs package (pip install -e '.[gcs]'; .[tpu] has "
      'it), or give --gcsfuse with the bucket mounted at /gcs/BUCKET']


def test_suite_rows_of_a_matched_run_replace_only_theirs():
  """--suite_match: the new rows replace theirs in the table already
  there, the others kept, in suite order."""
  from launch import suite_rows  # pylint: disable=g-import-not-at-top
  head = '| config (stage) | devices | x |\n|---|---|---|\n'
  suite = (('a.py', 'student'), ('b.py:v=1', 'train'), ('c.py', 'teacher'))
  old = head + ('| `a.py` (student) | 8 | old a |\n'
                '| `b.py:v=1` (train) | 8 | old b |\n')
  new = head + ('| `c.py` (teacher) | 8 | new c |\n'
                '| `b.py:v=1` (train) | 8 | new b |\n')
  merged = suite_rows.merge_rows(old, new, suite, [8]).splitlines()
  assert merged[2:] == ['| `a.py` (student) | 8 | old a |',
                        '| `b.py:v=1` (train) | 8 | new b |',
                        '| `c.py` (teacher) | 8 | new c |']
