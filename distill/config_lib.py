"""Checks of a resolved config, durations in steps or epochs, the manifest.

Every check raises `ConfigError` with one line that names the bad value and
the valid choices; `launch.main` prints it and exits with status 2.
"""
import json
import os
import sys

import jax

from distill.errors import ConfigError, check_choice

PARTS = ('labeled', 'validation', 'unlabeled')
EVAL_SPLITS = PARTS + ('test',)


def duration(cfg, prefix, steps_per_epoch, default=None):
  """Steps from `{prefix}_steps` or `{prefix}_epochs` (exactly one, > 0)."""
  steps = cfg.get(f'{prefix}_steps', -1)
  epochs = cfg.get(f'{prefix}_epochs', -1)
  if steps is not None and steps > 0 and epochs is not None and epochs > 0:
    raise ConfigError(f'set {prefix}_steps={steps} or '
                      f'{prefix}_epochs={epochs}, not both')
  if steps is not None and steps > 0:
    return int(steps)
  if epochs is not None and epochs > 0:
    return max(1, int(round(epochs * steps_per_epoch)))
  if default is None:
    raise ConfigError(f'set {prefix}_steps or {prefix}_epochs (> 0)')
  return default


def eval_names(config):
  return [s.strip() for s in config.eval_splits.split(',') if s.strip()]


def validate(config):
  """Checks that need no data or devices: names, choices, value ranges."""
  # Imported here: the registries import models and methods.
  import models  # pylint: disable=g-import-not-at-top
  from distill import methods, optim  # pylint: disable=g-import-not-at-top
  from distill.data import datasets, pipeline, splits  # pylint: disable=g-import-not-at-top

  check_choice('model', config.model_name, models.MODELS)
  check_choice('model_dtype', config.model_dtype, models.DTYPES)
  check_choice('method', config.method, methods.METHODS)
  methods.check_kwargs(config.method, methods.METHODS[config.method],
                       config.method_kw.to_dict())
  check_choice('optimizer.name', config.optimizer.name, optim.OPTIMIZERS)
  check_choice('schedule.name', config.schedule.name, optim.SCHEDULES)
  datasets.spec(config.data)
  check_choice('data.carve', config.data.carve, splits.MODES)
  check_choice('data.train_on', config.data.train_on, PARTS)
  if config.data.augment:
    check_choice('data.augment', config.data.augment, pipeline.AUGMENTATIONS)
  resized = config.data.image_size > 0
  if (config.data.augment == 'inception_crop' and not resized) or (
      resized and config.data.augment in ('crop_flip', 'flip')):
    raise ConfigError(
        f'data.augment={config.data.augment!r} does not fit data.image_size='
        f'{config.data.image_size}; valid choices: inception_crop or "" with '
        'image_size > 0, crop_flip, flip or "" without')
  for name in eval_names(config):
    check_choice('eval_splits entry', name, EVAL_SPLITS)
  for key in ('batch_size', 'eval_batch_size', 'log_every_steps',
              'checkpoint_every_steps', 'keep_checkpoints'):
    if config[key] < 1:
      raise ConfigError(f'{key} must be >= 1, got {config[key]}')
  if config.optimizer.lr <= 0:
    raise ConfigError(f'optimizer.lr must be > 0, got {config.optimizer.lr}')
  duration(config, 'total', 1)  # one of total_steps / total_epochs is set


def validate_for_mesh(config, batch_shards, process_count):
  for key in ('batch_size', 'eval_batch_size'):
    if config[key] % batch_shards or config[key] % process_count:
      raise ConfigError(
          f'{key}={config[key]} is not divisible by the {batch_shards} '
          f'batch shards of the mesh (data x fsdp) and {process_count} '
          'processes; choose a multiple')


def validate_for_data(config, data):
  """Checks that need the loaded dataset: task/model match, non-empty parts."""
  lm = data.spec.task == 'lm'
  if lm != (config.model_name == 'transformer_lm'):
    raise ConfigError(
        f'model {config.model_name!r} does not fit dataset '
        f'{config.data.name!r} ({data.spec.task}); valid choices: '
        + ('transformer_lm' if lm else 'cnn, mlp, resnet, resnet_imagenet'))
  if not len(data.parts[config.data.train_on]):
    raise ConfigError(f'data.train_on={config.data.train_on!r} is empty; '
                      'set data.labeled/validation/unlabeled sizes')


def write_manifest(config, workdir):
  """Writes config.json and command.txt; refuses to reuse a workdir whose
  run had a different config (its checkpoints would be resumed)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  resolved = json.loads(config.to_json_best_effort(sort_keys=True))
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous != resolved:
      diff = sorted(_diff_keys(previous, resolved))
      raise ConfigError(
          f'workdir {workdir} holds a run with another config (differs in '
          f'{", ".join(diff[:5])}); use a new --workdir to keep both')
  else:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(resolved, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  with open(os.path.join(workdir, 'command.txt'), 'a') as f:
    f.write(' '.join([os.path.basename(sys.executable)] + sys.argv) + '\n')
  with open(os.path.join(workdir, 'manifest.json'), 'w') as f:
    json.dump({'jax': jax.__version__, 'devices': jax.device_count(),
               'processes': jax.process_count(),
               'platform': jax.devices()[0].platform}, f)


def _diff_keys(a, b, prefix=''):
  for k in set(a) | set(b):
    va, vb = a.get(k), b.get(k)
    if isinstance(va, dict) and isinstance(vb, dict):
      yield from _diff_keys(va, vb, f'{prefix}{k}.')
    elif va != vb:
      yield f'{prefix}{k}'


def load_file(spec):
  """get_config(arg) of a `FILE[:ARG]` spec, as the --config flag does."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
