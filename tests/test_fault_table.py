"""Every bad input and environment fault ends in one line on stderr, the
right exit status (2: user input, 1: the machine or a file), and leaves what
was on disk as it was; a few faults are recovered from (exit 0, with a
message on stdout).

The table of docs/faults.md ("Every fault and what the run says") is this
table, written by the tests (not typed): `UPDATE_README=1 python -m pytest
tests/test_fault_table.py` rewrites it; otherwise
`test_readme_lists_every_case` fails when it differs.
"""
import concurrent.futures
import contextlib
import dataclasses
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from typing import Callable, Optional

import numpy as np
import pytest

from conftest import REPO
import faultlib

DIGITS = '--config=configs/digits_teacher.py'
DISTILL = ['--config=configs/digits_distill.py:runlocal',
           '--config.teacher.config.total_steps=20',
           '--config.teacher.config.checkpoint_every_steps=10',
           '--config.teacher.config.keep_checkpoints=3']


@dataclasses.dataclass
class Case:
  name: str
  what: str                       # the fault, for the README
  setup: Callable                 # (tmp, pipeline) -> dict(args, watch, ...)
  code: int
  line: str                       # regex the whole stderr line must match
  check: Optional[Callable] = None   # (tmp, result) -> None, extra asserts


def _args(*args, **more):
  return lambda tmp, pipe: dict(args=[a.format(tmp=tmp, pipe=pipe)
                                      for a in args], **more)


def _tiny_cifar_archive(path, cls='cat'):
  """A small valid image-folder archive, for damaging."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, 'JPEG')
  data = buf.getvalue()
  with tarfile.open(path, 'w:gz') as tar:
    for split in ('train', 'test'):
      for i in range(200):
        info = tarfile.TarInfo(f'{split}/{cls}/{i:04d}.jpg')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _truncated_archive(tmp, pipe):
  del pipe
  os.makedirs(f'{tmp}/src')
  _tiny_cifar_archive(f'{tmp}/src/cifar10_jpeg.tar.gz')
  faultlib.truncate(f'{tmp}/src/cifar10_jpeg.tar.gz')
  return dict(args=['--config=configs/cifar10_teacher.py:runlocal',
                    f'--config.data.manual_dir={tmp}/src',
                    f'--config.data.data_dir={tmp}/tfds',
                    f'--workdir={tmp}/w'], watch=[f'{tmp}/src'])


def _image_folder(tmp, bad=None, weights=None):
  """A tiny labeled folder (<tmp>/imgs, two classes) and an unlabeled one
  (<tmp>/unl), with `bad` bytes as imgs/dog/broken.jpg; the arguments of
  configs/image_folder_distill.py on them."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for folder in ('imgs/cat', 'imgs/dog', 'imgs/test/cat', 'unl'):
    os.makedirs(f'{tmp}/{folder}')
    for i in range(4):
      Image.fromarray(np.full((9, 12, 3), 40 * i, np.uint8)).save(
          f'{tmp}/{folder}/{i}.png')
  if bad is not None:
    with open(f'{tmp}/imgs/dog/broken.jpg', 'wb') as f:
      f.write(bad)
  arg = (f'labeled_dir={tmp}/imgs,unlabeled={tmp}/unl,validation=2,'
         'teacher_arch=resnet18,student_arch=resnet18,runlocal'
         + (f',weights={weights}' if weights else ''))
  return dict(args=[f'--config=configs/image_folder_distill.py:{arg}',
                    f'--workdir={tmp}/w'],
              env={'TFDS_DATA_DIR': f'{tmp}/tfds'},
              watch=[f'{tmp}/imgs'])


def _weights_missing_key(tmp, pipe):
  del pipe
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  st.save_file({'conv1.weight': np.zeros((8, 3, 7, 7), np.float32),
                'bn1.weight': np.ones(8, np.float32)}, f'{tmp}/w.safetensors')
  spec = _image_folder(tmp, weights=f'{tmp}/w.safetensors')
  os.makedirs(f'{tmp}/tfds')
  spec['live'] = [f'{tmp}/tfds']       # the folders are prepared first
  return spec


def _cifar_of_other_classes(tmp, pipe):
  del pipe
  os.makedirs(f'{tmp}/src')
  _tiny_cifar_archive(f'{tmp}/src/cifar10_jpeg.tar.gz', 'tulip')
  return dict(args=['--config=configs/cifar10_teacher.py:runlocal',
                    f'--config.data.manual_dir={tmp}/src',
                    f'--config.data.data_dir={tmp}/tfds',
                    f'--workdir={tmp}/w'], watch=[f'{tmp}/src'])


def _empty_text(tmp, pipe):
  del pipe
  os.makedirs(f'{tmp}/src')
  open(f'{tmp}/src/tiny_shakespeare.txt', 'w').close()
  return dict(args=['--config=configs/shakespeare_lm.py:runlocal',
                    f'--config.data.manual_dir={tmp}/src',
                    f'--config.data.data_dir={tmp}/tfds',
                    f'--workdir={tmp}/w'], watch=[f'{tmp}/src'])


def _file_workdir(tmp, pipe):
  del pipe
  with open(f'{tmp}/afile', 'w') as f:
    f.write('keep me')
  return dict(args=[DIGITS + ':runlocal', f'--workdir={tmp}/afile'],
              watch=[tmp])


def _under_file(tmp, pipe):
  spec = _file_workdir(tmp, pipe)
  spec['args'][-1] = f'--workdir={tmp}/afile/run'
  return spec


def _mounted(size, read_only, inner):
  """Runs `inner`'s launch on a tmpfs mounted at <tmp>/mnt."""
  def setup(tmp, pipe):
    spec = inner(tmp, pipe)
    spec['context'] = lambda: faultlib.tmpfs(f'{tmp}/mnt', size, read_only)
    return spec
  return setup


@contextlib.contextmanager
def _holder(workdir):
  """A live run holding `workdir` (killed with -9 on exit)."""
  proc = subprocess.Popen(
      [sys.executable, '-m', 'launch.main', *_LONG, f'--workdir={workdir}'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  try:
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
      assert proc.poll() is None and time.time() < deadline, 'holder failed'
      time.sleep(0.1)
    yield proc
  finally:
    proc.kill()
    proc.wait()


_LONG = [DIGITS, '--config.total_epochs=3000', '--config.tensorboard=False']


def _busy(tmp, pipe):
  del pipe
  return dict(args=[*_LONG, f'--workdir={tmp}/w'],
              watch=[f'{tmp}/w/command.txt', f'{tmp}/w/config.json'],
              context=lambda: _holder(f'{tmp}/w'), live=[f'{tmp}/w'])


def _copy_pipeline(tmp, pipe, *extra):
  """A copy of the finished pipeline's teacher, used as an external
  teacher by a new run (so damaging it leaves the shared one alone)."""
  shutil.copytree(f'{pipe}/teacher', f'{tmp}/teacher',
                  ignore=shutil.ignore_patterns('LOCK'))
  return [DISTILL[0] + f',teacher={tmp}/teacher', f'--workdir={tmp}/run',
          *extra]


def _changed_text(tmp):
  """A small LM trained on a text file, which is then rewritten."""
  path = f'{tmp}/corpus.txt'
  words = np.random.default_rng(0).choice(
      ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'ran', 'far'], 20000)
  with open(path, 'w') as f:
    f.write(' '.join(words))
  args = [f'--config=configs/shakespeare_lm.py:runlocal,text={path}',
          f'--config.data.data_dir={tmp}/tfds', f'--workdir={tmp}/run']
  first = faultlib.launch(args)
  assert first.code == 0, first.stderr_lines[-3:]
  with open(path, 'a') as f:
    f.write(' and the dog')
  # The changed file is prepared (a new source, kept in the data dir) before
  # the workdir refuses it: its hash is what the identity compares.
  return dict(args=args, watch=[f'{tmp}/run'], live=[f'{tmp}/tfds'])


def _rerun(tmp, pipe, *args):
  """The finished pipeline (a copy) rerun with `args`."""
  shutil.copytree(pipe, f'{tmp}/run')      # its LOCK is free (empty)
  return dict(args=[*args, f'--workdir={tmp}/run'], watch=[f'{tmp}/run'])


def _damaged(name, text):
  """The finished pipeline (a copy) rerun with its own command after its
  `name` (an identity file) was overwritten with `text`."""
  def setup(tmp, pipe):
    spec = _rerun(tmp, pipe, *DISTILL)
    with open(f'{tmp}/run/{name}', 'w') as f:
      f.write(text)
    return spec
  return setup


def _damaged_teacher_config(tmp, pipe):
  args = _copy_pipeline(tmp, pipe)
  faultlib.truncate(f'{tmp}/teacher/config.json')
  return dict(args=args, watch=[f'{tmp}/teacher'])


_TINY_TABLE = """dict(kind='distill', config='configs/digits_distill.py',
    labeled=(50,), seeds=(0,), methods=('vanilla',), extra=',runlocal')"""


def _damaged_records(tmp, pipe):
  """A table whose kept records (experiments/records.py) are garbled,
  reported with the harness."""
  del pipe
  with open(f'{tmp}/tiny.py', 'w') as f:
    f.write(f'"""A table of the fault table."""\nTABLE = {_TINY_TABLE}\n')
  os.makedirs(f'{tmp}/res/cells')
  with open(f'{tmp}/res/cells/tiny.json', 'w') as f:
    f.write('{"50/0/vanilla": {"result": ')
  return dict(module='experiments.run', watch=[tmp],
              args=[f'--table={tmp}/tiny.py', f'--workdir={tmp}/runs',
                    f'--results={tmp}/res', '--report_only'])


def _text_file(tmp, *args):
  """An LM config on a small text file of <tmp> (data dir <tmp>/tfds)."""
  with open(f'{tmp}/corpus.txt', 'w') as f:
    f.write('the cat sat on the mat ' * 400)
  return dict(args=[f'--config=configs/shakespeare_lm.py:runlocal,text='
                    f'{tmp}/corpus.txt', f'--config.data.data_dir={tmp}/tfds',
                    f'--workdir={tmp}/w', *args])


def _corrupt_cache(tmp, pipe):
  args = _copy_pipeline(tmp, pipe)
  cache = f'{tmp}/teacher/teacher_cache'
  name = next(f for f in sorted(os.listdir(cache))
              if f.startswith('unlabeled') and f.endswith('.npz'))
  faultlib.truncate(os.path.join(cache, name))
  return dict(args=args, watch=[])


def _truncated_teacher(tmp, pipe):
  args = _copy_pipeline(tmp, pipe)
  faultlib.truncate(f'{tmp}/teacher/checkpoints/20')
  return dict(args=args, watch=[f'{tmp}/teacher/checkpoints'])


def _unreadable_teacher(tmp, pipe):
  args = _copy_pipeline(tmp, pipe)
  for step in os.listdir(f'{tmp}/teacher/checkpoints'):
    faultlib.garble(f'{tmp}/teacher/checkpoints/{step}')
  return dict(args=args, watch=[f'{tmp}/teacher'])


def _out_taken(tmp, pipe):
  """An export --out folder that holds another file (kept as it is)."""
  os.makedirs(f'{tmp}/taken')
  with open(f'{tmp}/taken/notes.txt', 'w') as f:
    f.write('mine')
  return dict(args=[f'--workdir={pipe}', f'--out={tmp}/taken'],
              module='launch.export', watch=[f'{tmp}/taken'])


def _empty_prompts(tmp, pipe):
  open(f'{tmp}/prompts.txt', 'w').close()
  return dict(args=[f'--model={pipe}', f'--prompts={tmp}/prompts.txt'],
              module='launch.generate', watch=[tmp])


def _no_images(tmp, pipe):
  """A predict --input folder whose only file is not an image."""
  os.makedirs(f'{tmp}/imgs')
  with open(f'{tmp}/imgs/notes.txt', 'w') as f:
    f.write('not an image')
  return dict(args=[f'--model={pipe}', f'--input={tmp}/imgs',
                    f'--output={tmp}/labels.jsonl'],
              module='launch.predict', watch=[tmp])


def _not_a_model(tmp, pipe):
  """launch.predict of a real image with a --model folder that is
  neither an export nor a workdir."""
  del pipe
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(f'{tmp}/imgs')
  Image.new('L', (8, 8)).save(f'{tmp}/imgs/a.png')
  return dict(args=[f'--model={tmp}/imgs', f'--input={tmp}/imgs',
                    f'--output={tmp}/p.jsonl'], module='launch.predict',
              watch=[tmp])


def _no_partial_checkpoint(tmp, result):
  del result
  left = [d for d in os.listdir(f'{tmp}/mnt/w/checkpoints')
          if 'tmp' in d] if os.path.isdir(f'{tmp}/mnt/w/checkpoints') else []
  assert not left, left


def _set_aside_and_rebuilt(tmp, result):
  assert 'is unreadable' in result.stdout and 'moved it to' in result.stdout
  assert "rebuilt ['unlabeled']" in result.stdout
  assert os.listdir(f'{tmp}/teacher/teacher_cache_unreadable')


def _fell_back(tmp, result):
  del tmp
  assert 'checkpoint at step 20' in result.stdout
  assert 'trying the previous one' in result.stdout


def _fast(tmp, result):
  """No download attempt: a hang would run into the network's timeouts
  (minutes); 60 s leaves room for a loaded machine (15 s seen)."""
  del tmp
  assert result.seconds < 60, result.seconds


CASES = [
    Case('config_file_missing', 'a config file that does not exist',
         _args('--config=configs/nope.py', '--workdir={tmp}/w'), 2,
         r'error: --config=configs/nope.py: no config file configs/nope.py'),
    Case('value_of_wrong_type', 'a flag value of the wrong type',
         _args(DIGITS, '--workdir={tmp}/w', '--config.total_steps=abc'), 2,
         r'error: --config.total_steps=abc: expected an integer'),
    Case('model_option_of_wrong_type', 'a model option of the wrong type',
         _args(DIGITS, '--workdir={tmp}/w', '--config.model.hidden=abc'), 2,
         r"error: model.hidden=\('abc',\) must be a sequence of int .*"),
    Case('lr_nan', 'a learning rate that is not a finite number',
         _args(DIGITS, '--workdir={tmp}/w', '--config.optimizer.lr=nan'), 2,
         r'error: optimizer.lr must be a finite number > 0, got nan'),
    Case('lr_zero', 'a learning rate of zero',
         _args(DIGITS, '--workdir={tmp}/w', '--config.optimizer.lr=0'), 2,
         r'error: optimizer.lr must be a finite number > 0, got 0.0'),
    Case('batch_over_part', 'a batch larger than the part it trains on',
         _args(DIGITS, '--workdir={tmp}/w', '--config.batch_size=100000'), 2,
         r'error: batch_size=100000 is larger than the 1300 examples of the '
         r'part it trains on \(labeled\); choose batch_size <= 1300'),
    Case('student_error_before_teacher',
         "a student config error, with the teacher still to train",
         _args(DISTILL[0], '--workdir={tmp}/w', '--config.optimizer.name=lion'),
         2, r"error: unknown optimizer.name 'lion'; valid choices: adam, "
         r'adamw, sgd'),
    Case('teacher_error_first', 'a teacher config error',
         _args(DISTILL[0], '--workdir={tmp}/w',
               '--config.teacher.config.batch_size=0'),
         2, r'error: teacher.config: batch_size must be >= 1, got 0'),
    Case('workdir_is_a_file', 'a workdir that is a file', _file_workdir, 2,
         r'error: \S+/afile is a file, not a directory; give a directory '
         r'path'),
    Case('workdir_under_a_file', 'a workdir under a file', _under_file, 2,
         r'error: cannot create \S+/afile/run: part of that path is a file, '
         r'not a directory; give a directory path'),
    Case('workdir_read_only', 'a workdir on a read-only filesystem',
         _mounted('1m', True, _args(DIGITS + ':runlocal',
                                    '--workdir={tmp}/mnt/w')), 1,
         r'error: cannot write \S+/mnt/w: read-only file system; give a '
         r'writable path'),
    Case('workdir_of_another_config',
         'a rerun into a workdir that holds another config',
         lambda tmp, pipe: _rerun(tmp, pipe, *DISTILL,
                                  '--config.method_kw.alpha_floor=0.2'), 2,
         r'error: workdir \S+ holds a run with other config: '
         r'method_kw.alpha_floor is 0.001 there, 0.2 here; rerun with its '
         r'config and inputs or use a new --workdir'),
    Case('workdir_of_another_teacher',
         'a rerun into a workdir whose student learned from another teacher',
         lambda tmp, pipe: _rerun(tmp, pipe,
                                  DISTILL[0] + f',teacher={pipe}/teacher',
                                  *DISTILL[1:]), 2,
         r'error: workdir \S+ holds a run with other config: '
         r'teacher.workdir is "" there, "\S+/teacher" here \(and \d+ more\); '
         r'rerun with its config and inputs or use a new --workdir'),
    Case('text_source_changed',
         'a rerun after the text file it was trained on changed',
         lambda tmp, pipe: _changed_text(tmp), 2,
         r'error: workdir \S+ holds a run with other inputs: '
         r'inputs.data.source is \[\{"sha256": "[0-9a-f]+\.\.\. there, '
         r'\[\{"sha256": "[0-9a-f]+\.\.\. here( \(and \d+ more\))?; rerun '
         r'with its config and inputs or use a new --workdir, or start one '
         r'from its checkpoint with --init_from=\S+'),
    Case('workdir_in_use', 'a second process in a workdir a live run holds',
         _busy, 2, r'error: workdir \S+/w is in use by pid \d+ on \S+ since '
         r'\S+ \(.*launch/main.py .*\); wait for it to finish or stop it, or '
         r'use another --workdir'),
    Case('manual_dir_empty', 'an empty data.manual_dir',
         lambda tmp, pipe: (os.makedirs(f'{tmp}/empty'), dict(args=[
             '--config=configs/cifar10_teacher.py:runlocal',
             f'--config.data.manual_dir={tmp}/empty',
             f'--config.data.data_dir={tmp}/tfds', f'--workdir={tmp}/w']))[1],
         2, r'error: data.manual_dir=\S+/empty holds no cifar10_jpeg.tar.gz; '
         r'give its folder or its path'),
    Case('archive_truncated', 'a truncated cifar10_jpeg.tar.gz',
         _truncated_archive, 1,
         r'error: \S+/cifar10_jpeg.tar.gz is unreadable \(EOFError: .*\); '
         r'restore the file .*'),
    Case('cifar10_jpeg_other_classes',
         'a cifar10_jpeg.tar.gz of classes other than CIFAR-10\'s',
         _cifar_of_other_classes, 2,
         r'error: data.manual_dir=\S+/src: train/tulip/ is not a CIFAR-10 '
         r'class; valid choices: airplane, .*, truck \(for other classes use '
         r'data.name=image_folder with an extracted folder\)'),
    Case('image_not_readable', 'a file of an image folder that is not an '
         'image', lambda tmp, pipe: _image_folder(tmp, bad=b'not a jpeg'), 2,
         r'error: data.manual_dir=\S+/imgs: \S+/imgs/dog/broken.jpg is not a '
         r'readable image \(UnidentifiedImageError\); remove it or set '
         r'data.skip_bad_images=True'),
    Case('weights_missing_key', 'pretrained ResNet weights without a key the '
         'model needs', _weights_missing_key, 2,
         r'error: teacher.config: \S+/w.safetensors: missing key '
         r'layer1.0.bn1.bias \(for '
         r'params/stage0_block0/bn1/bias\); is it a ResNet of this depth and '
         r'width\?'),
    Case('text_empty', 'an empty text file', _empty_text, 1,
         r'error: \S+/tiny_shakespeare.txt is unreadable \(SourceError: 0 '
         r'characters.*'),
    Case('data_dir_read_only', 'a read-only TFDS data dir',
         _mounted('1m', True, _args(DIGITS + ':runlocal',
                                    '--config.data.data_dir={tmp}/mnt',
                                    '--workdir={tmp}/w')), 1,
         r"error: cannot prepare dataset 'digits' in the TFDS data dir "
         r'\S+/mnt: read-only file system; set data.data_dir .*'),
    Case('catalog_not_prepared', 'a TFDS catalog set that is not prepared '
         '(no network)',
         _args('--config=configs/tfds_teacher.py',
               '--config.data.data_dir={tmp}/tfds', '--workdir={tmp}/w'), 2,
         r"error: dataset 'cifar10' is not prepared in the TFDS data dir "
         r'\S+/tfds; prepare it there .*', _fast),
    Case('disk_full', 'a full disk while saving a checkpoint',
         _mounted('400k', False, _args(DIGITS, '--workdir={tmp}/mnt/w',
                                       '--config.tensorboard=False')), 1,
         r'error: no space left on the device writing \S+/mnt/w/checkpoints '
         r'\(.* free\); free space or give a --workdir on a larger disk, then '
         r'rerun the same command to resume', _no_partial_checkpoint),
    Case('unknown_tokenizer', 'an unknown data.tokenizer',
         lambda tmp, pipe: _text_file(tmp, '--config.data.tokenizer=bpe'), 2,
         r"error: unknown data.tokenizer 'bpe'; valid choices: char, hf:PATH, spm"),
    Case('spm_without_vocab', 'a SentencePiece tokenizer without a size',
         lambda tmp, pipe: _text_file(tmp, '--config.data.tokenizer=spm'), 2,
         r'error: data.tokenizer=spm needs data.vocab_size > 0 \(e.g. '
         r'8000\)'),
    Case('guide_on_an_mlp', 'a GUIDE init of a model that is not an LM',
         _args(DIGITS, '--workdir={tmp}/w', '--config.init.method=guide'), 2,
         r"error: init.method=guide projects Transformer LMs; model is "
         r"'mlp'"),
    Case('identity_garbled', "a rerun into a workdir whose config.json is "
         'garbled', _damaged('config.json', 'garbage'), 1,
         r'error: \S+/run/config.json is unreadable \(JSONDecodeError: '
         r'Expecting value: .*\); it holds the identity of the run in '
         r'\S+/run: restore it from a copy of that workdir, or move the '
         r'workdir aside and give a new --workdir'),
    Case('inputs_not_an_object', "a rerun into a workdir whose inputs.json "
         'is not a JSON object', _damaged('inputs.json', '[]'), 1,
         r'error: \S+/run/inputs.json is unreadable \(a JSON list, not a '
         r'JSON object\); it holds the identity of the run in \S+/run: .*'),
    Case('identity_empty', "a rerun into a workdir whose config.json is "
         'empty', _damaged('config.json', ''), 1,
         r'error: \S+/run/config.json is unreadable \(JSONDecodeError: .*'),
    Case('teacher_config_truncated',
         "an external teacher whose config.json is truncated",
         _damaged_teacher_config, 1,
         r'error: \S+/teacher/config.json is unreadable \(JSONDecodeError: '
         r'.*\); it holds the config of the run in \S+/teacher: restore it '
         r'from a copy of that workdir, or retrain that run'),
    Case('records_garbled', "a table's records file that is truncated "
         '(experiments.run)', _damaged_records, 1,
         r'error: \S+/res/cells/tiny.json is unreadable \(JSONDecodeError: '
         r'.*\); it holds the finished cells of a table: restore it from a '
         r'copy, or move it aside to train every cell again'),
    Case('teacher_cache_corrupt', 'a corrupted teacher-cache file (recovered)',
         _corrupt_cache, 0, '', _set_aside_and_rebuilt),
    Case('teacher_checkpoint_truncated',
         "an external teacher's truncated newest checkpoint (recovered)",
         _truncated_teacher, 0, '', _fell_back),
    Case('teacher_checkpoints_unreadable',
         "an external teacher with no readable checkpoint",
         _unreadable_teacher, 1,
         r'error: no readable checkpoint in \S+/teacher/checkpoints \(steps '
         r'10, 20 all fail to read\); retrain that run or restore its files'),
    Case('export_unknown_format', 'launch.export: an unknown --format',
         _args('--workdir={pipe}', '--out={tmp}/o', '--format=onnx',
               module='launch.export'), 2,
         r"error: unknown --format 'onnx'; valid choices: hf, params, "
         r'reference'),
    Case('export_no_run', 'launch.export: a workdir with no run',
         _args('--workdir={tmp}/none', '--out={tmp}/o',
               module='launch.export'), 2,
         r'error: no trained run at \S+/none: no such directory'),
    Case('export_out_taken', 'launch.export: an --out folder holding other '
         'files (kept)', _out_taken, 2,
         r'error: --out=\S+/taken exists and holds other files \(notes.txt\);'
         r' give a new folder or an empty one \(nothing was written\)'),
    Case('export_reference_of_an_mlp', 'launch.export: --format=reference '
         'of a model without a torchvision equivalent',
         _args('--workdir={pipe}', '--out={tmp}/o', '--format=reference',
               module='launch.export'), 2,
         r'error: --format=reference holds the ImageNet ResNets '
         r"\(model_name=resnet_imagenet, torchvision's layout\); this run is "
         r'a mlp, which has no reference equivalent: use --format=params'),
    Case('generate_no_prompt', 'launch.generate: no prompt',
         _args('--model={pipe}', module='launch.generate'), 2,
         r'error: give one of --prompt, --prompts=FILE or --score=FILE'),
    Case('generate_empty_prompts', 'launch.generate: an empty prompts file',
         _empty_prompts, 2,
         r'error: --prompts=\S+/prompts.txt holds no prompt'),
    Case('generate_not_an_lm', 'launch.generate: a workdir of an image '
         'classifier', _args('--model={pipe}', '--prompt=hi',
                             module='launch.generate'), 2,
         r'error: --model=\S+ is a mlp classifier, not a language model; '
         r'label its inputs with python -m launch.predict'),
    Case('predict_no_images', 'launch.predict: a folder whose only file is '
         'not an image', _no_images, 2,
         r'error: --input=\S+/imgs names no image file \(a folder of '
         r'png/jpg/jpeg/bmp... files, a glob or a file\)'),
    Case('predict_not_a_model', 'launch.predict: a --model that is neither '
         'an export nor a workdir',
         _not_a_model, 2,
         r'error: --model=\S+ is neither an export folder \(no export.json\) '
         r'nor a workdir \(no config.json\)'),
    Case('sample_images_unknown_split', 'launch.sample_images: an unknown '
         '--split', _args('--config=configs/digits_distill.py:runlocal',
                          '--split=nope', '--out={tmp}/o',
                          module='launch.sample_images'), 2,
         r"error: unknown --split 'nope'; valid choices: labeled, test, "
         r'unlabeled, validation'),
]


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
  """A finished digits distillation (a 20-step teacher with checkpoints at
  10 and 20, its cache, a student), shared by the cases that rerun it."""
  workdir = str(tmp_path_factory.mktemp('pipeline'))
  result = faultlib.launch([*DISTILL, f'--workdir={workdir}'])
  assert result.code == 0, result.stderr_lines[-5:]
  return workdir


def _run_case(case, tmp, pipe):
  spec = case.setup(tmp, pipe)
  watch = spec.get('watch', [])
  # where another process writes meanwhile, or the run prepares data
  live = spec.get('live', [])
  with spec.get('context', contextlib.nullcontext)():
    before = {w: faultlib.snapshot(w) for w in watch}
    made = faultlib.paths(tmp, live)
    result = faultlib.launch(spec['args'], module=spec.get(
        'module', 'launch.main'), env=spec.get('env'))
    after = {w: faultlib.snapshot(w) for w in watch}
    if case.code == 2:               # a refused config makes nothing
      before[tmp], after[tmp] = made, faultlib.paths(tmp, live)
    if case.check:
      case.check(tmp, result)
  return result, before, after


@pytest.fixture(scope='module')
def outcomes(pipeline, tmp_path_factory):
  """Every case run, two at a time (each is a separate process)."""
  def one(case):
    tmp = str(tmp_path_factory.mktemp(case.name))
    try:
      return case.name, (tmp, *_run_case(case, tmp, pipeline))
    except BaseException as e:  # pylint: disable=broad-except
      return case.name, e
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return dict(pool.map(one, CASES))


def _outcome(outcomes, case):
  got = outcomes[case.name]
  if isinstance(got, BaseException):
    raise got
  return got


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_case(outcomes, case):
  _, result, before, after = _outcome(outcomes, case)
  tail = result.stderr_lines[-5:]
  assert result.code == case.code, (result.code, tail, result.stdout[-1500:])
  if case.code:
    assert len(result.stderr_lines) == 1, result.stderr_lines
    assert re.fullmatch(case.line, result.stderr_lines[0]), (
        result.stderr_lines[0])
  else:
    assert not result.stderr_lines, result.stderr_lines
  assert after == before          # nothing already on disk changed


@pytest.mark.slow
def test_a_killed_runs_lock_is_taken_over(tmp_path):
  """After the holder of a workdir is killed (-9), the next run takes its
  lock over and says so."""
  workdir = str(tmp_path / 'w')
  with _holder(workdir) as holder:
    pass
  again = subprocess.Popen([sys.executable, '-m', 'launch.main', *_LONG,
                            f'--workdir={workdir}'],
                           cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True,
                           env=dict(os.environ, JAX_PLATFORMS='cpu'))
  try:
    first = again.stdout.readline()
  finally:
    again.kill()
    again.wait()
  assert first.startswith(f'Took over the lock of {workdir} from pid '
                          f'{holder.pid}'), first


# --- the docs/faults.md section ----------------------------------------------

BEGIN = '<!-- fault table: generated by tests/test_fault_table.py -->'
END = '<!-- end of fault table -->'


def normalize(line, tmp, pipe):
  line = line.replace(tmp, '<tmp>').replace(pipe, '<run>')
  line = re.sub(r'\(\d+(\.\d+)? (B|KiB|MiB|GiB|TiB) free\)', '(<n> free)', line)
  line = re.sub(r'\(EOFError: [^)]*\)', '(EOFError: ...)', line)
  line = re.sub(r'line \d+ column \d+ \(char \d+\)',
                'line <n> column <n> (char <n>)', line)
  line = re.sub(r'pid \d+ on \S+ since \S+ \(.*\);', 'pid <pid> on <host> '
                'since <time> (<its command line>);', line)
  return line.replace('|', '\\|')


def table(outcomes, pipe):
  rows = ['| fault | exit | what the run says |', '|---|---|---|']
  for case in CASES:
    tmp, result, _, _ = _outcome(outcomes, case)
    if case.code:
      said = normalize(result.stderr_lines[0], tmp, pipe)
    else:
      said = ' '.join(normalize(line, tmp, pipe) for line in
                      result.stdout.splitlines()
                      if 'unreadable' in line or 'rebuilt' in line)
    rows.append(f'| {case.what} | {case.code} | `` {said} `` |')
  return '\n'.join(rows)


@pytest.mark.slow
def test_readme_lists_every_case(outcomes, pipeline):
  path = os.path.join(REPO, 'docs', 'faults.md')
  with open(path) as f:
    readme = f.read()
  generated = f'{BEGIN}\n{table(outcomes, pipeline)}\n{END}'
  start, end = readme.find(BEGIN), readme.find(END)
  assert start >= 0 and end > start, 'docs/faults.md has no fault table markers'
  current = readme[start:end + len(END)]
  if os.environ.get('UPDATE_README') == '1':
    with open(path, 'w') as f:
      f.write(readme.replace(current, generated))
  else:
    assert current == generated, (
        'docs/faults.md fault table is stale: UPDATE_README=1 python -m pytest '
        'tests/test_fault_table.py')
