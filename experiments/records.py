"""Finished cells kept in the repository, so a table that takes days of CPU
spans sessions whose machines keep nothing but the checkout.

    python -m experiments.run --table=cifar10_regime              # trains, records
    python -m experiments.run --table=cifar10_regime --report_only  # records what a workdir finished
    git add experiments/results/cells/cifar10_regime.json           # then commit it

`experiments/results/cells/<cells>.json` maps a cell's key (the table's
own, e.g. '10000/0/vanilla') to its record:

  result    the numbers the table reports (what the kind's cell returns);
  identity  a hash of the run's resolved config (what the workdir's
            `config.json` holds, distill/workdir.py), the runs' root written
            as '<root>' and the operational keys (progress, workers, ...)
            left out, so it does not depend on where the runs lived, in the
            layout it had when the first cells were recorded (the methods'
            fit options in the `distill` block, the options added since
            left out at their defaults: workdir.legacy_layout);
  commit    the code's commit (`-dirty` when tracked files differed), the
            date, and the CPU kernels the run's manifest names.

A kind looks a cell up before training it: a record whose identity is the
config it would train is the cell's result, and nothing runs for it. A
record made with another config is not used (the cell trains again and
its record is replaced; the harness says so). A cell finished in a workdir
is recorded when the harness reads it, trained now or before. Students
that need a teacher whose run is not in this session's workdir retrain it
from its seed; each student's record keeps the accuracy of the teacher it
was distilled from.
"""
import datetime
import fcntl
import hashlib
import json
import os
import subprocess

from core import errors
from distill import files
from distill import workdir as workdir_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strip(tree, prefix=''):
  """The tree without its operational keys (workdir.OPERATIONAL)."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if workdir_lib._operational(key):  # pylint: disable=protected-access
      continue
    out[k] = _strip(v, key + '.') if isinstance(v, dict) else v
  return out


def identity(config, root):
  """The hash that names what `config` computes, wherever its runs live."""
  return _hash(workdir_lib.resolved(config), root)


def workdir_identity(workdir, root):
  """identity() of the run `workdir` holds (its config.json), or None when
  it holds none yet; an unreadable config.json is one line naming it."""
  path = workdir_lib.identity_files(workdir)[0]
  if not os.path.exists(path):
    return None
  return _hash(workdir_lib.current_layout(
      workdir_lib.read_identity(path, workdir)), root)


def holds_run(workdir, config, root):
  """Whether `workdir` holds the run of `config`, or none yet: a finished
  run of another config there (another table's, sharing the folder) is
  not this cell's, to be neither read nor recorded as it."""
  found = workdir_identity(workdir, root)
  return found is None or found == identity(config, root)


def _hash(tree, root):
  text = json.dumps(_strip(workdir_lib.legacy_layout(tree)), sort_keys=True)
  for form in sorted({os.path.abspath(root), os.path.normpath(root)},
                     key=len, reverse=True):
    text = text.replace(form, '<root>')
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def commit():
  """The checkout's commit, `-dirty` if tracked code differs from it;
  'unknown' outside a git checkout. Read once per process, when this module
  is imported: the code a long table runs is the code it started with,
  whatever is committed while it runs."""
  return _COMMIT


def _read_commit():
  try:
    head = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'],
                          cwd=_REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(
        ['git', 'status', '--porcelain', '--untracked-files=no', '--',
         '*.py', '*.cfg', '*.cc', '*.sh'], cwd=_REPO, capture_output=True,
        text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
  return head + ('-dirty' if dirty else '')


_COMMIT = _read_commit()


def _kernels(workdir):
  path = os.path.join(workdir, 'manifest.json') if workdir else ''
  if path and os.path.exists(path):
    return files.read_json(path, kind=dict, fix=(
        f'it describes the machine of the run in {workdir}: restore it from '
        'a copy of that workdir, or rerun that run in a new --workdir'
    )).get('cpu_kernels')
  return None


def teacher_run(metrics):
  """What tells one teacher run from another: a hash of its final metrics
  (test and validation losses to the last digit), so students distilled
  from different runs of the same teacher config are never paired."""
  kept = {k: v for k, v in metrics.items() if 'seconds' not in k}
  return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()
                        ).hexdigest()[:12]


def teacher_run_of(workdir):
  """`teacher_run` of the teacher run in `workdir`, or None unfinished."""
  path = os.path.join(workdir, 'final_metrics.json')
  if not os.path.exists(path):
    return None
  return teacher_run(files.read_json(path, kind=dict, fix=(
      f'it holds the final metrics of the run in {workdir}: restore it from '
      'a copy of that workdir, or delete it and rerun that run to write it '
      'again')))


def most_common(values):
  """The most frequent of the values that are not None (None if none)."""
  values = [v for v in values if v is not None]
  return max(sorted(set(values)), key=values.count) if values else None


# What every record holds (what `get` and `put` read).
_RECORD_KEYS = ('result', 'identity', 'commit')


class Records:
  """The records of one folder of cells (a table's `cells`), kept in
  `<folder>/<name>.json` (the harness: `<results>/cells`)."""

  def __init__(self, name, root, folder):
    self.path = os.path.join(folder, f'{name}.json')
    self.root = root
    self.cells = self._read() if os.path.exists(self.path) else {}

  def _read(self):
    """The records file, checked: a JSON object of records, each an object
    with a result and an identity; anything else is one line naming the
    file (nothing is trained or written over it)."""
    inside = not os.path.relpath(self.path, _REPO).startswith('..')
    fix = ('it holds the finished cells of a table: restore it '
           + (f'(git checkout -- {os.path.relpath(self.path, _REPO)}, or the '
              'version of a merge)' if inside else 'from a copy')
           + ', or move it aside to train every cell again')
    cells = files.read_json(self.path, kind=dict, fix=fix)
    for key, record in cells.items():
      missing = [k for k in _RECORD_KEYS
                 if not isinstance(record, dict) or k not in record]
      if missing:
        raise errors.unreadable(self.path, f'record {key!r} has no '
                                f'{missing[0]!r}', fix)
    return cells

  def get(self, key, config):
    """The recorded result of `key` if it was made with `config`, else
    None (saying so when a record of another config is set aside)."""
    record = self.cells.get(key)
    if record is None:
      return None
    if record['identity'] != identity(config, self.root):
      print(f'-- {key}: its record ({record["commit"]}) was made with '
            'another config; training it again', flush=True)
      return None
    return record['result']

  def put(self, key, config, result, workdir=None, **extra):
    """Records `result` for `key` (an identical record is kept, with
    `extra` fields added); writes the file atomically."""
    ident = identity(config, self.root)
    if workdir is not None and not holds_run(workdir, config, self.root):
      print(f'-- {key}: {workdir} holds a run of another config; not '
            'recorded as this cell', flush=True)
      return
    # Compared as it is stored: a result read back from a run holds tuples
    # where its record holds lists, and is the same run all the same.
    result = json.loads(json.dumps(result))
    old = self.cells.get(key)
    if old and old['result'] == result and (
        old['identity'] == ident or (workdir is not None and
                                     workdir_identity(workdir, self.root)
                                     == ident)):
      # The same run read again; or its workdir holds this config's run and
      # the record was hashed before the identity's keys changed
      # (workdir.legacy_layout): it keeps its commit and date.
      record = dict(old, identity=ident, **extra)
      if record == old:
        return
    else:
      record = dict(result=result, identity=ident, commit=commit(),
                    finished=datetime.date.today().isoformat(),
                    kernels=_kernels(workdir))
      record.update(extra)   # e.g. seconds, a migrated record's commit
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    # Two tables sharing cells may run at once: merge with what the other
    # wrote since, under a lock, so neither drops the other's records.
    with open(self.path + '.lock', 'w') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if os.path.exists(self.path):
        self.cells.update({k: v for k, v in self._read().items()
                           if k != key})
      self.cells[key] = record
      files.write_text(self.path, json.dumps(self.cells, indent=1,
                                             sort_keys=True) + '\n')
