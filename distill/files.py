"""Writing a run's own files: one writer, atomic, local paths or gs://.

    files.write_json(os.path.join(workdir, 'summary.json'), summary)

Every JSON, NPZ or text result the pipeline writes (config, summary,
rounds, ledger, caches, final metrics) goes through here:
- only the main process writes (`jax.process_index() == 0`), so a multi-host
  run never writes a file twice;
- a local file is written to a unique temporary name and renamed over the
  target, so a crash (kill -9, full disk) leaves the old file or the new one,
  never a torn one, and two writers never share a temporary file;
- a `gs://` path is written as one object (object stores replace whole
  objects atomically).
"""
import io
import json
import os
import uuid

import numpy as np
from etils import epath

from core.errors import from_os_error


def is_main():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def is_local(path):
  return '://' not in str(path)


def exists(path):
  return os.path.exists(path) if is_local(path) else epath.Path(path).exists()


def makedirs(path):
  """Creates `path` and its parents; a one-line error when it cannot."""
  if not is_local(path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)
    return
  if os.path.exists(path) and not os.path.isdir(path):
    from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'{path} is a file, not a directory; give a directory '
                      'path')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise from_os_error(e) from e


def write_bytes(path, data, everywhere=False):
  """Writes `data` to `path` atomically (main process only unless
  `everywhere`)."""
  if not (everywhere or is_main()):
    return
  path = str(path)
  if not is_local(path):
    epath.Path(path).write_bytes(data)
    return
  tmp = f'{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError as e:
    _remove_quietly(tmp)
    raise from_os_error(e, f'writing {path}') from e
  except BaseException:
    _remove_quietly(tmp)
    raise


def _remove_quietly(path):
  try:
    os.remove(path)
  except OSError:
    pass


def write_text(path, text, everywhere=False):
  write_bytes(path, text.encode('utf-8'), everywhere)


def write_json(path, obj, everywhere=False):
  write_text(path, json.dumps(obj, indent=1, sort_keys=True) + '\n',
             everywhere)


def read_json(path):
  if is_local(path):
    with open(path) as f:
      return json.load(f)
  return json.loads(epath.Path(path).read_text())


def write_npz(path, everywhere=False, **arrays):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(path, buf.getvalue(), everywhere)


def read_bytes(path):
  if is_local(path):
    with open(path, 'rb') as f:
      return f.read()
  return epath.Path(path).read_bytes()


def set_aside(path):
  """Moves an unreadable file or folder to `<parent>_unreadable/` (kept for
  inspection, never deleted); returns the new path."""
  parent, name = os.path.split(os.path.abspath(path))
  dst_root = parent + '_unreadable'
  os.makedirs(dst_root, exist_ok=True)
  dst, n = os.path.join(dst_root, name), 1
  while os.path.exists(dst):
    dst, n = os.path.join(dst_root, f'{name}.{n}'), n + 1
  os.replace(path, dst)
  return dst
