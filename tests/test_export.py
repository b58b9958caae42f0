"""Export and predict as a user runs them (subprocesses, tiny scale): a digits
distillation whose student is a small ResNet (batch-norm statistics) and
whose teacher an MLP, 2 steps each."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO

TINY_CONFIG = '''
from configs import digits_distill


def get_config(arg=None):
  c = digits_distill.get_config('runlocal')
  c.model_name = 'resnet'
  c.model = dict(depth=8, width=0.25, conv='xla')
  c.tensorboard = False
  c.teacher.config.tensorboard = False
  return c
'''


def _run(module, *args):
  return subprocess.run(
      [sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
      text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS='cpu'),
      check=False)


def _ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _one_line(proc):
  """The stderr of a refused command: exit 2 and one line."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  return lines[0]


def _tree(folder):
  """{relative path: bytes} of everything under `folder`."""
  out = {}
  for base, _, names in os.walk(folder):
    for n in names:
      p = os.path.join(base, n)
      with open(p, 'rb') as f:
        out[os.path.relpath(p, folder)] = f.read()
  return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp('export')
  config = root / 'tiny_distill.py'
  config.write_text(TINY_CONFIG)
  workdir = str(root / 'workdir')
  _ok(_run('launch.main', f'--config={config}', f'--workdir={workdir}'))
  return root, workdir


@pytest.fixture(scope='module')
def images(trained):
  """Five test digits as PNG files and their uint8 arrays, and a corrupt
  file."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from configs import digits_teacher  # pylint: disable=g-import-not-at-top
  from distill.data import loading  # pylint: disable=g-import-not-at-top
  folder = trained[0] / 'images'
  folder.mkdir()
  data = loading.load_data(digits_teacher.get_config().data)
  x = data.parts['test'].get(np.arange(5))['image']
  paths = []
  for i, image in enumerate(x):
    paths.append(str(folder / f'digit{i}.png'))
    Image.fromarray(image[..., 0]).save(paths[-1])
  (folder / 'corrupt.png').write_bytes(b'\x89PNG not an image')
  return str(folder), paths, x


def _workdir_logits(run, x, which):
  """The logits of the run's newest checkpoint, as the evaluation computes
  them (load_trained, models.build, the pipeline's normalisation)."""
  from distill import checkpoint  # pylint: disable=g-import-not-at-top
  from distill.data import loading  # pylint: disable=g-import-not-at-top
  from distill.data import pipeline  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  config, variables, _ = checkpoint.load_trained(os.path.join(run, which))
  data = loading.load_data(config.data)
  model = models.build(config.model_name, data.num_classes,
                       config.model_dtype, **config.model.to_dict())
  inputs = pipeline.Inputs(data.spec)
  return np.asarray(model.apply(variables, inputs.device(x), train=False))


@pytest.mark.slow
@pytest.mark.parametrize('which', ['student', 'teacher'])
def test_exported_logits_equal_the_workdirs_in_f32_and_bf16_is_close(
    trained, images, which):
  from distill import export  # pylint: disable=g-import-not-at-top
  root, workdir = trained
  x = images[2]
  want = _workdir_logits(workdir, x, which)
  outs = {}
  for dtype in ('f32', 'bf16'):
    out = str(root / f'{which}_{dtype}')
    proc = _ok(_run('launch.export', f'--workdir={workdir}', f'--out={out}',
                    f'--which={which}', f'--dtype={dtype}'))
    assert 'exported: ' in proc.stdout
    outs[dtype] = out
  model, variables, config = export.load_exported(outs['f32'])
  assert config['source']['run'] == os.path.join(workdir, which)
  assert set(variables) <= {'params', 'batch_stats'}, list(variables)
  got = np.asarray(model.apply(variables, export.preprocess(x, config),
                               train=False))
  np.testing.assert_array_equal(got, want)
  if which == 'student':          # a ResNet: its batch-norm statistics too
    assert 'batch_stats' in variables, list(variables)
  with open(os.path.join(outs['f32'], export.INDEX_FILE)) as f:
    keys = set(json.load(f)['weight_map'])
  assert keys == {'/'.join(str(getattr(k, 'key', k)) for k in p)
                  for p, _ in jax.tree_util.tree_leaves_with_path(variables)}
  model, variables, config = export.load_exported(outs['bf16'])
  assert config['param_dtype'] == 'bfloat16'
  assert {v.dtype.name for v in jax.tree.leaves(variables)} == {'bfloat16'}
  low = np.asarray(model.apply(variables, export.preprocess(x, config),
                               train=False))
  scale = np.abs(want).max() + 1.0
  np.testing.assert_allclose(low, want, atol=0.05 * scale)
  assert not np.array_equal(low, want)    # it is rounded


@pytest.mark.slow
def test_shards_are_split_by_size_and_read_back(trained):
  from distill import export  # pylint: disable=g-import-not-at-top
  root, workdir = trained
  small, whole = str(root / 'sharded'), str(root / 'whole')
  _ok(_run('launch.export', f'--workdir={workdir}', f'--out={small}',
           '--which=teacher', '--max_shard_gb=0.00005'))
  _ok(_run('launch.export', f'--workdir={workdir}', f'--out={whole}',
           '--which=teacher'))
  shards = [n for n in os.listdir(small) if n.endswith('.safetensors')]
  assert len(shards) > 1
  a, b = export.load_exported(small)[1], export.load_exported(whole)[1]
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(u, v)


@pytest.mark.slow
def test_predict_labels_files_reports_a_corrupt_one_and_resumes(
    trained, images):
  from distill import export  # pylint: disable=g-import-not-at-top
  root, workdir = trained
  folder, paths, x = images
  out = str(root / 'student_predict')
  _ok(_run('launch.export', f'--workdir={workdir}', f'--out={out}'))
  model, variables, config = export.load_exported(out)
  want = np.argmax(np.asarray(model.apply(
      variables, export.preprocess(x, config), train=False)), -1)
  for name, model_path in (('export', out), ('workdir', workdir)):
    output = str(root / f'labels_{name}.jsonl')
    proc = _ok(_run('launch.predict', f'--model={model_path}',
                    f'--input={folder}', f'--output={output}', '--top_k=3',
                    '--batch_size=2'))
    with open(output) as f:
      rows = {r['file']: r for r in map(json.loads, f)}
    assert len(rows) == 6, rows
    for path, label in zip(paths, want):
      assert rows[path]['classes'][0] == label, (path, rows[path])
      assert len(rows[path]['probs']) == 3
      assert rows[path]['probs'] == sorted(rows[path]['probs'], reverse=True)
    bad = rows[os.path.join(folder, 'corrupt.png')]
    assert 'error' in bad and 'classes' not in bad, bad
    before = open(output).read()
    proc = _ok(_run('launch.predict', f'--model={model_path}',
                    f'--input={folder}/*.png', f'--output={output}'))
    assert '"labeled": 0' in proc.stdout, proc.stdout
    assert open(output).read() == before
  csv_out = str(root / 'labels.csv')
  _ok(_run('launch.predict', f'--model={out}', f'--input={paths[0]}',
           f'--output={csv_out}', '--top_k=2'))
  with open(csv_out) as f:
    header, row = f.read().splitlines()
  assert header.startswith('file,error,class_1,name_1,prob_1')
  assert row.split(',')[2] == str(want[0])


@pytest.mark.slow
def test_bad_inputs_are_one_line_and_overwrite_nothing(trained, images):
  root, workdir = trained
  folder = images[0]
  # a workdir with no finished run: the config of a distillation alone
  unfinished = root / 'unfinished'
  unfinished.mkdir()
  shutil.copy(os.path.join(workdir, 'config.json'), unfinished)
  line = _one_line(_run('launch.export', f'--workdir={unfinished}',
                        f'--out={root / "never"}'))
  assert 'no finished run' in line and 'summary.json' in line, line
  line = _one_line(_run('launch.predict', f'--model={unfinished}',
                        f'--input={folder}',
                        f'--output={root / "never.jsonl"}'))
  assert 'no finished run' in line, line
  assert not os.path.exists(root / 'never') and not os.path.exists(
      root / 'never.jsonl')
  # an export folder of another format or version
  good = str(root / 'good_export')
  _ok(_run('launch.export', f'--workdir={workdir}', f'--out={good}'))
  for key, value in (('format', 'hf'), ('version', 99)):
    other = str(root / f'other_{key}')
    shutil.copytree(good, other)
    with open(os.path.join(other, 'export.json')) as f:
      config = json.load(f)
    config[key] = value
    with open(os.path.join(other, 'export.json'), 'w') as f:
      json.dump(config, f)
    line = _one_line(_run('launch.predict', f'--model={other}',
                          f'--input={folder}',
                          f'--output={root / "never.jsonl"}'))
    assert 'export the model again' in line and "'params'" in line, line
  # --out holding other content, or another run's export: refused, kept
  taken = root / 'taken'
  taken.mkdir()
  (taken / 'notes.txt').write_text('mine')
  teacher = str(root / 'teacher_export')
  _ok(_run('launch.export', f'--workdir={workdir}', f'--out={teacher}',
           '--which=teacher'))
  for out in (str(taken), teacher):
    before = _tree(out)
    line = _one_line(_run('launch.export', f'--workdir={workdir}',
                          f'--out={out}'))
    assert 'exists and holds' in line, line
    assert _tree(out) == before
  # the same export again: nothing written
  before = _tree(good)
  proc = _ok(_run('launch.export', f'--workdir={workdir}', f'--out={good}'))
  assert 'nothing written' in proc.stdout and _tree(good) == before
  # a model with no reference equivalent names the format that holds it;
  # hf holds LMs only
  line = _one_line(_run('launch.export', f'--workdir={workdir}',
                        f'--out={root / "ref"}', '--format=reference'))
  assert 'no reference equivalent' in line, line
  assert '--format=params' in line, line
  line = _one_line(_run('launch.export', f'--workdir={workdir}',
                        f'--out={root / "hf"}', '--format=hf'))
  assert '--format=hf holds language models' in line, line
  assert not os.path.exists(root / 'hf')
  assert not os.path.exists(root / 'ref')
  assert not [n for n in os.listdir(root) if '.tmp-' in n]


def test_a_folder_input_counts_the_files_it_leaves_out(tmp_path):
  """launch.predict's inputs: a folder's images by extension, walked
  recursively, and the count of its other files (reported, not silent)."""
  from distill import labeling  # pylint: disable=g-import-not-at-top
  (tmp_path / 'sub').mkdir()
  for name in ('a.png', 'b.JPG', 'notes.txt', 'sub/c.jpeg', 'sub/.DS_Store'):
    (tmp_path / name).write_bytes(b'x')
  paths, others = labeling.input_files(str(tmp_path))
  assert [os.path.relpath(p, tmp_path) for p in paths] == [
      'a.png', 'b.JPG', 'sub/c.jpeg']
  assert others == 2
  assert labeling.input_files(str(tmp_path / '*.txt')) == (
      [str(tmp_path / 'notes.txt')], 0)
