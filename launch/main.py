"""Entry point: train whatever a config describes, in a workdir.

    python -m launch.main --config=configs/digits_teacher.py \
        --workdir=/tmp/distill/digits_teacher
    python -m launch.main --config=configs/cifar10_teacher.py:labeled=5000 \
        --workdir=/tmp/c10 --config.optimizer.lr=0.05

`--config=FILE:ARG` passes ARG to the file's `get_config(arg)`; any
`--config.KEY=VALUE` overrides a key (unknown keys are an error). Rerunning
the same command resumes from the workdir's newest checkpoint. On a multi-host
TPU slice pass `--multihost` (or set DISTILL_MULTIHOST=1) on every host
(launch/tpu.py does); elsewhere add --coordinator=HOST:PORT, --num_processes
and --process_id, e.g. two local CPU processes:

    for i in 0 1; do JAX_PLATFORMS=cpu python -m launch.main --multihost \
        --coordinator=localhost:8476 --num_processes=2 --process_id=$i \
        --config=configs/digits_teacher.py --workdir=/tmp/mh & done
"""
import json
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally FILE:ARG.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the run.')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', os.environ.get('DISTILL_MULTIHOST', '') == '1',
    'Call jax.distributed.initialize() first (multi-host TPU/GPU).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', os.environ.get('DISTILL_COORDINATOR', ''),
    'host:port of process 0, where the platform cannot find it (CPU/GPU '
    'clusters, local multi-process tests); empty: auto-detected (TPU).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', int(os.environ.get('DISTILL_NUM_PROCESSES', '0')),
    'Number of processes, with --coordinator.')
_GCSFUSE = flags.DEFINE_bool(
    'gcsfuse', False, 'Map gs://BUCKET/... paths to a Cloud Storage FUSE '
    'mount at /gcs/BUCKET (launch/tpu.py --gcsfuse mounts it); without it '
    'gs:// paths are read and written directly.')
_INIT_FROM = flags.DEFINE_string(
    'init_from', '', 'WORKDIR[:STEP]: start this (new) workdir from that run\'s '
    'checkpoint (config.init_from); with --config.init_from_state=all its '
    'whole train state, to continue it with changed settings.')
_DEBUG = flags.DEFINE_bool(
    'debug', False, 'Show the traceback of a reported error, and INFO logs.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', int(os.environ.get('DISTILL_PROCESS_ID', '-1')),
    "This process's index, with --coordinator.")


def initialize_distributed():
  """jax.distributed.initialize from the flags (auto-detected on TPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  if not _COORDINATOR.value:
    jax.distributed.initialize()
    return
  if _NUM_PROCESSES.value < 1 or not 0 <= _PROCESS_ID.value < (
      _NUM_PROCESSES.value):
    raise app.UsageError(
        f'--coordinator needs --num_processes >= 1 and --process_id in [0, '
        f'num_processes); got {_NUM_PROCESSES.value} and {_PROCESS_ID.value}')
  if jax.config.jax_platforms == 'cpu' or os.environ.get(
      'JAX_PLATFORMS') == 'cpu':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                             num_processes=_NUM_PROCESSES.value,
                             process_id=_PROCESS_ID.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  if _DEBUG.value:
    logging.set_verbosity(logging.INFO)
  else:
    quiet_library_reports()
  from distill import host_devices  # pylint: disable=g-import-not-at-top
  from distill.run import execute  # pylint: disable=g-import-not-at-top
  try:
    workdir, config = _WORKDIR.value, _CONFIG.value
    # CPU devices before the backend starts (several on one process: data
    # parallelism over the cores; one per process of a multi-process run).
    host_devices.configure(config.get('cpu_devices', 0),
                           processes=_NUM_PROCESSES.value or 1,
                           config=config)
    if _MULTIHOST.value:
      initialize_distributed()
    if _INIT_FROM.value:
      config.init_from = _INIT_FROM.value
    if _GCSFUSE.value:
      workdir = local_path(workdir, '--workdir')
      if config.data.get('data_dir'):
        config.data.data_dir = local_path(config.data.data_dir,
                                          '--config.data.data_dir')
    else:
      for what, path in (('--workdir', workdir),
                         ('--config.data.data_dir', config.data.data_dir)):
        check_cloud_storage(path, what)
    result = execute(config, workdir)
  except BaseException as e:  # pylint: disable=broad-except
    fail(e)
  if result.get('preempted'):       # SIGTERM: 143, Ctrl-C: 130
    from distill import preemption  # pylint: disable=g-import-not-at-top
    sys.exit(preemption.exit_status())
  if jax.process_index() == 0:
    print('final: ' + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in result.items()}), flush=True)


quiet_library_reports = cli.quiet_library_reports
describe = cli.describe


def fail(error):
  """Ends the process for `error` (launch/cli.py: fail), the traceback with
  --debug."""
  cli.fail(error, _DEBUG.value)


def check_cloud_storage(path, what):
  """A gs:// path is read directly through etils.epath, which needs gcsfs."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from core.errors import EnvironmentFault  # pylint: disable=g-import-not-at-top
  if path.startswith('gs://') and importlib.util.find_spec('gcsfs') is None:
    raise EnvironmentFault(
        f'{what}={path}: reading Cloud Storage directly needs the gcsfs '
        "package (pip install -e '.[gcs]'; .[tpu] has it), or give --gcsfuse "
        'with the bucket mounted at /gcs/BUCKET')


def local_path(path, what):
  """gs://bucket/x -> /gcs/bucket/x where the bucket is mounted there with
  Cloud Storage FUSE (launch/tpu_bootstrap.sh mounts it on TPU workers);
  other paths unchanged."""
  from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if not path.startswith('gs://'):
    return path
  bucket = path[len('gs://'):].split('/')[0]
  mounted = os.path.join('/gcs', bucket)
  if not os.path.ismount(mounted):
    raise ConfigError(f'{what}={path}: bucket {bucket} is not mounted at '
                      f'{mounted}; mount it with gcsfuse (launch/tpu.py does '
                      'on TPU workers) or give a local path')
  return mounted + path[len('gs://') + len(bucket):]


def run():
  from distill import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.use_huge_pages()   # re-executes once, before any thread
  flags.mark_flags_as_required(['config', 'workdir'])
  try:
    remaining = flags.FLAGS(sys.argv)
    _CONFIG.value.keys()   # a file that failed to load raises here
  except Exception as e:  # pylint: disable=broad-except
    from distill.config_lib import explain_flag_error  # pylint: disable=g-import-not-at-top
    print(explain_flag_error(sys.argv, e), file=sys.stderr)
    sys.exit(2)
  app.run(main, flags_parser=lambda _: remaining)


if __name__ == '__main__':
  run()
