"""Exports a trained model's inference parameters (no optimizer state), to
be loaded back without its workdir (distill/export.py: load_exported).

    python -m launch.export --workdir=/tmp/distill/digits_slam \
        --out=/tmp/digits_slam_student [--which=student|teacher] \
        [--dtype=f32|bf16] [--format=params|hf|reference]

For a distillation workdir --which picks its student (the default) or its
teacher; a single run's workdir exports that run. --format=params:
safetensors shards + an index + export.json; hf: a Hugging Face LM folder;
reference: an ImageNet ResNet as torchvision's state dict + config.json
(docs/export.md).
"""
import json

from absl import app
from absl import flags

from launch import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a finished run.')
_OUT = flags.DEFINE_string('out', None, 'Folder to write (new or empty).')
_FORMAT = flags.DEFINE_string(
    'format', 'params', 'params (safetensors + export.json) | hf (a '
    'Hugging Face LM folder) | reference (torchvision ResNet state dict).')
_DTYPE = flags.DEFINE_string('dtype', 'f32', 'Parameter dtype: f32 | bf16.')
_WHICH = flags.DEFINE_string(
    'which', 'student', 'student | teacher, for a distillation workdir.')
_SHARD_GB = flags.DEFINE_float('max_shard_gb', 2.0,
                               'Largest safetensors file, in GiB.')
_DEBUG = flags.DEFINE_bool('debug', False,
                           'Show the traceback of a reported error.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _DEBUG.value:
    cli.quiet_library_reports()
  try:
    from distill import export  # pylint: disable=g-import-not-at-top
    export.check_format(_FORMAT.value)
    config = export.export(_WORKDIR.value, _OUT.value, which=_WHICH.value,
                           dtype=_DTYPE.value, fmt=_FORMAT.value,
                           max_shard_bytes=int(_SHARD_GB.value * 1024 ** 3))
  except BaseException as e:  # pylint: disable=broad-except
    cli.fail(e, _DEBUG.value)
  files = config['files']
  print('exported: ' + json.dumps({
      'out': _OUT.value, 'run': config['source']['run'],
      'step': config['source']['step'], 'param_dtype': config['param_dtype'],
      'tensors': files['tensors'], 'bytes': files['bytes'],
      'shards': len(files['shards'])}), flush=True)


def run():
  cli.run_main(main, ['workdir', 'out'])


if __name__ == '__main__':
  run()
