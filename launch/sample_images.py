"""Writes examples of a config's image dataset as PNG files (to try
launch.predict on images the model never saw, e.g. after the quickstart).

    python -m launch.sample_images --config=configs/digits_distill.py \
        --split=test --n=8 --out=/tmp/digits_png

Files are named `<split>_<index>_<class name>.png` (the index in the split,
the true class), one per example, uint8 as the dataset stores them; an
`--out` that holds files is refused in one line.
"""
import os
import sys

from absl import app
from absl import flags

from launch import cli

_CONFIG = flags.DEFINE_string('config', None, 'A config file (FILE[:ARG]).')
_SPLIT = flags.DEFINE_string('split', 'test', 'A part of the data: test, '
                             'validation, labeled, unlabeled.')
_N = flags.DEFINE_integer('n', 8, 'How many examples (the first ones).')
_OUT = flags.DEFINE_string('out', None, 'A new or empty folder.')
_DEBUG = flags.DEFINE_bool('debug', False,
                           'Show the traceback of a reported error.')


def write(config, split, n, out):
  """The paths of the first `n` examples of `split` written to `out`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from core.errors import ConfigError, check_choice  # pylint: disable=g-import-not-at-top
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  from distill.data import loading  # pylint: disable=g-import-not-at-top
  if n < 1:
    raise ConfigError(f'--n={n} must be >= 1')
  if os.path.isdir(out) and os.listdir(out):
    raise ConfigError(f'--out={out} holds files; give a new or empty folder '
                      '(nothing was written)')
  data = loading.load_data(config.data)
  check_choice('--split', split, data.parts)
  if datasets.spec(config.data).input_key != 'image':
    raise ConfigError(f'dataset {config.data.name!r} holds no images')
  part = data.parts[split]
  batch = part.get(np.arange(min(n, len(part))))
  names = datasets.class_names(config.data)
  os.makedirs(out, exist_ok=True)
  paths = []
  for i, (image, label) in enumerate(zip(batch['image'], batch['label'])):
    name = names[label] if names and label >= 0 else str(label)
    paths.append(os.path.join(out, f'{split}_{i}_{name}.png'))
    image = np.asarray(image)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        paths[-1])
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _DEBUG.value:
    cli.quiet_library_reports()
  try:
    from distill import config_lib  # pylint: disable=g-import-not-at-top
    paths = write(config_lib.load_file(_CONFIG.value), _SPLIT.value, _N.value,
                  _OUT.value)
  except BaseException as e:  # pylint: disable=broad-except
    cli.fail(e, _DEBUG.value)
  print(f'wrote {len(paths)} images to {_OUT.value}', file=sys.stderr)


def run():
  cli.run_main(main, ['config', 'out'])


if __name__ == '__main__':
  run()
