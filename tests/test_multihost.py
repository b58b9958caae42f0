"""Two processes on CPU joined by jax.distributed over loopback behave as one
process with all their devices: same final metrics (each process feeds its
own shard of every global batch), and a single writer for metrics, the
manifest and the final line."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO

ARGS = ['--config=configs/digits_teacher.py', '--config.total_steps=120',
        '--config.total_epochs=-1', '--config.checkpoint_every_steps=60',
        '--config.log_every_steps=30', '--config.tensorboard=False',
        '--config.mesh.data=-1']


def _env(devices):
  return dict(os.environ, JAX_PLATFORMS='cpu',
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _final(workdir):
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    m = json.load(f)
  m.pop('train_seconds')
  return m


def _run(cmd, env):
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one_process_with_their_devices(tmp_path):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  port = _free_port()
  procs = [_run([sys.executable, '-m', 'launch.main', '--multihost',
                 f'--coordinator=localhost:{port}', '--num_processes=2',
                 f'--process_id={i}', f'--workdir={two}', *ARGS], _env(2))
           for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  single = _run([sys.executable, '-m', 'launch.main', f'--workdir={one}',
                 *ARGS], _env(4))
  out_single = single.communicate(timeout=600)[0]
  assert single.returncode == 0, out_single[-3000:]

  # one writer: only process 0 prints the final line and writes the logs
  assert ['final:' in out for out in outs] == [True, False]
  lines = {}
  for w in (one, two):
    with open(os.path.join(w, 'metrics.jsonl')) as f:
      lines[w] = [sorted(json.loads(line)) for line in f]
  assert lines[two] == lines[one]                  # no line written twice
  assert sorted(os.listdir(os.path.join(two, 'checkpoints'))) == ['120', '60']
  a, b = _final(one), _final(two)
  assert a.keys() == b.keys()
  for k in a:
    assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
