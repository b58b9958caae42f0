"""Host memory of CPU runs: glibc's malloc keeps the step's memory mapped.

XLA:CPU allocates an execution's buffers anew each step; blocks larger than
glibc's mmap threshold (at most 32 MiB) are fresh mappings, so every step
first touches its activations again and the kernel zeroes them. Measured on
the CIFAR ResNet-20 step at batch 128, one device, 2 cores
(`python -m experiments.bench --sections=malloc`): 74,700 minor page
faults and 0.21 s of kernel time per step (against 0.45 s of user time).
`glibc.malloc.hugetlb=1` (glibc >= 2.35: transparent huge pages for its
mappings) brought that to 615 faults and 0.056 s (365 -> 283 ms), the
kernel still zeroing each step's fresh huge pages. Taking every block from
one heap that is never trimmed (`glibc.malloc.mmap_max=0`,
`glibc.malloc.trim_threshold` above any heap, `glibc.malloc.arena_max=1`:
XLA allocates from its own threads, whose arenas would shrink their heaps)
reuses the same memory each step: 0 faults and 0.013 s (docs/benchmarks.md
has the runs). A process then keeps its peak memory until it
exits, which a training run reaches anyway.

GLIBC_TUNABLES is read when a process starts, so the entry points
(`launch.main`, `experiments.run` and the experiment commands, the
benchmark) call `use_huge_pages()` first: it re-executes the same command
once with the tunables added, where they apply (Linux with glibc; huge
pages where glibc >= 2.35 and the kernel offers them) and are not there
yet; a tunable the environment already sets is left as it is.
DISTILL_HUGE_PAGES=0 turns it all off. Results do not change: only where
memory comes from.
"""
import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'                  # huge pages
KEEP_MAPPED = ('glibc.malloc.mmap_max=0',            # one heap, kept
               f'glibc.malloc.trim_threshold={2 ** 46}',
               'glibc.malloc.arena_max=1')
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


def tunables():
  """The GLIBC_TUNABLES entries for this machine's glibc and kernel."""
  version = _glibc_version()
  out = []
  if version >= (2, 35) and _kernel_offers_huge_pages():
    out.append(TUNABLE)
  if version >= (2, 26):                 # glibc's first tunables
    out += KEEP_MAPPED
  return out


def _set(environ):
  """GLIBC_TUNABLES's entries in `environ`, and the names they set."""
  entries = [t for t in environ.get('GLIBC_TUNABLES', '').split(':') if t]
  return entries, {t.split('=')[0] for t in entries}


def _missing(environ, wanted):
  _, present = _set(environ)
  return [t for t in wanted if t.split('=')[0] not in present]


def applies(environ=None):
  """Whether this process should be re-executed with the tunables."""
  environ = os.environ if environ is None else environ
  return (sys.platform.startswith('linux')
          and environ.get(ENV, '1') != '0'
          and bool(_missing(environ, tunables())))


def environment(environ=None, only=None):
  """`environ` with this machine's tunables (or those of `only`) added to
  GLIBC_TUNABLES where it does not set them already (others kept)."""
  env = dict(os.environ if environ is None else environ)
  entries, _ = _set(env)
  env['GLIBC_TUNABLES'] = ':'.join(entries + _missing(
      env, tunables() if only is None else only))
  env[ENV] = env.get(ENV, '1')
  return env


def use_huge_pages():
  """Re-executes this command with the malloc tunables where they `apply`
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
