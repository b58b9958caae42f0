"""Host memory of CPU runs: glibc's malloc on transparent huge pages.

XLA:CPU allocates an execution's buffers anew each step; blocks larger than
glibc's mmap threshold (at most 32 MiB) are fresh mappings, so every step
first touches its activations one 4 KiB page at a time. Measured on the
CIFAR ResNet-20 step at batch 128, one device, 2 cores
(`python -m experiments.bench --sections=malloc`): 74,700 minor page
faults and 0.21 s of kernel time per step (against 0.45 s of user time).
glibc's tunable `glibc.malloc.hugetlb=1` (glibc >= 2.35) makes malloc
advise transparent huge pages for its mappings: 615 faults and 0.056 s,
365 -> 283 ms per step (README, Benchmarks).

GLIBC_TUNABLES is read when a process starts, so the entry points
(`launch.main`, `experiments.run` and the experiment commands, the
benchmark) call `use_huge_pages()` first: it re-executes the same command
once with the tunable added, where it applies (Linux with glibc, the kernel
offering transparent huge pages) and is not there yet. DISTILL_HUGE_PAGES=0
turns it off. Results do not change: only where memory comes from.
"""
import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
ENV = 'DISTILL_HUGE_PAGES'
_THP = '/sys/kernel/mm/transparent_hugepage/enabled'


def _glibc_version():
  name, version = platform.libc_ver()
  if name != 'glibc' or not version:
    return ()
  try:
    return tuple(int(v) for v in version.split('.')[:2])
  except ValueError:
    return ()


def _kernel_offers_huge_pages(path=_THP):
  try:
    with open(path) as f:
      return '[never]' not in f.read()
  except OSError:
    return False


def applies(environ=None):
  """Whether this process should be re-executed with the tunable."""
  environ = os.environ if environ is None else environ
  return (sys.platform.startswith('linux')
          and environ.get(ENV, '1') != '0'
          and TUNABLE not in environ.get('GLIBC_TUNABLES', '')
          and _glibc_version() >= (2, 35)
          and _kernel_offers_huge_pages())


def environment(environ=None):
  """`environ` with the tunable added to GLIBC_TUNABLES (others kept)."""
  env = dict(os.environ if environ is None else environ)
  tunables = [t for t in env.get('GLIBC_TUNABLES', '').split(':') if t]
  env['GLIBC_TUNABLES'] = ':'.join(tunables + [TUNABLE])
  env[ENV] = env.get(ENV, '1')
  return env


def use_huge_pages():
  """Re-executes this command with huge-page malloc where it `applies`
  (not inside pytest or an interactive console); returns (doing nothing)
  otherwise. Call before anything starts threads."""
  if not applies() or 'pytest' in sys.modules or hasattr(sys, 'ps1'):
    return                 # never re-executes a test run or a console
  argv = getattr(sys, 'orig_argv', None) or [sys.executable] + sys.argv
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, [sys.executable] + list(argv[1:]),
              environment())
  except OSError:            # cannot re-execute: run on as it is
    return
