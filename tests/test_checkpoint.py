"""Checkpoints: round trip, kill -9 / SIGTERM / Ctrl-C resume equivalence,
load by path."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from distill import checkpoint as ckpt_lib
from distill import train
from distill.data import loading
from distill.data import pipeline
from distill.logging_utils import read_metrics
import models

STEPS = 1500
ARGS = ['--config=configs/digits_teacher.py',
        f'--config.total_steps={STEPS}', '--config.total_epochs=-1',
        '--config.checkpoint_every_steps=100', '--config.log_every_steps=100',
        '--config.eval_every_epochs=-1', '--config.model.dropout=0.1',
        '--config.data.augment=flip', '--config.tensorboard=False']


def launch(workdir, *extra):
  return subprocess.Popen(
      [sys.executable, '-m', 'launch.main', f'--workdir={workdir}', *ARGS,
       *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      # as from a terminal: Ctrl-C at its default (a shell's background job,
      # which pytest may be, starts its children with it ignored)
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  return out


def final_metrics(workdir):
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    m = json.load(f)
  m.pop('train_seconds')
  return m


def saved_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if (
      os.path.isdir(d)) else []


def wait_for_checkpoint(proc, workdir, min_step):
  deadline = time.time() + 300
  while time.time() < deadline:
    if saved_steps(workdir) and saved_steps(workdir)[-1] >= min_step:
      return
    if proc.poll() is not None:
      pytest.fail('run ended before it was interrupted: '
                  + proc.stdout.read()[-2000:])
    time.sleep(0.05)
  pytest.fail('no checkpoint appeared')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  finish(launch(workdir))
  return workdir


@pytest.mark.slow
def test_kill9_then_resume_gives_the_same_final_metrics(reference, tmp_path):
  """Killed while two grain workers feed it, resumed with none: the same
  final metrics and records as the uninterrupted run (the batches depend on
  the step alone), and no worker outlives the killed run."""
  workdir = str(tmp_path)
  proc = launch(workdir, '--config.data.workers=2')
  wait_for_checkpoint(proc, workdir, 300)
  workers = _children(proc.pid)
  assert len(workers) >= 2, workers
  proc.kill()                       # SIGKILL: no chance to save anything
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = saved_steps(workdir)[-1]
  assert killed_at < STEPS
  out = finish(launch(workdir))
  assert 'Resumed from' in out and f'at step {killed_at}' in out
  assert final_metrics(workdir) == final_metrics(reference)
  # every record once: those logged after the checkpoint were dropped and
  # logged again by the resumed run
  def records(w):
    return [(r['step'], sorted(set(r) - {'time', 'compile_seconds'}))
            for r in read_metrics(w)]
  assert records(workdir) == records(reference)
  assert not [p for p in workers if os.path.exists(f'/proc/{p}')]


def _children(pid):
  """Process ids whose parent is `pid` (Linux)."""
  out = []
  for name in os.listdir('/proc'):
    if name.isdigit():
      try:
        with open(f'/proc/{name}/stat') as f:
          if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
            out.append(int(name))
      except (OSError, IndexError, ValueError):
        pass
  return out


@pytest.mark.slow
def test_sigterm_saves_then_resume_gives_the_same_final_metrics(reference,
                                                                 tmp_path):
  workdir = str(tmp_path)
  proc = launch(workdir)
  wait_for_checkpoint(proc, workdir, 200)
  proc.send_signal(signal.SIGTERM)
  sent = time.time()
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 143, out[-2000:]
  # within a TPU VM's preemption notice (30 s), with room to spare
  assert time.time() - sent < 20
  assert 'SIGTERM: saved a checkpoint at step' in out
  step = int(out.split('SIGTERM: saved a checkpoint at step ')[1].split(';')[0])
  assert saved_steps(workdir)[-1] == step
  finish(launch(workdir))
  assert final_metrics(workdir) == final_metrics(reference)


def _logged(workdir, records):
  """Whether `metrics.jsonl` holds `records` whole lines yet."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return f.read().count('\n') >= records


@pytest.mark.slow
def test_ctrl_c_saves_at_its_step_and_a_resume_continues_from_it(
    reference, tmp_path):
  """Ctrl-C (SIGINT) with no checkpoint due for a long time: a checkpoint
  at the step it came, exit 130; the same command resumes from that step
  to the uninterrupted run's final metrics."""
  workdir = str(tmp_path)
  rare = f'--config.checkpoint_every_steps={10 * STEPS}'
  proc = launch(workdir, rare)
  deadline = time.time() + 300
  while not _logged(workdir, 2):            # steps 100 and 200 logged
    assert proc.poll() is None, proc.stdout.read()[-2000:]
    assert time.time() < deadline, 'the run never logged'
    time.sleep(0.05)
  assert not saved_steps(workdir)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out[-2000:]
  assert 'SIGINT: saved a checkpoint at step' in out, out[-2000:]
  step = int(out.split('SIGINT: saved a checkpoint at step ')[1].split(';')[0])
  assert 200 <= step < STEPS
  assert saved_steps(workdir) == [step]
  out = finish(launch(workdir, rare))
  assert f'Resumed from {workdir}/checkpoints at step {step}.' in out, out[:2000]
  assert final_metrics(workdir) == final_metrics(reference)


@pytest.mark.slow
def test_load_trained_reproduces_the_test_accuracy(reference):
  config, variables, step = ckpt_lib.load_trained(reference)
  assert step == STEPS
  data = loading.load_data(config.data)
  model = models.build(config.model_name, data.num_classes,
                       config.model_dtype, **config.model.to_dict())
  inputs = pipeline.Inputs(data.spec)
  correct = total = 0
  for batch in pipeline.eval_batches(data.parts['test'], 500,
                                     inputs.host_eval):
    pred = np.argmax(model.apply(variables, inputs.device(batch['inputs'])),
                     -1)
    correct += np.sum((pred == batch['label']) * batch['mask'])
    total += batch['mask'].sum()
  assert correct / total == pytest.approx(
      final_metrics(reference)['test/accuracy'], abs=1e-6)
  assert correct / total > 0.9


def test_state_round_trip(tmp_path):
  from configs import digits_teacher  # pylint: disable=g-import-not-at-top
  config = digits_teacher.get_config('runlocal')
  trainer = train.Trainer(config, str(tmp_path))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / 'rt'))
  extra = {'data': {'next_step': 0}, 'chrono': {'train_seconds': 1.5}}
  ckpt.save(0, trainer.state, extra)
  ckpt.wait()
  target = ckpt_lib.abstract_like(trainer.state, trainer.state_sharding)
  restored, restored_extra = ckpt.restore(target)
  ckpt.close()
  assert restored_extra == extra
  for a, b in zip(jax.tree.leaves(trainer.state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding == b.sharding


@pytest.mark.slow
def test_workdir_of_another_config_is_refused(reference):
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.main', f'--workdir={reference}', *ARGS,
       '--config.optimizer.lr=0.5'], cwd=REPO, capture_output=True,
      text=True, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith(
      'error: workdir') and 'optimizer.lr' in proc.stderr
  assert saved_steps(reference)[-1] == STEPS      # nothing was touched


def test_run_writes_manifest_and_metrics(reference):
  with open(os.path.join(reference, 'config.json')) as f:
    config = json.load(f)
  assert config['total_steps'] == STEPS and config['model_name'] == 'mlp'
  with open(os.path.join(reference, 'command.txt')) as f:
    assert '--config=configs/digits_teacher.py' in f.read()
  with open(os.path.join(reference, 'manifest.json')) as f:
    manifest = json.load(f)
  assert manifest['platform'] == 'cpu' and manifest['devices'] >= 1
  assert manifest['cpu_kernels'].startswith(('oneDNN', 'XLA'))
  records = read_metrics(reference)
  train_logs = [r for r in records if 'train/loss' in r]
  assert [r['step'] for r in train_logs] == list(range(100, STEPS + 1, 100))
  assert all(r['examples_per_sec'] > 0 for r in train_logs)
  assert train_logs[-1]['train/loss'] < train_logs[0]['train/loss']
  assert 'test/accuracy' in records[-1] and records[-1]['step'] == STEPS


def test_a_loss_option_added_later_at_its_default_is_no_difference():
  """A run started before a loss gained an option resumes when the option
  is at its default (what the loss computed before); any other value, or
  a key outside method_kw, is still a difference."""
  from core import defaults  # pylint: disable=g-import-not-at-top
  from distill import workdir  # pylint: disable=g-import-not-at-top
  stored = {'method_kw': {'eps': 1e-7}, 'teacher': {'method_kw': {}}}
  option, default = 'target', defaults.method_options()['target']
  same = {'method_kw': {'eps': 1e-7, option: default},
          'teacher': {'method_kw': {option: default}}}
  assert workdir.differences(stored, same) == []
  other = {'method_kw': {'eps': 1e-7, option: 'topk'}, 'teacher': {
      'method_kw': {}}}
  assert [k for k, _, _ in workdir.differences(stored, other)] == [
      'method_kw.target']
  assert [k for k, _, _ in workdir.differences(
      {}, {'model': {option: default}})] == ['model']
  assert [k for k, _, _ in workdir.differences(
      {'method_kw': {'target': default}}, {'method_kw': {}})] == [
          'method_kw.target']       # removed, not added: a difference
