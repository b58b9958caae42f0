"""Labels image files with a trained model: top-k classes and probabilities
per file, one row each, in JSONL or CSV.

    labeling.label('/tmp/export', 'photos/', 'labels.jsonl', top_k=5)

The model is a workdir (its finished student, or the run itself) or an
export folder (distill/export.py). Images are decoded with PIL and
preprocessed as the model's export config says: converted to its channels,
resized to its input shape (bilinear), or for a variable-size image set
(`data.image_size`) the shorter side scaled to size / 0.875 and the center
cropped, as the evaluation pipeline does; then normalised on the device with
the run's own mean and std.

Resumable: the files the output already holds a row for are skipped and new
rows appended (one write per batch); a row cut short by a crash is dropped
first, with a message. A file that does not decode is a row with `error`,
not a crash, and is not retried.
"""
import csv
import glob
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from core.errors import ConfigError, from_os_error, one_line
from distill import export as export_lib

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff', '.ppm', '.pgm')
FORMATS = {'.jsonl': 'jsonl', '.json': 'jsonl', '.csv': 'csv'}


def input_files(spec):
  """(sorted absolute paths, how many files a folder holds that are not
  images by extension): a folder's image files (walked recursively), a
  glob's matching files, or one file."""
  others = 0
  if os.path.isdir(spec):
    found = [os.path.join(base, n) for base, _, names in os.walk(spec)
             for n in names]
    out = [p for p in found if p.lower().endswith(IMAGE_EXTENSIONS)]
    others = len(found) - len(out)
  elif os.path.isfile(spec):
    out = [spec]
  else:
    out = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
  if not out:
    raise ConfigError(f'--input={spec} names no image file (a folder of '
                      f'{"/".join(e[1:] for e in IMAGE_EXTENSIONS[:4])}... '
                      'files, a glob or a file)')
  return sorted(os.path.abspath(p) for p in out), others


def decode(path, pre):
  """The uint8 array (H, W, C) the model reads for the image file `path`."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from distill.data import pipeline  # pylint: disable=g-import-not-at-top
  h, w, c = pre['input_shape']
  mode = {1: 'L', 3: 'RGB', 4: 'RGBA'}[c]
  with Image.open(path) as image:
    image = image.convert(mode)
    if pre.get('resize') == 'center_crop':
      x = pipeline.center_crop(np.asarray(image), h,
                               pre.get('crop_fraction', 0.875))
    else:
      if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
      x = np.asarray(image)
  x = np.asarray(x, np.uint8)
  return x[..., None] if x.ndim == 2 else x


def _format(output):
  ext = os.path.splitext(output)[1].lower()
  if ext not in FORMATS:
    raise ConfigError(f'--output={output}: unknown extension {ext!r}; valid '
                      f'choices: {", ".join(sorted(FORMATS))}')
  return FORMATS[ext]


def _csv_header(top_k):
  return ['file', 'error'] + [f'{what}_{i}' for i in range(1, top_k + 1)
                              for what in ('class', 'name', 'prob')]


def done_files(output, fmt, top_k):
  """The files `output` already holds a row for. A last line cut short
  (a crash mid-write) is removed first, with a message."""
  if not os.path.exists(output):
    return set()
  try:
    with open(output, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise from_os_error(e, f'reading {output}') from e
  if data and not data.endswith(b'\n'):
    keep = data.rfind(b'\n') + 1
    print(f'{output}: its last row was cut short (an interrupted run); '
          'dropping it, its file is labeled again.', flush=True)
    with open(output, 'r+b') as f:
      f.truncate(keep)
    data = data[:keep]
  text = data.decode('utf-8', errors='replace')
  if fmt == 'csv':
    rows = list(csv.reader(io.StringIO(text)))
    if rows and rows[0] != _csv_header(top_k):
      raise ConfigError(f'--output={output} holds other columns than '
                        f'--top_k={top_k} writes ({len(rows[0])} columns); '
                        'give its --top_k or a new --output')
    return {r[0] for r in rows[1:] if r}
  out = set()
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      out.add(json.loads(line)['file'])
    except (ValueError, KeyError, TypeError):
      raise ConfigError(f'--output={output} line {n} is not a row this '
                        'command writes; give a new --output (nothing was '
                        'changed)') from None
  return out


def _rows_text(rows, fmt, top_k, new_file):
  if fmt == 'jsonl':
    return ''.join(json.dumps(r) + '\n' for r in rows)
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  if new_file:
    writer.writerow(_csv_header(top_k))
  for r in rows:
    cells = [r['file'], r.get('error', '')]
    for i in range(top_k):
      if 'error' in r or i >= len(r['classes']):
        cells += ['', '', '']
      else:
        cells += [r['classes'][i], r['names'][i], r['probs'][i]]
    writer.writerow(cells)
  return buf.getvalue()


def _append(output, text):
  try:
    with open(output, 'a', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise from_os_error(e, f'writing {output}') from e


def label(model_path, inputs, output, top_k=5, batch_size=256,
          which='student'):
  """Labels the image files `inputs` names with the model at `model_path`
  into `output` (module docstring); returns counts {'labeled', 'errors',
  'skipped' (rows the output held already), 'not_images' (a folder's files
  left out by their extension)}."""
  if top_k < 1 or batch_size < 1:
    raise ConfigError(f'--top_k and --batch_size must be at least 1, got '
                      f'{top_k} and {batch_size}')
  fmt = _format(output)
  paths, not_images = input_files(inputs)
  model, variables, config = export_lib.load_model(model_path, which)
  pre = config['preprocessing']
  if pre['task'] == 'lm' or pre.get('input') != 'image':
    raise ConfigError(f'--model={model_path} reads {pre.get("input", "token")}'
                      ' inputs, not images; predict labels images only')
  names = pre.get('class_names')
  top_k = min(top_k, config['num_classes'])
  new_file = not os.path.exists(output) or os.path.getsize(output) == 0
  done = done_files(output, fmt, top_k)
  todo = [p for p in paths if p not in done]
  parent = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(parent):
    raise ConfigError(f'--output={output}: no such folder {parent}')
  variables = jax.device_put(variables)

  @jax.jit
  def probabilities(v, x):
    logits = model.apply(v, export_lib.preprocess(x, config), train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  counts = {'labeled': 0, 'errors': 0, 'skipped': len(paths) - len(todo),
            'not_images': not_images}
  size = min(batch_size, len(todo)) or 1
  for start in range(0, len(todo), size):
    chunk = todo[start:start + size]
    rows, images, where = [], [], []
    for path in chunk:
      try:
        images.append(decode(path, pre))
        where.append(len(rows))
        rows.append({'file': path})
      except Exception as e:  # pylint: disable=broad-except
        rows.append({'file': path, 'error': f'{type(e).__name__}: '
                                            f'{one_line(e, 200)}'})
        counts['errors'] += 1
    if images:
      x = np.stack(images)
      pad = size - len(x)          # one compiled shape for every batch
      if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      probs = np.asarray(probabilities(variables, x))[:len(images)]
      order = np.argsort(-probs, axis=-1, kind='stable')[:, :top_k]
      for i, r in enumerate(where):
        classes = [int(c) for c in order[i]]
        rows[r].update(classes=classes,
                       names=[names[c] if names else str(c) for c in classes],
                       probs=[float(probs[i, c]) for c in classes])
      counts['labeled'] += len(images)
    _append(output, _rows_text(rows, fmt, top_k, new_file))
    new_file = False
  return counts
