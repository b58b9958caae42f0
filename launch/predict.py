"""Labels image files with a trained model: top-k classes and probabilities
per file (distill/labeling.py).

    python -m launch.predict --model=/tmp/digits_slam_student \
        --input='photos/*.png' --output=labels.jsonl [--top_k=5] \
        [--batch_size=256]

--model is an export folder (launch/export.py) or a workdir (its student,
or --which=teacher). --input: a folder (image files, recursively), a glob or
a file. --output: .jsonl (or .csv); rerunning appends only the files it does
not hold yet; a file that does not decode is a row with "error".
"""
import json

from absl import app
from absl import flags

from launch import cli

_MODEL = flags.DEFINE_string('model', None,
                             'An export folder or a finished workdir.')
_INPUT = flags.DEFINE_string('input', None, 'Image folder, glob or file.')
_OUTPUT = flags.DEFINE_string('output', None, 'Rows file: .jsonl or .csv.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'Classes per file.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 256, 'Images per batch.')
_WHICH = flags.DEFINE_string(
    'which', 'student', 'student | teacher, for a distillation workdir.')
_DEBUG = flags.DEFINE_bool('debug', False,
                           'Show the traceback of a reported error.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _DEBUG.value:
    cli.quiet_library_reports()
  try:
    from distill import labeling  # pylint: disable=g-import-not-at-top
    counts = labeling.label(_MODEL.value, _INPUT.value, _OUTPUT.value,
                            top_k=_TOP_K.value, batch_size=_BATCH_SIZE.value,
                            which=_WHICH.value)
  except BaseException as e:  # pylint: disable=broad-except
    cli.fail(e, _DEBUG.value)
  print('labeled: ' + json.dumps({'output': _OUTPUT.value, **counts}),
        flush=True)


def run():
  cli.run_main(main, ['model', 'input', 'output'])


if __name__ == '__main__':
  run()
