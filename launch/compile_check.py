"""Compile check: lower and compile a config's train step for a mesh of
simulated CPU devices and report what each device would hold, before a pod
config is run. Nothing is allocated (the state is shapes with shardings) and
no dataset is read (a synthetic stand-in has the config's shapes).

    python -m launch.compile_check --config=configs/guide_lm.py:scale=paper \
        --devices=8 --mesh=fsdp=4,model=2 --device_memory_gib=16
    python -m launch.compile_check --config=configs/imagenet_distill.py \
        --devices=32 --mesh=data=-1 --stage=teacher

--stage: `student` (the default for configs with a teacher: the student's
step on cached teacher targets, or with the teacher inside it for online
distillation) or `teacher` (that config's teacher block). Reported per
device: parameters, optimizer state and model state (from the shardings),
XLA's argument / output / temporary (activations and workspace) sizes and
their peak estimate, FLOPs per step (the analytic model FLOPs of
distill/flops.py, which count a scanned layer stack once per layer, beside
XLA's cost analysis, which counts it once and includes rematerialisation),
and the compile time.

Every paper-scale config on its own default mesh, 8 and 32 devices, one
process each, as a markdown table:

    python -m launch.compile_check --suite=paper --out=experiments/results/compile_check.md

Only the configs whose spec contains a text, their rows replaced in the
table there (e.g. the 256k-vocabulary rows, dense and chunked):

    python -m launch.compile_check --suite=paper --suite_match=vocab=256000 \
        --out=experiments/results/compile_check.md

(the Llama 3.2 3B-shape teacher's rows: --suite_match=scale=llama3b).
"""
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from launch.suite_rows import merge_rows

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, optionally FILE:ARG.',
    lock_config=True)
_DEVICES = flags.DEFINE_integer('devices', 8,
                                'Simulated CPU devices (the mesh size).')
_MESH = flags.DEFINE_string(
    'mesh', '', 'Mesh axis sizes, e.g. data=4,fsdp=2 (axes: data, fsdp, '
    'model; -1: the rest); empty: the config\'s mesh.')
_STAGE = flags.DEFINE_enum('stage', 'auto', ['auto', 'student', 'teacher'],
                           'Which train step of a distillation config.')
_BATCH = flags.DEFINE_integer('batch_size', 0,
                              'Global batch size override (0: the config).')
_MEMORY = flags.DEFINE_float(
    'device_memory_gib', 0.0,
    'Per-device memory to check the estimate against (0: no check).')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON line only.')
_SUITE = flags.DEFINE_enum('suite', '', ['', 'paper'],
                           'Check every config of a suite instead of --config.')
_SUITE_DEVICES = flags.DEFINE_list('suite_devices', ['8', '32'],
                                   'Device counts for --suite.')
_OUT = flags.DEFINE_string('out', '', 'With --suite: also write the table '
                           'here (markdown).')
_SUITE_MATCH = flags.DEFINE_string(
    'suite_match', '', 'With --suite: check only the configs whose spec '
    'contains this text; with --out, their rows replace (or join) those of '
    'the table already there, the others kept.')

# The paper-scale configs, each checked on its own default mesh.
PAPER_SUITE = (
    ('configs/guide_lm.py:scale=paper,method=vanilla', 'student'),
    # Gemma 2's 256k vocabulary: the whole batch's logits, then the loss
    # over the sequence in chunks of 128 positions (distill/chunked.py)
    ('configs/guide_lm.py:scale=paper,method=forward_kl,vocab=256000',
     'student'),
    ('configs/guide_lm.py:scale=paper,method=forward_kl,vocab=256000,'
     'loss_chunk=128', 'student'),
    # A teacher of Llama 3.2 3B's shape (GQA, 128k vocabulary, tied) and a
    # GUIDE student half its width, dense and chunked logits as above
    ('configs/guide_lm.py:scale=llama3b,init=guide,method=forward_kl',
     'student'),
    ('configs/guide_lm.py:scale=llama3b,init=guide,method=forward_kl,'
     'loss_chunk=128', 'student'),
    ('configs/laurel_lm.py:scale=paper', 'train'),
    ('configs/tfds_distill.py', 'teacher'),
    ('configs/tfds_distill.py', 'student'),
    ('configs/imagenet_distill.py', 'teacher'),
    ('configs/imagenet_distill.py', 'student'),
)

GIB = 2.0 ** 30


def parse_mesh(text):
  """'data=4,fsdp=2' -> {'data': 4, 'fsdp': 2}; one-line error if bad."""
  out = {}
  for item in filter(None, text.split(',')):
    name, eq, value = item.partition('=')
    try:
      if not eq:
        raise ValueError
      out[name.strip()] = int(value)
    except ValueError:
      raise app.UsageError(f'--mesh item {item!r} is not AXIS=SIZE (e.g. '
                           'data=4,fsdp=2)') from None
  return out


def _per_device_bytes(tree):
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total


def _stage_config(config, stage):
  from distill import distillation  # pylint: disable=g-import-not-at-top
  has_teacher = 'teacher' in config
  if stage == 'auto':
    stage = 'student' if has_teacher else 'teacher'
  if stage == 'teacher':
    return (config.teacher.config if has_teacher else config), None
  if not has_teacher:
    raise app.UsageError('--stage=student needs a config with a teacher '
                         'block; this one trains a single model')
  return distillation.student_config(config), config


def check(config, stage='auto', mesh=None, batch_size=0):
  """The report (a dict) for `config`'s train step on all visible devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from distill import distillation  # pylint: disable=g-import-not-at-top
  from distill import flops  # pylint: disable=g-import-not-at-top
  from distill import train  # pylint: disable=g-import-not-at-top
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  from distill.data import synthetic  # pylint: disable=g-import-not-at-top
  config, parent = _stage_config(
      ml_collections.ConfigDict(config.to_dict()), stage)
  if mesh:
    config.mesh = ml_collections.ConfigDict(mesh)
  if config.model.get('conv', 'xla') == 'auto':
    # The simulated devices stand for accelerators, whose convolutions are
    # XLA's: no CPU library kernel in the compiled program.
    config.model.conv = 'xla'
  if config.model_name == 'transformer_lm' and config.model.get(
      'head_matmul', 'auto') == 'auto':
    config.model.head_matmul = 'plain'    # the accelerators' head
  if batch_size:
    config.batch_size = config.eval_batch_size = batch_size
  data = synthetic.data_like(config)
  train_part, teacher = None, None
  if parent is not None and parent.distill.get('online'):
    example = jax.numpy.asarray(synthetic.example_inputs(config, data))
    teacher = distillation.online_teacher(parent, parent.teacher.config,
                                          data.num_classes, example=example)
  elif parent is not None:
    part = data.parts['unlabeled']
    seq = config.data.seq_len if config.model_name == 'transformer_lm' else (
        None)
    train_part = datasets.WithTargets(part, synthetic.teacher_targets(
        len(part), data.num_classes, seq))
  start = time.time()
  trainer = train.Trainer(config, '/nonexistent', data=data,
                          train_part=train_part, teacher=teacher,
                          abstract=True, devices=jax.devices())
  compiled = trainer.compile_train_step()
  seconds = time.time() - start
  state = trainer.state
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report = dict(
      model=config.model_name,
      stage='student' if parent is not None else (
          'teacher' if stage == 'teacher' else 'train'),
      devices=len(jax.devices()), mesh=dict(trainer.mesh.shape),
      batch_size=config.batch_size,
      params=int(sum(x.size for x in jax.tree.leaves(state.params))),
      params_bytes=_per_device_bytes(state.params),
      opt_state_bytes=_per_device_bytes(state.opt_state),
      model_state_bytes=_per_device_bytes(state.model_state),
      compile_seconds=seconds,
      flops_per_step=float((cost or {}).get('flops', float('nan'))),
      model_flops_per_step=flops.model_flops_per_step(trainer))
  if mem is not None:
    report.update(
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        peak_bytes=int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                       + mem.temp_size_in_bytes - mem.alias_size_in_bytes))
  return report


def format_report(r, memory_gib=0.0):
  def g(b):
    return f'{b / GIB:8.2f} GiB' if b >= GIB else f'{b / 2**20:8.2f} MiB'
  lines = [
      f'{r["model"]} ({r["stage"]} step), {r["params"]:,} parameters, '
      f'global batch {r["batch_size"]}, on {r["devices"]} devices, mesh '
      + ', '.join(f'{k}={v}' for k, v in r['mesh'].items()),
      f'  compiled in {r["compile_seconds"]:.1f} s; per step per device: '
      f'{r["model_flops_per_step"] / r["devices"] / 1e9:.2f} GFLOP analytic '
      f'(model FLOPs), {r["flops_per_step"] / 1e9:.2f} GFLOP by XLA',
      '  per device:',
      f'    parameters       {g(r["params_bytes"])}',
      f'    optimizer state  {g(r["opt_state_bytes"])}',
      f'    model state      {g(r["model_state_bytes"])}']
  if 'peak_bytes' in r:
    lines += [f'    arguments        {g(r["argument_bytes"])}',
              f'    outputs          {g(r["output_bytes"])} '
              f'({g(r["alias_bytes"]).strip()} donated in place)',
              f'    temporaries      {g(r["temp_bytes"])}  (activations, '
              'workspace)',
              f'    peak estimate    {g(r["peak_bytes"])}']
    if memory_gib:
      fits = r['peak_bytes'] <= memory_gib * GIB
      lines.append(f'  {"fits" if fits else "DOES NOT FIT"} in '
                   f'{memory_gib:g} GiB per device')
  return '\n'.join(lines)


def run_suite(devices_list, out='', match=''):
  """Every PAPER_SUITE config (those whose spec contains `match`) at every
  device count, each in its own process (the device count is fixed per
  process); returns the table, and writes it to `out` (with `match`, merged
  into the table there: merge_rows)."""
  rows = []
  for spec, stage in PAPER_SUITE:
    if match not in spec:
      continue
    for devices in devices_list:
      proc = subprocess.run(
          [sys.executable, '-m', 'launch.compile_check', f'--config={spec}',
           f'--stage={stage if stage != "train" else "auto"}',
           f'--devices={devices}', '--json'], capture_output=True, text=True,
          check=False, cwd=os.path.dirname(os.path.dirname(
              os.path.abspath(__file__))))
      if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        rows.append((spec, stage, devices, None, lines[-1] if lines else ''))
      else:
        rows.append((spec, stage, devices, json.loads(
            proc.stdout.strip().splitlines()[-1]), ''))
      print(f'{spec} ({stage}) on {devices} devices: '
            + ('ok' if rows[-1][3] else rows[-1][4]), flush=True)
  table = suite_table(rows)
  if out and match and os.path.exists(out):
    with open(out) as f:
      table = merge_rows(f.read(), table, PAPER_SUITE, devices_list)
  if out:
    with open(out, 'w') as f:
      f.write(table + '\n')
  return table


def suite_table(rows):
  def gib(b):
    return f'{b / GIB:.2f}'
  lines = ['| config (stage) | devices | mesh | parameters | params + optimizer '
           '/ device (GiB) | temporaries (GiB) | peak (GiB) | fits 16 GiB | '
           'GFLOP / step / device, analytic | GFLOP, XLA | compile (s) |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for spec, stage, devices, r, error in rows:
    name = f'`{spec}` ({stage})'
    if r is None:
      lines.append(f'| {name} | {devices} | failed: {error} |' + ' |' * 8)
      continue
    mesh = ' '.join(f'{k}={v}' for k, v in r['mesh'].items() if v > 1) or '1'
    lines.append(
        f'| {name} | {devices} | {mesh} | {r["params"] / 1e6:.1f}M | '
        f'{gib(r["params_bytes"] + r["opt_state_bytes"])} | '
        f'{gib(r["temp_bytes"])} | {gib(r["peak_bytes"])} | '
        f'{"yes" if r["peak_bytes"] <= 16 * GIB else "no"} | '
        f'{r["model_flops_per_step"] / r["devices"] / 1e9:.0f} | '
        f'{r["flops_per_step"] / 1e9:.0f} | {r["compile_seconds"]:.1f} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if _SUITE.value:
    print(run_suite([int(d) for d in _SUITE_DEVICES.value], _OUT.value,
                    _SUITE_MATCH.value))
    return
  if _CONFIG.value is None:
    raise app.UsageError('give --config=FILE[:ARG] (or --suite=paper)')
  mesh = parse_mesh(_MESH.value)
  import jax  # pylint: disable=g-import-not-at-top
  if _DEVICES.value < 1:
    raise app.UsageError(f'--devices={_DEVICES.value} must be >= 1')
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', _DEVICES.value)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from core.errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    report = check(_CONFIG.value, _STAGE.value, mesh, _BATCH.value)
  except ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if _JSON.value:
    print(json.dumps(report, sort_keys=True))
  else:
    print(format_report(report, _MEMORY.value))
  if _MEMORY.value and report.get('peak_bytes', 0) > _MEMORY.value * GIB:
    sys.exit(1)


def run():
  try:
    remaining = flags.FLAGS(sys.argv)
    if _CONFIG.value is not None:
      _CONFIG.value.keys()            # a file that failed to load raises here
  except Exception as e:  # pylint: disable=broad-except
    from distill.config_lib import explain_flag_error  # pylint: disable=g-import-not-at-top
    print(explain_flag_error(sys.argv, e), file=sys.stderr)
    sys.exit(2)
  app.run(main, flags_parser=lambda _: remaining)


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  run()
