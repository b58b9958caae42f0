"""Shared test helpers: paths, the shared datasets, quiet logging.

The session shares one persistent XLA compilation cache (a temporary directory,
removed at exit) with every process it starts: the fault table, the kill -9
tests and the two-process runs compile the same programs many times over.
Set DISTILL_TEST_CACHE=0 to compile everything afresh. Processes the tests
start use one CPU device unless a test says otherwise.

A test module whose fixture waits on a long subprocess lists the function
that starts it (returning an `EarlyProcess`) in `EARLY_PROCESSES`; when its
tests are collected the process starts at once and runs beside the tests
before them, and the fixture takes it with `early_process(start)` (which
starts it then if it was not). A module may name the fixtures that need
the process in `EARLY_FIXTURES`: then it starts only when a selected test
uses one (`pytest -m "not slow"` deselects them).

Under pytest-xdist (`-n 2`, files whole to a worker: `--dist loadfile`, as
setup.cfg's addopts say) the workers share the session's folder and
compilation cache; the controller checks and removes the folder at the
end, and a worker starts a module's early process when its fixture asks.
"""
import atexit
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(REPO), 'shared', 'datasets')
sys.path.insert(0, REPO)

# Every temporary folder of the session (the tests', the processes they
# start, the libraries') is made in one folder of its own, $TMPDIR; the
# session fails if anything but what this file removes itself is left there
# at its end (`leftovers`), then removes it. pytest's `tmp_path` folders
# stay where pytest keeps them (its last 3 sessions).
# (pytest may import this file twice, as its plugin and as `conftest`: the
# session's state is kept once per process.)
_SESSION = sys.modules.setdefault('_distill_test_session', types.ModuleType(
    '_distill_test_session'))
if not hasattr(_SESSION, 'tmp'):
  _SESSION.owned = set()  # what this file makes there and removes at exit
  # a process the tests start that imports this file (an input worker
  # unpickling a test's function) uses the session's folder as it is
  _SESSION.tmp = os.environ.get('DISTILL_TESTS_TMP', '')
  if not os.path.isdir(_SESSION.tmp):
    os.environ.setdefault('PYTEST_DEBUG_TEMPROOT', tempfile.gettempdir())
    _SESSION.tmp = tempfile.mkdtemp(prefix='distill-tests-tmp-')
    os.environ['DISTILL_TESTS_TMP'] = _SESSION.tmp
  os.environ['TMPDIR'] = tempfile.tempdir = _SESSION.tmp
SESSION_TMP = _SESSION.tmp
_OWNED = _SESSION.owned


# A pytest-xdist worker (its controller checks the folder at the end).
WORKER = os.environ.get('PYTEST_XDIST_WORKER', '')
# The folders this file makes and removes itself, in any process of the
# session (a worker's are not in the controller's `_OWNED`).
# torch (a test reference) keeps its compile cache in $TMPDIR too.
_OWN_PREFIXES = ('distill-tests-xla-cache-', 'distill-tests-early-',
                 'torchinductor_')


def _own(folder):
  _OWNED.add(os.path.basename(folder))
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  return folder


def leftovers(root=SESSION_TMP):
  """What the tests left in `root`, the session's temporary folder."""
  return sorted(n for n in os.listdir(root) if n not in _OWNED and
                not n.startswith(_OWN_PREFIXES))


def pytest_sessionfinish(session, exitstatus):
  del exitstatus
  if WORKER:
    return
  left = leftovers() if os.path.isdir(SESSION_TMP) else []
  if left:
    print(f'\nerror: the tests left {len(left)} temporary folder(s) or '
          f'file(s) behind in {SESSION_TMP}: {", ".join(left[:10])}; a '
          'test must remove what it makes (tmp_path, or a with-block)',
          file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
  shutil.rmtree(SESSION_TMP, ignore_errors=True)


if os.environ.get('DISTILL_TEST_CACHE', '1') != '0' and (
    'JAX_COMPILATION_CACHE_DIR' not in os.environ) and not _SESSION.owned:
  _CACHE = _own(tempfile.mkdtemp(prefix='distill-tests-xla-cache-'))
  # Environment, not jax.config: the processes the tests start inherit it.
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'

# The tests compile far more than they run: XLA:CPU's code generator at
# optimisation level 1 compiles about a fifth faster than at its default (3);
# the HLO passes, hence the programs and their memory figures, are the
# same, the last bits of a sum may differ. (Level 0 compiles faster still,
# but there the 8-device data-parallel CNN of tests/mesh_equivalence.py
# drifts 1e-3 from one device by its third step.) Environment, so the
# processes the tests start inherit it; DISTILL_TEST_FAST_COMPILE=0
# compiles as a user's run does.
if os.environ.get('DISTILL_TEST_FAST_COMPILE', '1') != '0' and (
    'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', '')):
  os.environ['XLA_FLAGS'] = ' '.join(
      [os.environ.get('XLA_FLAGS', ''),
       '--xla_backend_optimization_level=1']).strip()


def xla_flags(devices):
  """XLA_FLAGS for a process the tests start with `devices` CPU devices
  (the session's other flags kept)."""
  return ' '.join([os.environ.get('XLA_FLAGS', ''),
                   f'--xla_force_host_platform_device_count={devices}']
                  ).strip()

# The runs the tests start use one CPU device each (compiling for one is
# quicker); tests/test_host_devices.py checks the default (several).
os.environ.setdefault('DISTILL_CPU_DEVICES', '1')


def normal(seed, shape, scale=1.0):
  """Standard normal float32 test inputs (times `scale`) from numpy's
  generator: jax.random compiles its generator once per shape (about
  0.5 s each here), numpy draws at once. `seed`: an int or a tuple."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(
      shape), jnp.float32)


def randint(seed, shape, low, high):
  """Integers in [low, high) as int32 test inputs (numpy: see `normal`)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  return jnp.asarray(np.random.default_rng(seed).integers(low, high, shape),
                     jnp.int32)


def shared_file(name):
  """Path of a file of ../shared/datasets, or skip the test with a reason."""
  path = os.path.join(SHARED_DATASETS, name)
  if not os.path.exists(path):
    pytest.skip(f'{path} is absent (the shared datasets are not beside the '
                'repository)')
  return path


@pytest.fixture(autouse=True, scope='session')
def _quiet():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  tfds.disable_progress_bar()


@dataclasses.dataclass
class EarlyProcess:
  """A subprocess started ahead of the fixture that needs it: its output
  goes to files (a pipe nobody reads yet would fill and block it)."""
  proc: subprocess.Popen
  folder: str            # its own temporary folder, removed at exit

  def wait(self, timeout):
    """Its exit status and the tail of its stderr, once it has finished."""
    try:
      code = self.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      raise
    with open(os.path.join(self.folder, 'stderr')) as f:
      return code, f.read()[-3000:]


def start_process(argv, env=None):
  """Start `argv` in the repository with stdout and stderr to files of a
  new temporary folder, where it may write its results too: '{folder}' in
  an argument is that folder."""
  folder = _own(tempfile.mkdtemp(prefix='distill-tests-early-'))
  argv = [a.replace('{folder}', folder) for a in argv]
  with open(os.path.join(folder, 'stdout'), 'w') as out, open(
      os.path.join(folder, 'stderr'), 'w') as err:
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=err)
  atexit.register(lambda: proc.poll() is None and proc.kill())
  return EarlyProcess(proc, folder)


_EARLY = {}


# The longest files (worker seconds in one full run: fault table 140,
# configs 166, sharding 168, laurel 135, model families 103, export 96,
# generate_cli 84) run first: under xdist's --dist loadfile each is one
# worker's, and one started last kept that worker busy for minutes while
# the other sat idle (the suite used 1.5 of the 2 cores).
LONGEST_FIRST = ('test_fault_table.py', 'test_sharding.py', 'test_configs.py',
                 'test_laurel.py', 'test_model_families.py', 'test_export.py',
                 'test_generate_cli.py')


def pytest_configure(config):
  # xdist would order the files by their number of tests instead
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(os.path.basename(str(item.path)),
                                       len(rank)))   # stable: the rest as is


def pytest_collection_finish(session):
  if session.config.option.collectonly or WORKER:
    return
  modules = {item.module for item in session.items
             if getattr(item, 'module', None) is not None and (
                 not hasattr(item.module, 'EARLY_FIXTURES') or set(
                     item.module.EARLY_FIXTURES) & set(item.fixturenames))}
  for module in sorted(modules, key=lambda m: m.__name__):
    for start in getattr(module, 'EARLY_PROCESSES', ()):
      _EARLY[start.__qualname__, module.__name__] = start()


def early_process(start):
  """The process `start` started when the tests were collected, or, when
  none was (the module imported another way), one started now."""
  got = _EARLY.pop((start.__qualname__, start.__module__), None)
  return got if got is not None else start()
