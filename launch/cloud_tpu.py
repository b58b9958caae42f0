"""The Cloud TPU launch logic behind launch/tpu.py (no flags: importable by
tests and other tools): the job, its exact gcloud commands, and the
resume-until-done loop."""
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Optional

from absl import app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPACITY = ('on-demand', 'spot', 'preemptible', 'reserved')

@dataclasses.dataclass
class Job:
  name: str
  zone: str
  project: str
  accelerator: str
  version: str
  capacity: str
  config: str
  workdir: str
  data_dir: str
  commit: str
  extra: tuple = ()
  gcsfuse: bool = False      # gs:// through FUSE mounts instead of natively


def gcs_to_mount(path):
  """gs://bucket/x -> /gcs/bucket/x (the workers' gcsfuse mount)."""
  if not path.startswith('gs://'):
    return path
  return '/gcs/' + path[len('gs://'):]


def buckets(job):
  return sorted({p[len('gs://'):].split('/')[0]
                 for p in (job.workdir, job.data_dir) if p.startswith('gs://')})


def check_job(job):
  """One-line errors for what would fail on the pod."""
  for name in ('name', 'zone', 'project', 'config', 'workdir'):
    if not getattr(job, name):
      raise app.UsageError(f'--{name} is required')
  if job.capacity not in CAPACITY:
    raise app.UsageError(f'unknown --capacity {job.capacity!r}; valid '
                         f'choices: {", ".join(CAPACITY)}')
  if not job.workdir.startswith('gs://'):
    raise app.UsageError(f'--workdir={job.workdir} must be a gs:// path: a '
                         "worker's disk does not outlive a preempted slice")
  if job.data_dir and not job.data_dir.startswith('gs://'):
    raise app.UsageError(f'--data_dir={job.data_dir} must be a gs:// path')
  config_file = job.config.split(':', 1)[0]
  if not os.path.isfile(os.path.join(REPO, config_file)):
    raise app.UsageError(f'--config file {config_file} is not in the '
                         'repository')


class Commands:
  """The exact gcloud commands of a job (argument lists)."""

  def __init__(self, job):
    self.job = job
    self.where = [f'--zone={job.zone}', f'--project={job.project}']
    self.archive = f'/tmp/distill-{job.commit[:12]}.tar.gz'
    self.remote_dir = f'distill-{job.commit[:12]}'

  def describe(self):
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', self.job.name,
            *self.where, '--format=value(state)']

  def create(self):
    capacity = {'spot': ['--spot'], 'preemptible': ['--preemptible'],
                'reserved': ['--reserved'], 'on-demand': []}[self.job.capacity]
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', self.job.name,
            *self.where, f'--accelerator-type={self.job.accelerator}',
            f'--version={self.job.version}', *capacity]

  def delete(self):
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', self.job.name,
            *self.where, '--quiet']

  def package(self):
    return ['git', '-C', REPO, 'archive', '--format=tar.gz',
            f'--output={self.archive}', self.job.commit]

  def copy(self):
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', self.archive,
            f'{self.job.name}:{os.path.basename(self.archive)}',
            *self.where, '--worker=all']

  def _ssh(self, command):
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', self.job.name,
            *self.where, '--worker=all', f'--command={command}']

  def bootstrap(self):
    d = self.remote_dir
    return self._ssh(
        f'mkdir -p ~/{d} && tar xzf ~/{os.path.basename(self.archive)} -C '
        f'~/{d} && bash ~/{d}/launch/tpu_bootstrap.sh '
        + ' '.join([f'~/{d}'] + (buckets(self.job) if self.job.gcsfuse
                                 else [])))

  def run(self):
    """The run on every worker: gs:// paths given as they are (orbax,
    TFDS and the run's files read and write Cloud Storage directly), or as
    the FUSE mount's paths with `gcsfuse`."""
    path = gcs_to_mount if self.job.gcsfuse else (lambda p: p)
    args = ['--multihost', f'--config={self.job.config}',
            f'--workdir={path(self.job.workdir)}']
    if self.job.data_dir:
      args.append(f'--config.data.data_dir={path(self.job.data_dir)}')
    args += list(self.job.extra)
    return self._ssh(f'cd ~/{self.remote_dir} && ~/venv-distill/bin/python '
                     '-m launch.main ' + ' '.join(map(shlex.quote, args)))


def _shell(cmd):
  """Runs `cmd`; (exit status, stdout)."""
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  sys.stdout.write(proc.stderr[-2000:])
  return proc.returncode, proc.stdout


def _live_shell(cmd):
  return subprocess.run(cmd, check=False).returncode, ''


def launch(job, shell: Optional[Callable] = None, live: Optional[Callable] =
           None, max_attempts=20, retry_errors=False, backoff_s=60,
           log=print, sleep=time.sleep):
  """The resume-until-done loop; returns the exit status. `shell` runs a
  command and returns (status, stdout); `live` runs the job's command with
  its output streaming (both injectable for the dry run and the tests)."""
  shell = shell or _shell
  live = live or _live_shell
  cmds = Commands(job)

  def step(cmd, runner=shell):
    log('$ ' + ' '.join(shlex.quote(c) for c in cmd))
    return runner(cmd)

  status, _ = step(cmds.package())
  if status:
    return status
  log(f'# shipping commit {job.commit} (uncommitted changes are not shipped)')
  for attempt in range(1, max_attempts + 1):
    log(f'# attempt {attempt}/{max_attempts}')
    status, out = step(cmds.describe())
    state = (out.strip() if status == 0 else '') or 'NOT_FOUND'
    if state not in ('READY', 'NOT_FOUND', 'CREATING'):
      log(f'# slice {job.name} is {state}: deleting and recreating it')
      step(cmds.delete())
      state = 'NOT_FOUND'
    if state == 'NOT_FOUND':
      status, _ = step(cmds.create())
      if status:
        log(f'# create failed (status {status}); retrying in {backoff_s} s')
        sleep(backoff_s)
        continue
    for cmd in (cmds.copy(), cmds.bootstrap()):
      status, _ = step(cmd)
      if status:
        break
    if status == 0:
      status, _ = step(cmds.run(), live)
      if status == 0:
        log(f'# done: {job.workdir}')
        return 0
    _, out = shell(cmds.describe())
    state = out.strip() or 'NOT_FOUND'
    if state == 'READY' and not retry_errors:
      log(f'# the run failed with status {status} on a READY slice: not a '
          'preemption; stopping (see the output above; --retry_errors to '
          'retry anyway)')
      return status
    log(f'# slice is {state} after status {status}; resuming in '
        f'{backoff_s} s')
    sleep(backoff_s)
  log(f'# gave up after {max_attempts} attempts')
  return 1


def resolve_commit(ref):
  proc = subprocess.run(['git', '-C', REPO, 'rev-parse', '--verify',
                         f'{ref}^{{commit}}'], capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    raise app.UsageError(f'--ref={ref} is not a commit of this repository')
  return proc.stdout.strip()
