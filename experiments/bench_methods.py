"""Benchmark: student step time per distillation loss, and the teacher cache.

    python -m experiments.bench_methods            # CIFAR-shaped, ResNet-8
    python -m experiments.bench_methods --model=mlp --steps=200
    python -m experiments.bench_methods --section=classification \
        --classification_out=experiments/results/bench_methods_classification.md
    python -m experiments.bench_methods --section=lm \
        --out=experiments/results/bench_methods_lm.md

Prints, measured in one run on the same student, batch and machine:
1. (section `classification`) the jitted train-step time with each method's
   loss relative to a plain cross-entropy (`supervised`) step (goal: at
   most 1.10x);
2. the time of one teacher pass over an unlabeled set against reading the
   cached logits back (what a student pays per epoch without the cache);
3. (section `lm`) the same for the LM objectives (vanilla, forward_kl,
   reverse_kl, jsd, and forward_kl with a top-k teacher) on the CPU-scale
   guide_lm student (2 x 64) with a `--lm_vocab` vocabulary, the teacher's
   logits in the batch, each with the whole batch's logits (dense) and with
   the loss over the sequence in chunks (config.loss_chunk_len =
   `--lm_chunk`, distill/chunked.py), against dense CE; and the compile
   check's per-device memory at paper scale with Gemma 2's 256k vocabulary,
   dense against chunked (launch/compile_check.py, 8 simulated devices).
   `--out` writes this section as a markdown table.
"""
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import app
from absl import flags

from configs import common
from configs import shakespeare_lm
from distill import methods, predict, teacher_cache, train
from distill.data import datasets, loading, pipeline, synthetic

_MODEL = flags.DEFINE_enum('model', 'resnet', ['resnet', 'mlp'],
                           'Student: CIFAR ResNet-8 or an MLP.')
_STEPS = flags.DEFINE_integer('steps', 30, 'Timed steps per method.')
_BATCH = flags.DEFINE_integer('batch', 128, 'Batch size.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Interleaved timing rounds.')
_UNLABELED = flags.DEFINE_integer('unlabeled', 4096,
                                  'Unlabeled examples for the cache check.')
_SECTION = flags.DEFINE_enum('section', 'all',
                             ['all', 'classification', 'lm'],
                             'Which benchmarks to run.')
_LM_VOCAB = flags.DEFINE_integer('lm_vocab', 2048,
                                 'The LM section\'s vocabulary.')
_LM_CHUNK = flags.DEFINE_integer('lm_chunk', 16, 'The LM section\'s '
                                 'loss_chunk_len for the chunked rows.')
_PAPER = flags.DEFINE_bool('paper_memory', True, 'The LM section: also the '
                           'compile check at paper scale (about a minute).')
_OUT = flags.DEFINE_string('out', '', 'The LM section\'s table (markdown).')
_CLASSIFICATION_OUT = flags.DEFINE_string(
    'classification_out', '', 'The classification section\'s output, as '
    'printed, to this markdown file too.')

# The LM section's objectives: (row name, method, method_kw)
LM_OBJECTIVES = (('supervised (CE)', 'supervised', {}),
                 ('vanilla', 'vanilla', {}),
                 ('forward_kl', 'forward_kl', {}),
                 ('forward_kl, alpha 0.5', 'forward_kl', {'alpha': 0.5}),
                 ('reverse_kl', 'reverse_kl', {}),
                 ('jsd', 'jsd', {}),
                 ('forward_kl, top-k 20', 'forward_kl',
                  {'teacher_top_k': 20}),
                 ('forward_kl, top-p 0.95', 'forward_kl',
                  {'teacher_top_p': 0.95}))
# The compile check's paper-scale rows (configs/guide_lm.py): dense, chunked
PAPER_LM = (('dense', 'scale=paper,method=forward_kl,vocab=256000'),
            ('chunked (128)',
             'scale=paper,method=forward_kl,vocab=256000,loss_chunk=128'))


class RandomImages:
  """A synthetic CIFAR-shaped part (the benchmark needs no dataset files)."""

  def __init__(self, n, shape=(32, 32, 3), classes=10, seed=0):
    rng = np.random.default_rng(seed)
    self.x = rng.integers(0, 255, (n,) + shape, dtype=np.uint8)
    self.y = rng.integers(0, classes, n)
    self.indices = np.arange(n)

  def __len__(self):
    return len(self.y)

  def get(self, idx):
    idx = np.asarray(idx)
    return {'image': self.x[idx], 'label': self.y[idx], 'id': idx}


def _config():
  c = common.base_config()
  c.data.name = 'digits'   # only for validation; the parts are synthetic
  c.batch_size = _BATCH.value
  c.total_steps = 1000
  c.progress = False
  if _MODEL.value == 'resnet':
    c.model_name, c.model.depth = 'resnet', 8
  else:
    c.model_name, c.model.hidden = 'mlp', (512, 512)
  return c


def _time_steps(trainer, batch, steps):
  state = trainer.state
  for _ in range(3):                                # compile + warm up
    state, m = trainer.train_step(state, batch)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = trainer.train_step(state, batch)
  jax.block_until_ready(m)
  trainer.state = state
  return (time.perf_counter() - start) / steps


def _lm_trainer(workdir):
  """The CPU-scale guide_lm student (2 x 64) on a synthetic corpus of
  `--lm_vocab` tokens, and a batch with the teacher's logits in it."""
  c = shakespeare_lm.get_config(
      f'layers=2,width=64,heads=2,mlp=256,positions=learned,seq_len=64,'
      f'tokenizer=spm,vocab={_LM_VOCAB.value}')
  c.batch_size = 32
  c.progress = c.tensorboard = False
  data = synthetic.data_like(c)
  trainer = train.Trainer(c, workdir, data=data)
  raw = trainer.inputs.host_train(trainer.train_part.get(
      np.arange(c.batch_size)), np.random.default_rng(0))
  rng = np.random.default_rng(1)
  raw['teacher'] = {'logits': 3 * rng.normal(size=np.shape(
      raw['targets']) + (data.num_classes,)).astype(np.float32)}
  return trainer, jax.device_put(raw, trainer.batch_sharding)


def lm_step_times():
  """{(row, chunk): seconds per step} of LM_OBJECTIVES, dense (chunk 0)
  and chunked, best of interleaved rounds."""
  with tempfile.TemporaryDirectory() as workdir:
    trainer, batch = _lm_trainer(workdir)
  steps = {}
  for row, name, kw in LM_OBJECTIVES:
    for chunk in (0, _LM_CHUNK.value):
      trainer.loss_fn = methods.get(name).loss_fn(kw)
      trainer.loss_chunk = chunk
      # Compiled now, while the trainer holds this loss (a jit traces at
      # its first call, and would see the last one set).
      step = jax.jit(functools.partial(train.Trainer.step_function, trainer),
                     donate_argnums=0)
      steps[row, chunk] = step.lower(trainer.state, batch).compile()
  best = {k: float('inf') for k in steps}
  for _ in range(_ROUNDS.value):
    for key, step in steps.items():
      trainer.train_step = step
      best[key] = min(best[key], _time_steps(trainer, batch, _STEPS.value))
  return best


def paper_memory():
  """{row: compile check report} of PAPER_LM at 8 devices, each in its own
  process (the device count is fixed per process)."""
  out = {}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for row, arg in PAPER_LM:
    proc = subprocess.run(
        [sys.executable, '-m', 'launch.compile_check',
         f'--config=configs/guide_lm.py:{arg}', '--devices=8', '--json'],
        capture_output=True, text=True, check=True, cwd=root)
    out[row] = json.loads(proc.stdout.strip().splitlines()[-1])
  return out


def lm_table(best, memory, seconds):
  """The LM section as markdown."""
  chunk = _LM_CHUNK.value
  ce = best['supervised (CE)', 0]
  lines = [f'### LM objectives (`python -m experiments.bench_methods '
           f'--section=lm --out=...`, {seconds / 60:.1f} min on this '
           'machine)', '',
           f'Step time on the CPU-scale guide_lm student (2 x 64, batch 32 '
           f'x 64 tokens, vocabulary {_LM_VOCAB.value}, the teacher\'s '
           f'logits in the batch), best of {_ROUNDS.value} rounds of '
           f'{_STEPS.value} steps, {jax.device_count()} '
           f'{jax.devices()[0].platform} device(s); chunked: '
           f'loss_chunk_len={chunk}. Goal: at most 1.10x dense CE.', '',
           '| objective | dense ms/step | x CE | chunked ms/step | x CE |',
           '|---|---|---|---|---|']
  for row, _, _ in LM_OBJECTIVES:
    d, c = best[row, 0], best[row, chunk]
    lines.append(f'| {row} | {1e3 * d:.2f} | {d / ce:.2f} | {1e3 * c:.2f} '
                 f'| {c / ce:.2f} |')
  if memory:
    gib = 2.0 ** 30
    lines += ['', 'Per device at paper scale with Gemma 2\'s 256k vocabulary '
              '(`configs/guide_lm.py:ARG`, student step with the teacher '
              'inside, 8 simulated devices, fsdp=8; launch/compile_check.py):',
              '', '| loss | ARG | temporaries (GiB) | peak (GiB) | fits 16 '
              'GiB |', '|---|---|---|---|---|']
    for row, arg in PAPER_LM:
      r = memory[row]
      lines.append(f'| {row} | `{arg}` | {r["temp_bytes"] / gib:.2f} | '
                   f'{r["peak_bytes"] / gib:.2f} | '
                   f'{"yes" if r["peak_bytes"] <= 16 * gib else "no"} |')
  return '\n'.join(lines)


def lm_section():
  start = time.time()
  best = lm_step_times()
  memory = paper_memory() if _PAPER.value else {}
  table = lm_table(best, memory, time.time() - start)
  print(table)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(table + '\n')


def main(argv):
  del argv
  if _SECTION.value in ('all', 'lm'):
    lm_section()
  if _SECTION.value in ('all', 'classification'):
    classification_section()


def classification_section():
  spec = datasets.DatasetSpec('image', 'classification', mean=(127.5,) * 3,
                              std=(64.0,) * 3)
  part = RandomImages(max(_UNLABELED.value, _BATCH.value))
  data = loading.Data(spec, {p: part for p in ('labeled', 'validation',
                                             'unlabeled', 'test')}, 10)
  config = _config()
  with tempfile.TemporaryDirectory() as workdir:
    trainer = train.Trainer(config, workdir, data=data)
  rng = np.random.default_rng(0)
  host = pipeline.Host(spec)
  raw = part.get(np.arange(_BATCH.value))
  raw['teacher'] = {
      'logits': rng.normal(size=(_BATCH.value, 10)).astype(np.float32) * 3,
      'weight': rng.random(_BATCH.value).astype(np.float32),
      'alpha': rng.random(_BATCH.value).astype(np.float32),
      'k': np.full(_BATCH.value, 3, np.int32)}
  batch = jax.device_put(host(raw), trainer.batch_sharding)

  lines = [f'student {_MODEL.value}, batch {_BATCH.value}, {_STEPS.value} '
           f'steps, best of {_ROUNDS.value} interleaved rounds, '
           f'{jax.device_count()} {jax.devices()[0].platform} device(s)']
  print(lines[-1])
  names = ['supervised'] + methods.names(needs_teacher=True)
  steps = {}
  for name in names:
    trainer.loss_fn = methods.get(name).loss_fn({})
    # Compiled now, while the trainer holds this loss: a jit traces at its
    # first call, and the jits of one bound method share their traces, so
    # compiled later every row would time the last loss set.
    step = jax.jit(functools.partial(train.Trainer.step_function, trainer),
                   donate_argnums=0)
    steps[name] = step.lower(trainer.state, batch).compile()
  # Interleaved rounds, best of them: machine noise hits every method alike.
  best = {n: float('inf') for n in names}
  for _ in range(_ROUNDS.value):
    for name in names:
      trainer.train_step = steps[name]
      best[name] = min(best[name], _time_steps(trainer, batch, _STEPS.value))
  for name in names:
    lines.append(f'  {name:13s} {1000 * best[name]:8.2f} ms/step   '
                 f'{best[name] / best["supervised"]:5.2f}x CE')
    print(lines[-1])

  variables = {'params': trainer.state.params, **trainer.state.model_state}
  predict.logits(trainer.model, variables, part, trainer.inputs, trainer.mesh,
                 512)
  start = time.perf_counter()
  logits = predict.logits(trainer.model, variables, part, trainer.inputs,
                          trainer.mesh, 512)
  online = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as d:
    cache = teacher_cache.TeacherCache(d)
    fp = {'num_classes': 10}
    cache.save('u', fp, part.indices, logits)
    start = time.perf_counter()
    cache.load('u', fp)
    cached = time.perf_counter() - start
  lines.append(f'teacher pass over {len(part)} examples: {online:.2f} s '
               f'online, {1000 * cached:.1f} ms from the cache '
               f'({online / cached:.0f}x faster per epoch)')
  print(lines[-1])
  if _CLASSIFICATION_OUT.value:
    with open(_CLASSIFICATION_OUT.value, 'w') as f:
      f.write('### Each loss\'s train step against cross-entropy\'s '
              '(`python -m experiments.bench_methods --section=classification'
              f' --classification_out={_CLASSIFICATION_OUT.value}`)\n\n'
              '```\n' + '\n'.join(lines) + '\n```\n')


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  app.run(main)
