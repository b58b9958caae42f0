"""Two processes on CPU joined by jax.distributed over loopback behave as one
process with all their devices, through the whole distillation pipeline
(teacher, sharded labeling pass, student): SIGTERM to one of them makes both
save the same step and exit 143 (JAX's preemption service, no per-step
collective); rerun, they finish with the one process's summary, and every
file has one writer (metrics lines once, one final line)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import conftest
from conftest import REPO

ARGS = ['--config=configs/digits_distill.py:method=vanilla',
        '--config.teacher.config.total_epochs=-1',
        '--config.teacher.config.total_steps=60',
        '--config.teacher.config.mesh.data=-1',
        '--config.total_epochs=-1', '--config.total_steps=200',
        '--config.checkpoint_every_steps=50', '--config.log_every_steps=25',
        '--config.eval_every_epochs=-1', '--config.tensorboard=False',
        '--config.mesh.data=-1']


def _env(devices):
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=conftest.xla_flags(devices))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _two(workdir):
  port = _free_port()
  return [subprocess.Popen(
      [sys.executable, '-m', 'launch.main', '--multihost',
       f'--coordinator=localhost:{port}', '--num_processes=2',
       f'--process_id={i}', f'--workdir={workdir}', *ARGS], cwd=REPO,
      env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]


def _summary(workdir):
  with open(os.path.join(workdir, 'summary.json')) as f:
    s = json.load(f)
  return {k: v for k, v in s.items() if 'seconds' not in k}


def _records(workdir):
  with open(os.path.join(workdir, 'student', 'metrics.jsonl')) as f:
    return [(r['step'], sorted(set(r) - {'time', 'compile_seconds'}))
            for r in map(json.loads, f)]


@pytest.mark.slow
def test_two_processes_preempted_and_resumed_equal_one_process(tmp_path):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  procs = _two(two)
  marker = os.path.join(two, 'student', 'checkpoints', '50')
  deadline = time.time() + 300
  while not os.path.exists(marker):
    assert all(p.poll() is None for p in procs), [
        p.stdout.read()[-2000:] for p in procs]
    assert time.time() < deadline, 'no student checkpoint appeared'
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)       # one host gets the notice
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert [p.returncode for p in procs] == [143, 143], [o[-2000:] for o in
                                                        outs]
  saved = {o.split('SIGTERM: saved a checkpoint at step ')[1].split(';')[0]
           for o in outs}
  assert len(saved) == 1, saved               # the same step on both
  assert not os.path.exists(os.path.join(two, 'summary.json'))

  procs = _two(two)                           # the same command again
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert ['final:' in out for out in outs] == [True, False]   # one writer
  assert 'Resumed from' in outs[0]

  single = subprocess.run(
      [sys.executable, '-m', 'launch.main', f'--workdir={one}', *ARGS],
      cwd=REPO, env=_env(4), capture_output=True, text=True, timeout=600,
      check=False)
  assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-2000:]

  assert _records(two) == _records(one)      # every record once
  a, b = _summary(one), _summary(two)
  assert a.keys() == b.keys()
  for k in a:
    if isinstance(a[k], float):
      assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    else:
      assert a[k] == b[k], k
