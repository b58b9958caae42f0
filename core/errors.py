"""Exceptions the entry point turns into one line on stderr, and their exit
status: bad user input (2), a fault of the machine or of files (1), a
diverged run (3).

    error: unknown optimizer.name 'lion'; valid choices: adam, adamw, sgd

This module imports nothing heavy: models, configs and the pipeline all
raise these.
"""
import errno
import os
import shutil


class ConfigError(ValueError):
  """Bad user input: a config value, a flag, a path. Its message is one line
  naming the bad value and the valid choices. Exit status 2."""
  exit_code = 2


class WorkdirBusy(ConfigError):
  """Another live process holds the workdir's lock. Exit status 2."""


class EnvironmentFault(RuntimeError):
  """The machine or a file failed: a full disk, a read-only or unreadable
  path, a corrupt archive. One line naming the path and what to do. Exit
  status 1."""
  exit_code = 1


class UnreadableFile(EnvironmentFault):
  """A file a run reads (its identity, a table's records) exists but does
  not read back: garbled, truncated, not the JSON it should hold. One line
  naming the file and what to do; nothing on disk is changed. Exit status
  1."""


def unreadable(path, reason, fix):
  """The UnreadableFile of `path`: `reason` an exception or a short text,
  `fix` what to do."""
  if isinstance(reason, BaseException):
    reason = f'{type(reason).__name__}: {one_line(reason, 120)}'
  return UnreadableFile(f'{path} is unreadable ({reason}); {fix}')


class Diverged(FloatingPointError):
  """The training loss became NaN or infinite; names the step. The run
  stops without saving, so the last good checkpoint stays the newest.
  Exit status 3."""
  exit_code = 3


def check_choice(what, value, choices):
  """Raises ConfigError unless `value` is one of `choices`."""
  choices = sorted(choices)
  if value not in choices:
    raise ConfigError(f'unknown {what} {value!r}; valid choices: '
                      f'{", ".join(map(str, choices))}')
  return value


def one_line(text, limit=300):
  """The first line of `text`, at most `limit` characters."""
  first = str(text).strip().splitlines()[0] if str(text).strip() else ''
  return first if len(first) <= limit else first[:limit - 3] + '...'


def free_space(path):
  """Free bytes on the filesystem holding `path` (its nearest existing
  parent), or None."""
  path = os.path.abspath(path)
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      return None
    path = parent
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def _size(n):
  for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
    if n < 1024 or unit == 'TiB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024


def no_space(path):
  """The one-line message of a full disk at `path`."""
  free = free_space(path)
  return (f'no space left on the device writing {path} '
          f'({_size(free) if free is not None else "unknown"} free); free '
          'space or give a --workdir on a larger disk, then rerun the same '
          'command to resume')


def errno_of(exc):
  """The errno of an OSError anywhere in `exc`'s chain, or found in its
  text (tensorstore reports `[os_error_code='28']`), else None."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno:
      return exc.errno
    text = str(exc)
    if 'No space left on device' in text or "os_error_code='28'" in text:
      return errno.ENOSPC
    if 'Read-only file system' in text:
      return errno.EROFS
    exc = exc.__cause__ or exc.__context__
  return None


def from_os_error(exc, what=''):
  """An EnvironmentFault (or ConfigError for a path the user named wrongly)
  with one line for an OSError; `what` says what was being done."""
  code = errno_of(exc)
  path = getattr(exc, 'filename', None) or ''
  where = f' {path}' if path else ''
  prefix = f'{what}: ' if what else ''
  if code == errno.ENOSPC:
    return EnvironmentFault(prefix + no_space(path or os.getcwd()))
  if code in (errno.EROFS, errno.EACCES, errno.EPERM):
    return EnvironmentFault(f'{prefix}cannot write{where}: '
                            f'{os.strerror(code).lower()}; give a writable '
                            'path')
  if code in (errno.ENOTDIR, errno.EEXIST):
    return ConfigError(f'{prefix}cannot create{where}: part of that path is '
                       'a file, not a directory; give a directory path')
  if code == errno.ENOENT:
    return ConfigError(f'{prefix}no such file or directory{where}')
  return EnvironmentFault(f'{prefix}{one_line(exc)}')
