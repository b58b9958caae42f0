"""The session's temporary folder (tests/conftest.py): every temporary
folder of the tests and of the processes they start is made there, and one
left behind fails the session."""
import os
import subprocess
import sys
import tempfile

import conftest


def test_a_temporary_folder_left_behind_is_found():
  folder = tempfile.mkdtemp(suffix='tfds')
  try:
    assert os.path.dirname(folder) == conftest.SESSION_TMP
    assert os.path.basename(folder) in conftest.leftovers()
  finally:
    os.rmdir(folder)
  assert os.path.basename(folder) not in conftest.leftovers()


def test_processes_the_tests_start_make_theirs_there_too():
  out = subprocess.run([sys.executable, '-c', 'import tempfile; '
                        'print(tempfile.gettempdir())'], capture_output=True,
                       text=True, check=True).stdout.strip()
  assert out == conftest.SESSION_TMP
