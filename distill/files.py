"""A run's own files, on a local disk or Cloud Storage (`gs://`): one writer,
atomic, one module for every access.

    files.write_json(os.path.join(workdir, 'summary.json'), summary)

Every file the pipeline reads or writes in a workdir (config, summary,
rounds, ledger, caches, final metrics, metrics lines, locks) goes through
here, so a `gs://` workdir is read and written directly (`etils.epath`; on
TPU VMs with `pip install .[tpu]`, which brings `gcsfs`), as orbax does with
the checkpoints:
- only the main process writes (`jax.process_index() == 0`), so a multi-host
  run never writes a file twice;
- a local file is written to a unique temporary name and renamed over the
  target, so a crash (kill -9, full disk) leaves the old file or the new one,
  never a torn one, and two writers never share a temporary file;
- a `gs://` object is written whole (object stores replace whole objects
  atomically); appending rewrites the object.
"""
import io
import json
import os
import shutil
import uuid

import numpy as np
from etils import epath

from core.errors import from_os_error, unreadable


def is_main():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def is_local(path):
  return '://' not in str(path)


def _p(path):
  return epath.Path(path)


def abspath(path):
  """An absolute local path, or the URL as it is."""
  return os.path.abspath(path) if is_local(path) else str(path).rstrip('/')


def exists(path):
  return os.path.exists(path) if is_local(path) else _p(path).exists()


def isdir(path):
  return os.path.isdir(path) if is_local(path) else _p(path).is_dir()


def isfile(path):
  return os.path.isfile(path) if is_local(path) else (
      _p(path).exists() and not _p(path).is_dir())


def listdir(path):
  """Names in a directory ([] if it does not exist)."""
  if not isdir(path):
    return []
  return (os.listdir(path) if is_local(path)
          else [p.name for p in _p(path).iterdir()])


def makedirs(path):
  """Creates `path` and its parents; a one-line error when it cannot."""
  if not is_local(path):
    _p(path).mkdir(parents=True, exist_ok=True)
    return
  if os.path.exists(path) and not os.path.isdir(path):
    from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'{path} is a file, not a directory; give a directory '
                      'path')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise from_os_error(e) from e


def remove(path):
  if is_local(path):
    os.remove(path)
  else:
    _p(path).unlink()


def rmtree(path):
  if is_local(path):
    shutil.rmtree(path, ignore_errors=True)
  elif _p(path).exists():
    _p(path).rmtree()


def rename(src, dst):
  """Moves a file or folder (a copy and a delete on an object store)."""
  if is_local(src):
    os.replace(src, dst)
  else:
    _p(src).rename(dst)


def copytree(src, dst, ignore=()):
  """Copies folder `src` to `dst`, leaving out the names in `ignore`."""
  if is_local(src) and is_local(dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*ignore))
    return
  for base, dirs, names in _p(src).walk():
    rel = os.path.relpath(str(base), str(src))
    target = _p(dst) / rel if rel != '.' else _p(dst)
    target.mkdir(parents=True, exist_ok=True)
    dirs[:] = [d for d in dirs if d not in ignore]
    for name in names:
      if name not in ignore:
        (_p(base) / name).copy(target / name)


def write_bytes(path, data, everywhere=False):
  """Writes `data` to `path` atomically (main process only unless
  `everywhere`)."""
  if not (everywhere or is_main()):
    return
  path = str(path)
  if not is_local(path):
    _p(path).write_bytes(data)
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


def read_bytes(path):
  if is_local(path):
    with open(path, 'rb') as f:
      return f.read()
  return _p(path).read_bytes()


def write_text(path, text, everywhere=False):
  write_bytes(path, text.encode('utf-8'), everywhere)


def read_text(path):
  return read_bytes(path).decode('utf-8')


def append_text(path, text):
  """Appends to a text file (main process only): a local append; on an
  object store the object is rewritten with the text added."""
  if not is_main():
    return
  if is_local(path):
    try:
      with open(path, 'a') as f:
        f.write(text)
    except OSError as e:
      raise from_os_error(e, f'writing {path}') from e
    return
  old = read_text(path) if exists(path) else ''
  write_text(path, old + text)


def write_json(path, obj, everywhere=False):
  write_text(path, json.dumps(obj, indent=1, sort_keys=True) + '\n',
             everywhere)


# What to do about an unreadable file, unless the caller says better.
RESTORE = 'restore it from a copy, or move it aside'


def read_json(path, kind=None, fix=RESTORE):
  """The JSON value in `path` (of type `kind` when given). A file that
  exists but does not read back as such (garbled, truncated, unreadable) is
  one UnreadableFile line naming it and `fix`, what to do; a missing file
  is FileNotFoundError as before."""
  try:
    value = json.loads(read_text(path))
  except FileNotFoundError:
    raise
  except (OSError, ValueError) as e:     # UnicodeDecodeError is a ValueError
    raise unreadable(path, e, fix) from e
  if kind is not None and not isinstance(value, kind):
    raise unreadable(path, f'a JSON {type(value).__name__}, not a '
                     f'{_JSON_NAMES.get(kind, kind.__name__)}', fix)
  return value


_JSON_NAMES = {dict: 'JSON object', list: 'JSON array'}


def write_npz(path, everywhere=False, **arrays):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(path, buf.getvalue(), everywhere)


def read_npz(path):
  """{name: array} of an .npz file, read whole."""
  with np.load(io.BytesIO(read_bytes(path))) as z:
    return {k: z[k] for k in z.files}


def write_npy(path, array, everywhere=False):
  buf = io.BytesIO()
  np.save(buf, array)
  write_bytes(path, buf.getvalue(), everywhere)


def read_npy(path):
  return np.load(io.BytesIO(read_bytes(path)))


def set_aside(path):
  """Moves an unreadable file or folder to `<parent>_unreadable/` (kept for
  inspection, never deleted); returns the new path."""
  parent, name = os.path.split(abspath(path))
  dst_root = parent + '_unreadable'
  makedirs(dst_root)
  dst, n = os.path.join(dst_root, name), 1
  while exists(dst):
    dst, n = os.path.join(dst_root, f'{name}.{n}'), n + 1
  rename(path, dst)
  return dst
