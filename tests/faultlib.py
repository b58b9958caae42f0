"""Shared fault helpers for the tests: run the launcher, snapshot what is on
disk, damage files, mount a small or read-only filesystem."""
import contextlib
import dataclasses
import hashlib
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO


@dataclasses.dataclass
class Result:
  code: int
  stdout: str
  stderr_lines: list
  seconds: float


def launch(args, timeout=600, env=None, module='launch.main'):
  """`python -m launch.main ARGS` (or another `module`) from the repository
  root."""
  start = time.time()
  proc = subprocess.run(
      [sys.executable, '-m', module, *args], cwd=REPO,
      capture_output=True, text=True, check=False, timeout=timeout,
      env=dict(os.environ, JAX_PLATFORMS='cpu', **(env or {})))
  return Result(proc.returncode, proc.stdout,
                proc.stderr.strip().splitlines(), time.time() - start)


def snapshot(root):
  """{relative path: sha256} of every file under `root` (empty if none)."""
  out = {}
  if not os.path.exists(root):
    return out
  for base, _, names in os.walk(root):
    for name in names:
      path = os.path.join(base, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


def paths(root, ignore=()):
  """Every path under `root` (folders too), relative, leaving out those
  under the folders `ignore`."""
  out = set()
  for base, dirs, names in os.walk(root):
    if any(base == i or base.startswith(i + os.sep) for i in ignore):
      continue
    out.update(os.path.relpath(os.path.join(base, n), root)
               for n in dirs + names)
  return out


def each_file(path, damage):
  """Applies `damage(file, size)` to every file under `path`."""
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, 'r+b') as f:
        damage(f, os.path.getsize(full))


def truncate(path):
  """Cuts every file under `path` (or the file itself) to half its size."""
  if os.path.isfile(path):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
    return
  each_file(path, lambda f, size: f.truncate(size // 2))


def garble(path):
  each_file(path, lambda f, size: f.write(b'\x00garbage' * max(1, size // 8)))


@contextlib.contextmanager
def tmpfs(path, size='1m', read_only=False):
  """A small (or read-only) filesystem at `path`; skips the test where this
  machine does not allow mounting (not root, no tmpfs)."""
  os.makedirs(path, exist_ok=True)
  options = f'size={size}' + (',ro' if read_only else '')
  proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs',
                         path], capture_output=True, text=True, check=False)
  if proc.returncode:
    pytest.skip(f'cannot mount a tmpfs here ({proc.stderr.strip()})')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', path], check=False)
