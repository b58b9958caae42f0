"""A workdir holds one run, and one process works in it at a time.

    with workdir.claim(path, config, inputs={'teacher': ...}):
      ...   # train, label, fit: the lock is held throughout

`claim` does, before any work and under the lock:
1. creates the directory (one line if it is a file, under a file or not
   writable);
2. takes `<workdir>/LOCK`, an `fcntl.flock` the kernel releases when the
   holder dies (`kill -9` included): a second live process is refused with one
   line naming the holder (host, pid, start time, command); a lock left by a
   dead process is taken over, and the run says so;
3. compares the run's identity with the one the workdir holds: the whole
   resolved config of every stage (`config.json`: teacher, fit, student,
   active rounds, init blocks) and the identity of every other run it reads
   (`inputs.json`: an external teacher's config and checkpoint step, an
   `init_from` run). A difference anywhere is refused with one line naming
   the first differing key (in sorted order); the first run writes both
   files before any work. Only the keys in OPERATIONAL (logging, progress,
   input workers) may change between a run and its resumption.
4. appends the command line to `command.txt` and writes `manifest.json`.

To start a new run from another run's checkpoint with changed settings
(divergence recovery, fine-tuning) use a new workdir and
`--init_from=OLD_WORKDIR[:STEP]` (`config.init_from`).

With several processes (multi-host), process 0 claims and the others follow
its verdict.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time

from core.errors import ConfigError, WorkdirBusy, from_os_error
from distill import files

LOCK = 'LOCK'
# Keys that say how a run is watched or fed, not what it computes: they may
# differ between a run and its resumption (matched as dotted-path suffixes,
# so `teacher.config.progress` is one too).
OPERATIONAL = ('progress', 'tensorboard', 'data.prefetch', 'data.workers',
               'data.device_prefetch', 'profile_steps',
               'compilation_cache_dir', 'cpu_devices')

_HELD = {}     # path -> [lock (open file or _RemoteLock), depth] held here


def _operational(key):
  return any(key == k or key.endswith('.' + k) for k in OPERATIONAL)


def differences(old, new, prefix=''):
  """Dotted keys (sorted) whose values differ between two JSON trees. A
  loss option that a later version added (`_added_option`) is not a
  difference: the run was made with what its default computes."""
  out = []
  for k in sorted(set(old) | set(new), key=str):
    a, b = old.get(k, _MISSING), new.get(k, _MISSING)
    key = f'{prefix}{k}'
    if isinstance(a, dict) and isinstance(b, dict):
      out += differences(a, b, key + '.')
    elif a != b and not _operational(key) and not _added_option(key, a, b):
      out.append((key, a, b))
  return out


def _added_option(key, old, new):
  """Whether `key` is a `method_kw` option absent from a stored config and
  at its default here: a loss that gained an option whose default is what
  the loss computed before (e.g. slam's `target='soft'`), so a run started
  before it resumes."""
  from core import defaults  # pylint: disable=g-import-not-at-top
  parts = key.split('.')
  if not isinstance(old, _Missing) or len(parts) < 2 or (
      parts[-2] != 'method_kw'):
    return False
  options = defaults.method_options()
  return parts[-1] in options and new == options[parts[-1]]


class _Missing:
  def __repr__(self):
    return '(absent)'


_MISSING = _Missing()


def _show(value):
  text = (json.dumps(value, sort_keys=True) if not isinstance(value, _Missing)
          else repr(value))
  return text if len(text) <= 60 else text[:57] + '...'


def _process_start(pid):
  """The start time of `pid` in clock ticks since boot (Linux), or None."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _holder():
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'pid_start': _process_start(os.getpid()),
          'since': datetime.datetime.now().isoformat(timespec='seconds'),
          'command': ' '.join([os.path.basename(sys.executable)]
                              + sys.argv)[:300]}


def _key(workdir):
  return (os.path.realpath(workdir) if files.is_local(workdir)
          else files.abspath(workdir))


def _who(text):
  try:
    h = json.loads(text)
    return f'pid {h["pid"]} on {h["host"]} since {h["since"]} ({h["command"]})'
  except (ValueError, KeyError, TypeError):
    return 'another process'


def _busy(workdir, text):
  return WorkdirBusy(f'workdir {workdir} is in use by {_who(text)}; wait for '
                     'it to finish or stop it, or use another --workdir')


def _lock(workdir):
  """Takes the workdir's lock (re-entrant in this process)."""
  key = _key(workdir)
  if key in _HELD:
    _HELD[key][1] += 1
    return
  path = os.path.join(workdir, LOCK)
  if not files.is_local(workdir):
    _HELD[key] = [_RemoteLock(path, workdir), 1]
    return
  try:
    f = open(path, 'a+')
  except OSError as e:
    raise from_os_error(e, f'locking the workdir {workdir}') from e
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    f.seek(0)
    text = f.read()
    f.close()
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise from_os_error(e, f'locking the workdir {workdir}') from e
    raise _busy(workdir, text) from None
  f.seek(0)
  previous = f.read()
  if previous.strip():
    print(f'Took over the lock of {workdir} from {_who(previous)}, no longer '
          'running.', flush=True)
  f.seek(0)
  f.truncate()
  f.write(json.dumps(_holder()))
  f.flush()
  _HELD[key] = [f, 1]


class _RemoteLock:
  """The lock of a workdir on an object store (no flock there): LOCK holds
  the holder and a heartbeat refreshed every HEARTBEAT seconds; a LOCK not
  refreshed for STALE seconds is a dead run's and is taken over. Two runs
  starting within the same second can both pass; this is best effort."""
  HEARTBEAT, STALE = 60.0, 300.0

  def __init__(self, path, workdir):
    self.path = path
    if files.exists(path):
      text = files.read_text(path)
      if text.strip():
        try:
          beat = json.loads(text).get('heartbeat', 0.0)
        except ValueError:
          beat = 0.0
        if time.time() - beat < self.STALE:
          raise _busy(workdir, text)
        print(f'Took over the lock of {workdir} from {_who(text)}, silent '
              f'for {time.time() - beat:.0f} s.', flush=True)
    self._stop = threading.Event()
    self._beat()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _beat(self):
    files.write_text(self.path, json.dumps({**_holder(),
                                            'heartbeat': time.time()}))

  def _run(self):
    while not self._stop.wait(self.HEARTBEAT):
      self._beat()

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
    files.write_text(self.path, '')


def _unlock(workdir):
  key = _key(workdir)
  entry = _HELD.get(key)
  if entry is None:
    return
  entry[1] -= 1
  if entry[1] > 0:
    return
  f = entry[0]
  del _HELD[key]
  if isinstance(f, _RemoteLock):
    f.close()
    return
  try:
    f.seek(0)
    f.truncate()         # an empty LOCK: released cleanly
    fcntl.flock(f, fcntl.LOCK_UN)
  finally:
    f.close()


def identity_files(workdir):
  return (os.path.join(workdir, 'config.json'),
          os.path.join(workdir, 'inputs.json'))


def identity_fix(workdir):
  """What to do about an unreadable identity file of `workdir`."""
  return (f'it holds the identity of the run in {workdir}: restore it from '
          'a copy of that workdir, or move the workdir aside and give a new '
          '--workdir')


def read_identity(path, workdir):
  """An identity file of `workdir` (a JSON object); an unreadable one is
  one line naming it and what to do (distill/files.py read_json)."""
  return files.read_json(path, kind=dict, fix=identity_fix(workdir))


def _check_identity(workdir, resolved, inputs):
  """Refuses a workdir holding another run; writes the identity if new."""
  config_path, inputs_path = identity_files(workdir)
  if files.exists(config_path):
    stored = {'config': current_layout(read_identity(config_path, workdir)),
              'inputs': (read_identity(inputs_path, workdir)
                         if files.exists(inputs_path) else inputs)}
    diff = differences(stored, {'config': resolved, 'inputs': inputs})
    if diff:
      key, old, new = diff[0]
      key = key.split('.', 1)[1] if key.startswith('config.') else key
      more = f' (and {len(diff) - 1} more)' if len(diff) > 1 else ''
      start = (f', or start one from its checkpoint with '
               f'--init_from={workdir}' if files.isdir(
                   os.path.join(workdir, 'checkpoints')) else '')
      what = 'inputs' if key.startswith('inputs.') else 'config'
      raise ConfigError(
          f'workdir {workdir} holds a run with other {what}: {key} is '
          f'{_show(old)} there, {_show(new)} here{more}; rerun with its '
          f'config and inputs or use a new --workdir{start}')
    if not files.exists(inputs_path):
      files.write_json(inputs_path, inputs)
    return
  files.write_json(config_path, resolved)
  files.write_json(inputs_path, inputs)


def _manifest(workdir):
  import jax  # pylint: disable=g-import-not-at-top
  files.append_text(os.path.join(workdir, 'command.txt'), ' '.join(
      [os.path.basename(sys.executable)] + sys.argv) + '\n')
  platform = jax.devices()[0].platform
  manifest = {'jax': jax.__version__, 'devices': jax.device_count(),
              'processes': jax.process_count(), 'platform': platform}
  if platform == 'cpu':     # which CPU kernels ran (the last digits differ)
    from models.kernels import onednn  # pylint: disable=g-import-not-at-top
    manifest['cpu_kernels'] = onednn.describe()
  files.write_json(os.path.join(workdir, 'manifest.json'), manifest)


def resolved(config):
  """A config as the JSON tree that identifies it."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _configs(tree):
  """The (stage) configs inside a resolved config: every dict holding a
  `method_kw` block (the config, its teacher's, ...)."""
  if isinstance(tree, dict):
    if isinstance(tree.get('method_kw'), dict):
      yield tree
    for value in tree.values():
      yield from _configs(value)


def current_layout(tree):
  """A resolved config stored before the methods' fit options moved from
  the `distill` block to `method_kw` (core/defaults.py:
  MOVED_TO_METHOD_KW), in today's layout; a stored identity compares with
  today's through it."""
  from core import defaults  # pylint: disable=g-import-not-at-top
  tree = json.loads(json.dumps(tree))
  for config in _configs(tree):
    block = config.get('distill')
    for key in defaults.MOVED_TO_METHOD_KW:
      if isinstance(block, dict) and key in block:
        config['method_kw'][key] = block.pop(key)
  return tree


def legacy_layout(tree):
  """A resolved config in the layout before the methods' fit options moved
  to `method_kw`: back in the `distill` block where a config has one, and
  left out of a stage config without one (a student's or a teacher's, which
  had none) while at their defaults; the options added since
  (ADDED_TO_METHOD_KW) left out while at their defaults. What
  experiments/records.py hashes, so the cells recorded before keep their
  identity."""
  from core import defaults  # pylint: disable=g-import-not-at-top
  tree = json.loads(json.dumps(tree))
  options = defaults.method_options()
  for config in _configs(tree):
    block, kw = config.get('distill'), config['method_kw']
    for key in defaults.MOVED_TO_METHOD_KW:
      if key not in kw:
        continue
      if isinstance(block, dict):
        block[key] = kw.pop(key)
      elif kw[key] == options[key]:
        del kw[key]
    for key in defaults.ADDED_TO_METHOD_KW:
      if key in kw and kw[key] == options[key]:
        del kw[key]
    # distill.cache_dtype (offline LMs) is left out at its default.
    if isinstance(block, dict) and block.get('cache_dtype') == 'float32':
      del block['cache_dtype']
  return tree


def _verdict(error):
  """Every process learns whether process 0's claim failed."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    if error is not None:
      raise error
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  failed = multihost_utils.broadcast_one_to_all(
      np.int32(error is not None))
  if error is not None:
    raise error
  if int(failed):
    raise ConfigError('process 0 refused the workdir (its error line says '
                      'why)')


@contextlib.contextmanager
def claim(workdir, config, inputs=None):
  """Holds `workdir` for the run of `config` (see the module docstring)."""
  inputs = inputs or {}
  main = files.is_main()
  error = None
  if main:
    try:
      files.makedirs(workdir)
      _lock(workdir)
      try:
        _check_identity(workdir, resolved(config), inputs)
        _manifest(workdir)
      except BaseException:
        _unlock(workdir)
        raise
    except (ConfigError, OSError) as e:
      error = e if isinstance(e, ConfigError) else from_os_error(e)
    except Exception as e:  # pylint: disable=broad-except
      error = e
  _verdict(error)
  try:
    yield
  finally:
    if main:
      _unlock(workdir)


def holds(workdir):
  """Whether this process holds `workdir`'s lock."""
  return _key(workdir) in _HELD
