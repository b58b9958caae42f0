"""Cloud TPU VM launcher: create or reuse a slice, ship one commit of this
repository to every worker, install it, run a config on all workers at once,
and, on preemptible capacity, recreate the slice and resume until the run is
done (the run itself resumes from its newest checkpoint in the workdir).

    python -m launch.tpu --name=kd-v4 --zone=us-central2-b --project=my-proj \
        --accelerator=v4-32 --capacity=spot \
        --config=configs/imagenet_distill.py:method=slam \
        --workdir=gs://my-bucket/kd/in_slam --data_dir=gs://my-bucket/tfds \
        -- --config.batch_size=2048
    python -m launch.tpu ... --dry_run      # prints every command, runs none

--workdir and --data_dir are gs:// paths the run reads and writes directly
(orbax checkpoints through tensorstore, TFDS and the run's own files through
etils.epath): checkpoints, metrics and the TFDS data dir live in Cloud
Storage and survive the slice. With --gcsfuse the buckets are mounted with
Cloud Storage FUSE at /gcs/<bucket> on every worker instead
(launch/tpu_bootstrap.sh) and the run sees them there. Arguments after `--`
go to launch/main.py unchanged.

Each attempt: describe the slice (create it if missing, delete and recreate
it if preempted), copy `git archive <ref>` to every worker, bootstrap (venv,
`pip install .[tpu]`, gcsfuse mounts with --gcsfuse; idempotent), then
`launch.main --multihost` on every worker through
`gcloud compute tpus tpu-vm ssh --worker=all`. A run that fails while the
slice is still READY is a bug, not a preemption: the loop stops there (exit
status of the run) unless --retry_errors.
"""
from absl import app
from absl import flags

from launch.cloud_tpu import CAPACITY, Job, check_job, launch, resolve_commit

_NAME = flags.DEFINE_string('name', None, 'TPU VM (slice) name.')
_ZONE = flags.DEFINE_string('zone', None, 'Zone, e.g. us-central2-b.')
_PROJECT = flags.DEFINE_string('project', None, 'Google Cloud project.')
_ACCELERATOR = flags.DEFINE_string('accelerator', 'v4-8',
                                   'Accelerator type, e.g. v4-32, v5litepod-16.')
_VERSION = flags.DEFINE_string('version', 'tpu-ubuntu2204-base',
                               'TPU VM software version (runtime image).')
_CAPACITY = flags.DEFINE_enum('capacity', 'on-demand', list(CAPACITY),
                              'on-demand | spot | preemptible | reserved.')
_CONFIG = flags.DEFINE_string('config', None,
                              'Config spec FILE[:ARG] (relative to the repo).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'gs://bucket/path of the run.')
_DATA_DIR = flags.DEFINE_string('data_dir', '',
                                'gs://bucket/path of the TFDS data dir.')
_REF = flags.DEFINE_string('ref', 'HEAD', 'Git commit to ship.')
_MAX_ATTEMPTS = flags.DEFINE_integer('max_attempts', 20,
                                     'Attempts before giving up.')
_RETRY_ERRORS = flags.DEFINE_bool(
    'retry_errors', False, 'Retry also when the run fails on a READY slice.')
_BACKOFF = flags.DEFINE_integer('backoff_s', 60,
                                'Seconds to wait between attempts.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False,
                             'Print the commands; run none.')
_GCSFUSE = flags.DEFINE_bool(
    'gcsfuse', False, 'Mount the buckets with Cloud Storage FUSE and give the '
    'run the mount\'s paths, instead of gs:// paths read directly.')


def main(argv):
  job = Job(name=_NAME.value, zone=_ZONE.value, project=_PROJECT.value,
            accelerator=_ACCELERATOR.value, version=_VERSION.value,
            capacity=_CAPACITY.value, config=_CONFIG.value,
            workdir=_WORKDIR.value, data_dir=_DATA_DIR.value,
            commit=resolve_commit(_REF.value), extra=tuple(argv[1:]),
            gcsfuse=_GCSFUSE.value)
  check_job(job)
  if _DRY_RUN.value:
    ok = lambda cmd: (0, '')  # noqa: E731  (describe: the slice is missing)
    return launch(job, shell=ok, live=ok, max_attempts=1)
  return launch(job, max_attempts=_MAX_ATTEMPTS.value,
                retry_errors=_RETRY_ERRORS.value, backoff_s=_BACKOFF.value)


if __name__ == '__main__':
  app.run(main)
