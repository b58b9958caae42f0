"""CPU runs are data parallel over the host's cores by default
(distill/host_devices.py): how many devices, which of them a mesh uses, and
that a run on several gives the numbers of a run on one."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO
from distill import host_devices


def _cpus(n, platform='cpu'):
  return [SimpleNamespace(id=i, platform=platform) for i in range(n)]


@pytest.mark.parametrize('batches,per_replica,model,expected', [
    ((128, 256), 1, 1, 8),     # every device
    ((100, 200), 1, 1, 5),     # the largest count dividing both
    ((64, 50), 1, 1, 2),
    ((9,), 1, 1, 3),
    ((11,), 1, 1, 1),
    ((6,), 2, 2, 6),           # fsdp 1 x model 2: batch shards are n / 2
    ((12,), 4, 1, 4),          # a multiple of the other axes' product
])
def test_a_mesh_uses_the_largest_count_dividing_the_batches(
    batches, per_replica, model, expected):
  assert len(host_devices.usable(_cpus(8), batches, per_replica,
                                 model)) == expected


def test_accelerators_are_never_left_out():
  assert len(host_devices.usable(_cpus(8, 'tpu'), (7,))) == 8


@pytest.mark.parametrize('cores,expected', [(1, 4), (2, 8), (64, 8)])
def test_auto_count(cores, expected):
  assert host_devices.auto_count(cores) == expected


@pytest.mark.parametrize('spec,one_device', [
    ('configs/cifar10_teacher.py:depth=20', True),       # ResNet
    ('configs/cifar10_distill.py:student=resnet', True),  # + its teacher
    ('configs/cifar10_distill.py:student=cnn', True),    # small CNN student
    ('configs/mnist5k_teacher.py', True),                 # CNN on images
    ('configs/mnist1d_teacher.py', False),                # CNN on 1-D signals
    ('configs/shakespeare_lm.py', False),
    ('configs/digits_teacher.py', False),                 # MLP
])
def test_auto_count_of_a_config(spec, one_device, monkeypatch):
  """ResNets and the small CNN on images, on the kernel library, run on one
  device (every core inside each call); other models, 1-D CNNs and XLA's
  convolution split the batch."""
  from distill import config_lib  # pylint: disable=g-import-not-at-top
  from models.kernels import onednn  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(onednn, 'can_build', lambda: True)
  config = config_lib.load_file(spec)
  assert host_devices.auto_count(2, config) == (1 if one_device else 8)
  if one_device:
    config.model_dtype = 'bfloat16'
    assert host_devices.auto_count(2, config) == 8
    config.model_dtype = 'float32'
    config.model.conv = 'xla'
    assert host_devices.auto_count(2, config) == 8
    config.model.conv = 'auto'
    monkeypatch.setattr(onednn, 'can_build', lambda: False)
    assert host_devices.auto_count(2, config) == 8


@pytest.mark.parametrize('value', ['-2', 'many'])
def test_a_bad_count_is_one_line(value, monkeypatch):
  from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(host_devices.ENV, value)
  with pytest.raises(ConfigError, match=f"DISTILL_CPU_DEVICES='{value}' "
                     'must be an integer >= 0'):
    host_devices.configure()


def _run(workdir, *extra, devices=None):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('DISTILL_CPU_DEVICES', None)
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run(
      [sys.executable, '-m', 'launch.main',
       '--config=configs/digits_teacher.py', f'--workdir={workdir}',
       '--config.total_epochs=2', '--config.eval_every_epochs=1',
       '--config.progress=False', '--config.tensorboard=False', *extra]
      + ([f'--config.cpu_devices={devices}'] if devices else []),
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  final = json.loads(proc.stdout.strip().splitlines()[-1][len('final: '):])
  with open(os.path.join(workdir, 'manifest.json')) as f:
    return final, json.load(f)


@pytest.mark.slow
def test_default_run_is_data_parallel_and_matches_one_device(tmp_path):
  auto, manifest = _run(tmp_path / 'auto')
  assert manifest['devices'] == host_devices.auto_count() > 1
  one, manifest = _run(tmp_path / 'one', devices=1)
  assert manifest['devices'] == 1
  metrics = [k for k in one if k.endswith(('loss', 'accuracy'))]
  assert metrics
  for k in metrics:       # reductions in another order: the last digits
    assert auto[k] == pytest.approx(one[k], abs=2e-4), k
  # A run saved on several devices loads in a process of one (this one):
  # a teacher trained data parallel, read by a one-device student.
  import jax  # pylint: disable=g-import-not-at-top
  from distill import checkpoint  # pylint: disable=g-import-not-at-top
  _, variables, step = checkpoint.load_trained(tmp_path / 'auto')
  assert step > 0 and len(jax.devices()) == 1
  assert all(len(leaf.sharding.device_set) == 1
             for leaf in jax.tree.leaves(variables))


def test_collectives_wait_out_a_loaded_host(monkeypatch):
  """Simulated devices on a busy machine: XLA:CPU's 40 s abort of a late
  collective is raised to 15 minutes (a deadlocked one still fails),
  without overriding a user's setting."""
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_collective_call_warn_stuck_'
                     'timeout_seconds=7')
  host_devices.tolerate_loaded_hosts()
  flags = os.environ['XLA_FLAGS'].split()
  assert '--xla_cpu_collective_call_terminate_timeout_seconds=900' in flags
  assert '--xla_cpu_collective_call_warn_stuck_timeout_seconds=7' in flags
  assert len(flags) == 2
  host_devices.tolerate_loaded_hosts()      # idempotent
  assert os.environ['XLA_FLAGS'].split() == flags
