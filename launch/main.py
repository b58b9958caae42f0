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
  logging.set_verbosity(logging.WARNING)
  tfds.disable_progress_bar()
  if _MULTIHOST.value:
    initialize_distributed()
  from distill.errors import ConfigError, Diverged  # pylint: disable=g-import-not-at-top
  from distill.run import execute  # pylint: disable=g-import-not-at-top
  try:
    workdir = local_path(_WORKDIR.value, '--workdir')
    config = _CONFIG.value
    if config.data.get('data_dir'):
      config.data.data_dir = local_path(config.data.data_dir,
                                        '--config.data.data_dir')
    result = execute(config, workdir)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except Diverged as e:
    print(f'diverged: {e}', file=sys.stderr)
    sys.exit(3)
  if result.get('preempted'):
    sys.exit(143)
  if jax.process_index() == 0:
    print('final: ' + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in result.items()}), flush=True)


def local_path(path, what):
  """gs://bucket/x -> /gcs/bucket/x where the bucket is mounted there with
  Cloud Storage FUSE (launch/tpu_bootstrap.sh mounts it on TPU workers);
  other paths unchanged."""
  from distill.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if not path.startswith('gs://'):
    return path
  bucket = path[len('gs://'):].split('/')[0]
  mounted = os.path.join('/gcs', bucket)
  if not os.path.ismount(mounted):
    raise ConfigError(f'{what}={path}: bucket {bucket} is not mounted at '
                      f'{mounted}; mount it with gcsfuse (launch/tpu.py does '
                      'on TPU workers) or give a local path')
  return mounted + path[len('gs://') + len(bucket):]


def explain_flag_error(argv, error):
  """One line for a bad --config / --config.KEY flag, with valid choices."""
  cause = error
  while cause.__cause__ is not None or cause.__context__ is not None:
    cause = cause.__cause__ or cause.__context__
  spec = next((a.split('=', 1)[1] for a in argv
               if a.startswith('--config=')), None)
  if spec is None:
    return f'error: {cause}'
  try:
    from distill import config_lib  # pylint: disable=g-import-not-at-top
    config = config_lib.load_file(spec)
  except Exception as e:  # pylint: disable=broad-except
    return f'error: --config={spec}: {e}'
  for a in argv:
    if not a.startswith('--config.'):
      continue
    path = a[len('--config.'):].split('=', 1)[0]
    node, done = config, []
    for key in path.split('.'):
      if not hasattr(node, 'keys') or key not in node:
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else ''
        where = 'config.' + '.'.join(done) if done else 'config'
        return (f'error: unknown config key {path!r}; valid choices in '
                f'{where}: {valid}')
      node, done = node[key], done + [key]
  return f'error: {cause}'


def run():
  flags.mark_flags_as_required(['config', 'workdir'])
  try:
    remaining = flags.FLAGS(sys.argv)
  except Exception as e:  # pylint: disable=broad-except
    print(explain_flag_error(sys.argv, e), file=sys.stderr)
    sys.exit(2)
  app.run(main, flags_parser=lambda _: remaining)


if __name__ == '__main__':
  run()
