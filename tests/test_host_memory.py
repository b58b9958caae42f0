"""Entry points re-execute themselves once with glibc's huge-page malloc
(distill/host_memory.py): when, with what environment, and that it happens
once."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from distill import host_memory


def test_the_environment_adds_the_tunable_and_keeps_others():
  env = host_memory.environment({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2',
                                 'HOME': '/x'})
  assert env['GLIBC_TUNABLES'] == ('glibc.malloc.arena_max=2:'
                                   + host_memory.TUNABLE)
  assert env['HOME'] == '/x'
  assert not host_memory.applies(env)          # never twice


@pytest.mark.parametrize('environ', [
    {host_memory.ENV: '0'},
    {'GLIBC_TUNABLES': host_memory.TUNABLE},
])
def test_it_does_not_apply_when_off_or_already_set(environ):
  assert not host_memory.applies(environ)


def test_no_huge_pages_no_reexec(monkeypatch, tmp_path):
  never = tmp_path / 'enabled'
  never.write_text('always madvise [never]\n')
  monkeypatch.setattr(host_memory, '_THP', str(never))
  assert not host_memory._kernel_offers_huge_pages(str(never))
  monkeypatch.setattr(host_memory.os, 'execve', lambda *a: pytest.fail(
      'must not re-execute'))
  monkeypatch.setattr(host_memory, '_kernel_offers_huge_pages',
                      lambda path=None: False)
  monkeypatch.delitem(sys.modules, 'pytest')   # as outside a test run
  monkeypatch.delenv('GLIBC_TUNABLES', raising=False)
  monkeypatch.delenv(host_memory.ENV, raising=False)
  host_memory.use_huge_pages()
  monkeypatch.setattr(host_memory, '_kernel_offers_huge_pages',
                      lambda path=None: True)
  if host_memory._glibc_version() >= (2, 35):   # now it would re-execute
    with pytest.raises(pytest.fail.Exception, match='must not re-execute'):
      host_memory.use_huge_pages()


@pytest.mark.skipif(not host_memory.applies({}),
                    reason='no glibc >= 2.35 with transparent huge pages here')
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
  assert out[2] == f"{host_memory.TUNABLE} ['a', '--b=1']"
