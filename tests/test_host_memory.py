"""Entry points re-execute themselves once with glibc's malloc tunables
(distill/host_memory.py): when, with what environment, that it happens
once, and that under them repeated large allocations fault no pages."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from distill import host_memory


def test_the_environment_adds_the_tunables_and_keeps_others(monkeypatch):
  monkeypatch.setattr(host_memory, '_glibc_version', lambda: (2, 36))
  monkeypatch.setattr(host_memory, '_kernel_offers_huge_pages',
                      lambda path=None: True)
  env = host_memory.environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2',
                                 'HOME': '/x'})
  assert env['GLIBC_TUNABLES'].split(':') == [   # the user's arena_max wins
      'glibc.malloc.arena_max=2', host_memory.TUNABLE,
      *host_memory.KEEP_MAPPED[:2]]
  assert env['HOME'] == '/x'
  assert not host_memory.applies(env)          # never twice


@pytest.mark.parametrize('environ', [
    {host_memory.ENV: '0'},
    {'GLIBC_TUNABLES': ':'.join(host_memory.tunables())},
])
def test_it_does_not_apply_when_off_or_already_set(environ):
  assert not host_memory.applies(environ)


def test_what_applies_follows_glibc_and_the_kernel(monkeypatch):
  offers = lambda value: monkeypatch.setattr(
      host_memory, '_kernel_offers_huge_pages', lambda path=None: value)
  version = lambda v: monkeypatch.setattr(host_memory, '_glibc_version',
                                          lambda: v)
  version((2, 36))
  offers(True)
  assert host_memory.tunables() == [host_memory.TUNABLE,
                                    *host_memory.KEEP_MAPPED]
  offers(False)
  assert host_memory.tunables() == list(host_memory.KEEP_MAPPED)
  version((2, 31))
  offers(True)
  assert host_memory.tunables() == list(host_memory.KEEP_MAPPED)
  version(())                                   # not glibc
  assert host_memory.tunables() == []
  assert not host_memory.applies({})


def test_nothing_to_set_no_reexec(monkeypatch, tmp_path):
  never = tmp_path / 'enabled'
  never.write_text('always madvise [never]\n')
  assert not host_memory._kernel_offers_huge_pages(str(never))
  monkeypatch.setattr(host_memory.os, 'execve', lambda *a: pytest.fail(
      'must not re-execute'))
  monkeypatch.setattr(host_memory, '_glibc_version', lambda: ())
  monkeypatch.delitem(sys.modules, 'pytest')   # as outside a test run
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv(host_memory.ENV, raising=False)
  host_memory.use_huge_pages()
  monkeypatch.setattr(host_memory, '_glibc_version', lambda: (2, 36))
  with pytest.raises(pytest.fail.Exception, match='must not re-execute'):
    host_memory.use_huge_pages()                # now it would re-execute


@pytest.mark.skipif(not host_memory.applies({}),
                    reason='no glibc with tunables here')
def test_a_command_reexecutes_once_with_the_tunable():
  code = ('import os, sys; from distill import host_memory; '
          'print("start", flush=True); host_memory.use_huge_pages(); '
          'print(os.environ.get("GLIBC_TUNABLES"), sys.argv[1:])')
  env = {k: v for k, v in os.environ.items()
         if k not in ('GLIBC_TUNABLES', host_memory.ENV)}
  out = subprocess.run([sys.executable, '-c', code, 'a', '--b=1'], cwd=REPO,
                       env=env, capture_output=True, text=True,
                       check=True).stdout.split('\n')
  assert out[:2] == ['start', 'start']            # ran twice, the 2nd kept on
  assert out[2] == f"{':'.join(host_memory.tunables())} ['a', '--b=1']"


_FAULTS = """
import resource, numpy as np
faults = []
for _ in range(6):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  a = np.ones(16 * 2 ** 20, np.float32)         # 64 MiB, touched, freed
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  del a
print(max(faults[2:]))
"""


@pytest.mark.skipif(host_memory._glibc_version() < (2, 26),
                    reason='no glibc with tunables here')
def test_kept_mapped_large_blocks_fault_no_pages_again():
  """What XLA:CPU's per-step buffers get: a 64 MiB block allocated, touched
  and freed repeatedly faults its pages in every time under glibc's
  defaults, and not again under the tunables."""
  plain = {k: v for k, v in os.environ.items()
           if k not in ('GLIBC_TUNABLES', host_memory.ENV)}
  run = lambda env: int(subprocess.run(
      [sys.executable, '-c', _FAULTS], env=env, capture_output=True,
      text=True, check=True).stdout)
  assert run(plain) > 32            # 16,384 pages of 4 KiB, or 32 of 2 MiB
  assert run(host_memory.environment(
      plain, only=host_memory.KEEP_MAPPED)) < 8
