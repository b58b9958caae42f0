"""Faults that must lose nothing: a corrupted or truncated latest checkpoint
falls back to the previous good one; a NaN loss stops the run naming the
step without overwriting the last good checkpoint; kill -9 in the middle of
distillation or of an active-distillation round, then the same command,
equals an uninterrupted run. (kill -9 and SIGTERM during plain training:
tests/test_checkpoint.py.)"""
import json
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import pytest

from configs import common, digits_teacher
from conftest import REPO
from core.errors import ConfigError, Diverged
from distill import train
from distill.logging_utils import read_metrics
import faultlib


def _config(steps):
  return common.override(digits_teacher.get_config(), {
      'total_steps': steps, 'total_epochs': -1.0, 'eval_every_epochs': -1.0,
      'checkpoint_every_steps': 50, 'log_every_steps': 50,
      'keep_checkpoints': 3, 'tensorboard': False, 'progress': False})


def _steps(workdir, sub='checkpoints'):
  d = os.path.join(workdir, sub)
  return sorted(int(s.split('.')[0]) for s in os.listdir(d)
                if s.split('.')[0].isdigit()) if os.path.isdir(d) else []


def _final(workdir):
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    m = json.load(f)
  m.pop('train_seconds')
  return m


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('reference'))
  train.train(_config(150), workdir)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('damage', [faultlib.truncate, faultlib.garble])
def test_unreadable_latest_checkpoint_falls_back_to_the_previous(
    reference, tmp_path, capsys, damage):
  workdir = str(tmp_path)
  train.train(_config(150), workdir)
  assert _steps(workdir) == [50, 100, 150]
  os.remove(os.path.join(workdir, 'final_metrics.json'))
  damage(os.path.join(workdir, 'checkpoints', '150'))
  # the same command again: resumes from step 100 and redoes 100..150
  final = train.train(_config(150), workdir)
  out = capsys.readouterr().out
  assert 'checkpoint at step 150 is unreadable' in out, out[-2000:]
  assert 'falling back to the previous one' in out
  assert 'at step 100.' in out
  assert _steps(workdir, 'checkpoints_unreadable') == [150]   # kept aside
  assert final['step'] == 150
  assert _final(workdir) == _final(reference)


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    tmp_path):
  workdir = str(tmp_path / 'diverged')
  trainer = train.Trainer(_config(150), workdir)
  step_fn = trainer.train_step

  def poisoned(state, batch):          # loss is NaN from step 62 on
    state, metrics = step_fn(state, batch)
    s, c = metrics['loss']
    bad = jnp.where(state.step >= 62, jnp.nan, 0.0)
    return state, dict(metrics, loss=(s + bad, c))

  trainer.train_step = poisoned
  with pytest.raises(Diverged, match=r'loss is nan at step 62; stopped '
                     r'without saving, the last good checkpoint \(step 50\)'):
    trainer.run()
  assert _steps(workdir) == [50]
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))
  # The same workdir refuses a changed setting (it holds that run) ...
  lower = common.override(_config(150), {'optimizer.lr': 1e-3})
  with pytest.raises(ConfigError, match='optimizer.lr is 0.002 there, 0.001 '
                     'here; .* --init_from=' + workdir):
    train.train(lower, workdir)
  # ... a new one continues it from its step 50 with the lower rate
  # (init_from_state=all: optimizer, step and data position).
  common.override(lower, {'init_from': f'{workdir}:50',
                          'init_from_state': 'all'})
  fresh = str(tmp_path / 'continued')
  final = train.train(lower, fresh)
  assert final['step'] == 150
  assert [r['step'] for r in read_metrics(fresh) if 'train/loss' in r] == [
      100, 150]
  # and the kept checkpoint still restores: a clean rerun resumes from it
  final = train.train(_config(150), workdir)
  assert final['step'] == 150


# --- kill -9 in the multi-stage pipelines -----------------------------------

PIPELINES = {
    # teacher 60 steps -> cache -> slam student 200 steps
    'distillation': [
        '--config=configs/digits_distill.py:method=slam',
        '--config.teacher.config.total_epochs=-1',
        '--config.teacher.config.total_steps=60',
        '--config.total_epochs=-1', '--config.total_steps=200',
        '--config.checkpoint_every_steps=50', '--config.tensorboard=False'],
    # teacher 40 steps -> 3 active rounds (rad + slam) of 100 student steps
    'active': [
        '--config=configs/active_distill.py:dataset=digits,strategy=rad,'
        'method=slam,budget=60,per_round=20,initial=20,steps=100',
        '--config.teacher.config.total_epochs=-1',
        '--config.teacher.config.total_steps=40',
        '--config.checkpoint_every_steps=50', '--config.tensorboard=False'],
}
# where to kill: a file that appears mid-run (a checkpoint of a later stage)
KILL_WHEN = {'distillation': 'student/checkpoints/100',
             'active': 'round1/checkpoints/50'}
RESULT = {'distillation': 'summary.json', 'active': 'rounds.json'}


def _launch(args, workdir):
  return subprocess.Popen(
      [sys.executable, '-m', 'launch.main', f'--workdir={workdir}', *args],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _finish(proc):
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  return out


def _result(name, workdir):
  with open(os.path.join(workdir, RESULT[name])) as f:
    r = json.load(f)
  for k in list(r):
    if 'seconds' in k:
      r.pop(k)
  return r


def _all_json_readable(workdir):
  for root, _, files in os.walk(workdir):
    for f in files:
      assert not f.endswith('.tmp'), os.path.join(root, f)
      if f.endswith('.json'):
        with open(os.path.join(root, f)) as fh:
          json.load(fh)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(PIPELINES))
def test_kill9_mid_pipeline_then_rerun_equals_an_uninterrupted_run(
    name, tmp_path):
  reference, killed = str(tmp_path / 'reference'), str(tmp_path / 'killed')
  _finish(_launch(PIPELINES[name], reference))
  proc = _launch(PIPELINES[name], killed)
  marker = os.path.join(killed, KILL_WHEN[name])
  deadline = time.time() + 300
  while not os.path.exists(marker):
    assert proc.poll() is None, 'ended before the kill: ' + (
        proc.stdout.read()[-2000:])
    assert time.time() < deadline, 'the kill point never came'
    time.sleep(0.05)
  proc.kill()                                  # SIGKILL: nothing is saved
  proc.wait()
  _all_json_readable(killed)                   # atomic writes: no torn file
  out = _finish(_launch(PIPELINES[name], killed))
  assert 'Resumed from' in out
  assert _result(name, killed) == _result(name, reference)


# --- Ctrl-C ------------------------------------------------------------------

def test_a_first_ctrl_c_asks_to_save_a_second_aborts_at_once():
  """The train loop's signal flags (the saving run itself:
  tests/test_checkpoint.py)."""
  from distill import preemption  # pylint: disable=g-import-not-at-top
  before = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    flags = preemption.Preemption()
    assert not flags.reached(1)
    signal.raise_signal(signal.SIGINT)      # the first: save, then stop
    assert flags.reached(2) and flags.signal_name == 'SIGINT'
    assert preemption.exit_status() == 130
    with pytest.raises(KeyboardInterrupt):  # the second: abort now
      signal.raise_signal(signal.SIGINT)
    flags.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # a run started with Ctrl-C ignored (a background job) keeps it so
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    flags = preemption.Preemption()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    flags.restore()
  finally:
    signal.signal(signal.SIGINT, before)
