"""Data parallelism over the host's CPU cores: one process, several CPU devices.

XLA:CPU runs one program on a few threads and leaves cores idle between its
small kernels; the same step split over several CPU devices (each a slice of
the batch, gradients all-reduced) runs the slices side by side. Measured with
`python -m experiments.bench --sections=devices` (docs/benchmarks.md). CPU
runs therefore start JAX with `cpu_devices` devices (config key; 0 = auto:
AUTO_PER_CORE per usable core, at most AUTO_MAX), and the mesh's data axis
(-1) takes the largest count of them that divides every batch size of the
stage (`usable`), so any batch size still runs.

Changing the device count changes the order of floating-point reductions,
hence the last digits of a run; a given count is deterministic. Runs on TPU
or GPU are untouched (the count only shapes JAX's CPU backend), and so is a
process whose backend is already running (tests, notebooks) or whose
XLA_FLAGS already force a device count.

    python -m launch.main --config=configs/cifar10_teacher.py \
        --workdir=/tmp/c10 --config.cpu_devices=1     # one device, as before
"""
import os

import jax

from core.errors import ConfigError

# Measured on 2 cores with XLA's convolution (docs/benchmarks.md): 1, 2, 4,
# 8, 16 devices ran the CIFAR ResNet-20 step in 875, 661, 606, 546, 520 ms.
AUTO_PER_CORE = 4
AUTO_MAX = 8
ENV = 'DISTILL_CPU_DEVICES'


def usable_cores():
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:                          # not Linux
    return os.cpu_count() or 1


# Models whose CPU step is nearly all calls to the kernel library
# (models/kernels/onednn.py: oneDNN's convolutions, the fused batch norms),
# each of which uses every core: one device runs them fastest (the fused
# batch norms need the whole batch on one device; across devices they are
# XLA's, with all-reduces). Other models split the batch over devices so
# that XLA's kernels, one thread each, run side by side (the LM, the MLP).
# Measured: `python -m experiments.bench --sections=torch`
# (docs/benchmarks.md). The small CNN counts only on images: on 1-D signals
# its convolutions and batch norms are XLA's.
ONE_DEVICE_MODELS = ('resnet', 'resnet_imagenet', 'cnn')
IMAGE_ONLY_MODELS = ('cnn',)


def _model_blocks(config):
  """`config` and every config block nested in it (a distillation config's
  teacher) that names a model."""
  if config is None or not hasattr(config, 'items'):
    return []
  blocks = [config] if 'model_name' in config else []
  for _, value in config.items():
    if hasattr(value, 'items'):
      blocks += _model_blocks(value)
  return blocks


def onednn_step(config):
  """Whether every model `config` trains is one of ONE_DEVICE_MODELS on
  oneDNN's kernels (model.conv auto or onednn, float32, the kernels
  buildable here)."""
  from models.kernels import onednn  # pylint: disable=g-import-not-at-top
  blocks = _model_blocks(config)
  return (bool(blocks) and all(
      b['model_name'] in ONE_DEVICE_MODELS
      and b.get('model', {}).get('conv', 'auto') in ('auto', 'onednn')
      and b.get('model_dtype', 'float32') == 'float32'
      and (b['model_name'] not in IMAGE_ONLY_MODELS
           or _on_images(b.get('data') or config.get('data')))
      for b in blocks) and onednn.can_build())


def _on_images(data):
  """Whether the data config `data` names a dataset of images."""
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  try:
    return data is not None and datasets.spec(data).input_key == 'image'
  except Exception:  # pylint: disable=broad-except
    return False     # an unknown dataset says so when it loads


def auto_count(cores=None, config=None):
  """The auto device count: 1 for a config whose step is oneDNN's
  (`onednn_step`), else AUTO_PER_CORE per usable core, at most AUTO_MAX."""
  if config is not None and onednn_step(config):
    return 1
  cores = usable_cores() if cores is None else cores
  return max(1, min(AUTO_MAX, AUTO_PER_CORE * cores))


# Simulated CPU devices share the host's cores with each other and with
# whatever else runs there. XLA:CPU aborts the process when a collective's
# participants have not all arrived within 40 s, which a loaded 2-core
# machine exceeded once (a table run, another test suite beside it, died
# in a gradient all-reduce). But a collective can also never complete: on
# 2026-12-02 an 8-device CIFAR active run sat at 0% CPU for 9 minutes with
# 7 of 8 participants at an all-reduce's rendezvous (XLA's CPU runtime; the
# image models now take one device there too). A stuck step warns after 2
# minutes and ends the process after 15, so a deadlocked run fails (and
# resumes from its checkpoint when rerun) instead of holding the machine
# for an hour; a slow participant on a loaded host takes far less.
COLLECTIVE_TIMEOUT_FLAGS = (
    '--xla_cpu_collective_call_terminate_timeout_seconds=900',
    '--xla_cpu_collective_call_warn_stuck_timeout_seconds=120')


def tolerate_loaded_hosts():
  """Adds COLLECTIVE_TIMEOUT_FLAGS to XLA_FLAGS (those not set already);
  read when the CPU backend starts."""
  flags = os.environ.get('XLA_FLAGS', '')
  extra = [f for f in COLLECTIVE_TIMEOUT_FLAGS
           if f.split('=')[0] not in flags]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([flags] + extra).strip()


def configure(count=0, processes=1, config=None):
  """Asks JAX for `count` CPU devices (0: auto for `config`, `auto_count`,
  which is 1 per process when several processes share the work;
  DISTILL_CPU_DEVICES, when set, wins) before its backends start. Returns
  the count asked for, or None where it was left alone (backend running,
  XLA_FLAGS force a count)."""
  value = os.environ.get(ENV, count)
  try:
    count = int(value or 0)
  except ValueError:
    count = -1
  if count < 0:
    where = ENV if ENV in os.environ else 'cpu_devices'
    raise ConfigError(f'{where}={value!r} must be an integer >= 0 (0: auto, '
                      f'{auto_count()} here)')
  tolerate_loaded_hosts()
  if 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
    return None
  count = count or (auto_count(config=config) if processes == 1 else 1)
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:       # the backend already runs with another count
    return None
  return count


def usable(devices, batch_sizes, per_replica=1, model=1):
  """The first n of `devices` that a mesh with a -1 data axis uses on one CPU
  process: the largest n, a multiple of `per_replica` (the other axes'
  product), whose batch shards (n / `model`) divide every batch size. All of
  them off CPU or across processes, where a batch that does not divide is the
  user's to fix, as the mesh check says."""
  devices = list(devices)
  if (not devices or devices[0].platform != 'cpu'
      or jax.process_count() > 1):
    return devices
  sizes = [int(b) for b in batch_sizes if b and int(b) > 0]
  for n in range(len(devices), 0, -1):
    if n % per_replica == 0 and all(b % (n // model) == 0 for b in sizes):
      return devices[:n]
  return devices
