"""Imports point down: core <- models <- distill, core <- configs; a config
file loads (get_config) without the pipeline's heavy libraries."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(REPO, 'configs', '*.py')) if not p.endswith('__init__.py'))


def _imports(path):
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module


@pytest.mark.parametrize('package,forbidden', [
    ('core', ('distill', 'models', 'configs', 'launch', 'experiments')),
    ('models', ('distill', 'configs', 'launch', 'experiments')),
    ('configs', ('distill', 'models', 'launch', 'experiments')),
])
def test_packages_import_only_below_them(package, forbidden):
  bad = [(os.path.relpath(p, REPO), m)
         for p in glob.glob(os.path.join(REPO, package, '*.py'))
         for m in _imports(p) if m.split('.')[0] in forbidden]
  assert not bad, bad


def test_config_files_load_without_jax_orbax_or_tfds():
  """Every config file's get_config() runs with jax, flax, orbax, optax and
  tensorflow_datasets made unimportable."""
  code = '''
import sys
for m in ('jax', 'jaxlib', 'flax', 'orbax', 'optax', 'tensorflow_datasets',
          'grain', 'tensorflow'):
  sys.modules[m] = None
import importlib
for name in sys.argv[1:]:
  module = importlib.import_module('configs.' + name)
  if hasattr(module, 'get_config'):
    module.get_config(None)
print('ok')
'''
  proc = subprocess.run([sys.executable, '-c', code, *CONFIGS], cwd=REPO,
                        capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr[-2000:]


def test_config_checks_and_the_train_loop_do_not_import_each_other():
  """distill/train.py uses distill/config_lib.py's checks; config_lib
  imports nothing of train (no cycle between them)."""
  path = os.path.join(REPO, 'distill', 'config_lib.py')
  assert 'distill.train' not in set(_imports(path))
  assert not [m for m in _imports(path) if m == 'distill' and
              'import train' in open(path).read()]


@pytest.mark.slow
def test_accelerator_code_paths_do_not_import_the_cpu_kernels():
  """Models choose their kernel provider once (models/layers.py:
  kernels_for, by model.conv): with conv='xla', or 'auto' on an
  accelerator backend, building, initialising and training-step-applying a
  conv model never imports models.kernels.onednn (nor its provider)."""
  code = '''
import sys
import jax
import jax.numpy as jnp
import models
def run(name, **kw):
  model = models.build(name, 10, **kw)
  x = jnp.ones((2, 16, 16, 3))
  v = model.init(jax.random.PRNGKey(0), x)
  model.apply(v, x, train=True, mutable=['batch_stats'])
for name in ('cnn', 'resnet'):
  run(name, conv='xla')
jax.default_backend = lambda: 'gpu'      # an accelerator backend
for name in ('cnn', 'resnet'):
  run(name, conv='auto')
loaded = sorted(m for m in sys.modules if m.startswith('models.kernels.'))
assert not loaded, loaded
print('ok')
'''
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_the_launcher_does_not_import_what_only_some_runs_need():
  """Every run, test subprocess and refused config pays for what
  `launch.main` imports: sklearn (a second; only fitted methods need it,
  distill/fitting.py) and torch are imported where they are used."""
  code = ('import sys, launch.main, distill.run; '
          'print(sorted(m for m in ("sklearn", "torch", "transformers") '
          'if m in sys.modules))')
  proc = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        check=False, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip() == '[]', proc.stdout
