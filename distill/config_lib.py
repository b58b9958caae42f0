"""Checks of a resolved config, durations in steps or epochs, config files.

Every check raises `ConfigError` with one line that names the bad value and
the valid choices; `launch.main` prints it and exits with status 2.
"""
import math

from core import defaults
from core.errors import ConfigError, check_choice, one_line

PARTS = ('labeled', 'validation', 'unlabeled')
EVAL_SPLITS = PARTS + ('test',)
# config.init_from_state: what `init_from` takes from the other run
# (distill/train.py: Trainer.init_from).
INIT_FROM_STATES = ('params', 'all')


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
  methods.get(config.method).options_of(config.method_kw.to_dict())
  check_choice('optimizer.name', config.optimizer.name, optim.OPTIMIZERS)
  check_choice('schedule.name', config.schedule.name, optim.SCHEDULES)
  validate_data(config.data)
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
  lr = config.optimizer.lr
  if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
    raise ConfigError(f'optimizer.lr must be a finite number > 0, got {lr}')
  check_choice('init_from_state', config.get('init_from_state', 'params'),
               INIT_FROM_STATES)
  duration(config, 'total', 1)  # one of total_steps / total_epochs is set
  init = config.get('init')
  if init is not None and init.get('method'):
    check_choice('init.method', init.method, INIT_METHODS)
    if init.method == 'guide' and config.model_name != 'transformer_lm':
      raise ConfigError('init.method=guide projects Transformer LMs; '
                        f'model is {config.model_name!r}')
    if init.method == 'pretrained':
      if config.model_name != 'resnet_imagenet':
        raise ConfigError('init.method=pretrained loads ResNet checkpoints '
                          'into model_name=resnet_imagenet; model is '
                          f'{config.model_name!r}')
      if not init.get('weights'):
        raise ConfigError('init.method=pretrained needs init.weights (a '
                          '.safetensors or .pth ResNet checkpoint)')
      from models import resnet_weights  # pylint: disable=g-import-not-at-top
      check_choice('init.head', init.get('head') or 'auto',
                   resnet_weights.HEADS)
  if (init is not None and init.get('pretrained_on') and
      init.get('method') != 'pretrained'):
    raise ConfigError(f'init.pretrained_on={init.pretrained_on!r} declares '
                      'where init.weights were trained; it needs '
                      'init.method=pretrained (valid choices: set both, or '
                      'neither)')


# config.init.method: how a model's parameters start ('' its own init):
# guide (an LM student from its teacher), pretrained (a ResNet from a
# torchvision/timm/Hugging Face checkpoint, init.weights; init.head).
INIT_METHODS = ('guide', 'pretrained')


def validate_data(data):
  """The data block's values, checked before anything is prepared or
  written: the dataset's name, a language model's tokenizer and window, an
  out-of-distribution set's name, the carving sizes' types."""
  from distill.data import datasets, tokenizers  # pylint: disable=g-import-not-at-top
  spec = datasets.spec(data)
  if data.name == 'image_folder' and not (
      isinstance(data.get('image_size'), int) and data.image_size > 0):
    raise ConfigError('data.name=image_folder needs data.image_size > 0 (the '
                      f'model\'s input size, e.g. 224), got '
                      f'{data.get("image_size")!r}')
  if spec.task == 'lm':
    tokenizers.check(data.get('tokenizer') or 'char')
    if not isinstance(data.get('seq_len'), int) or data.seq_len < 1:
      raise ConfigError(f'data.seq_len must be an integer >= 1, got '
                        f'{data.get("seq_len")!r}')
    vocab = data.get('vocab_size') or 0
    if not isinstance(vocab, int) or vocab < 0:
      raise ConfigError(f'data.vocab_size must be an integer >= 0, got '
                        f'{vocab!r}')
    if data.get('tokenizer') == 'spm' and vocab <= 0:
      raise ConfigError('data.tokenizer=spm needs data.vocab_size > 0 (e.g. '
                        '8000)')
  if data.name == 'mnist1d' and (data.get('num_samples') or 5000) < 1:
    raise ConfigError(f'data.num_samples must be >= 1, got '
                      f'{data.num_samples}')
  for key in ('labeled', 'validation', 'unlabeled'):
    if not isinstance(data.get(key), int):
      raise ConfigError(f'data.{key} must be an integer (-1: the rest), got '
                        f'{data.get(key)!r}')
  ood = datasets.ood_config(data)
  if ood is not None:
    try:
      datasets.spec(ood)
    except ConfigError as e:
      raise ConfigError(f'data.unlabeled_from: {e}') from e


def validate_stage(config, part_size=None, part='', prefix=''):
  """What a stage's config can be checked for before any training:
  `validate`, its model's options, the mesh and the batch against its
  devices and the `part_size` examples it trains on. `prefix` names the stage
  in the message (e.g. 'teacher.config: ')."""
  import jax  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from distill import sharding  # pylint: disable=g-import-not-at-top
  try:
    validate(config)
    models.build(config.model_name, 2, config.model_dtype,
                 **config.model.to_dict())
    init = config.get('init')
    if init is not None and init.get('method') == 'pretrained':
      check_pretrained(config)
    mesh = sharding.stage_mesh(config)
    validate_for_mesh(config, sharding.batch_shards(mesh),
                      jax.process_count())
    if part_size is not None:
      check_batch_fits(config, part_size, part)
  except ConfigError as e:
    if prefix:
      raise ConfigError(prefix + str(e)) from e
    raise


def check_pretrained(config):
  """init.weights fit the model (every key, every shape; the head as
  init.head says), checked against its variables' shapes before any
  workdir is made (models/resnet_weights.py)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import models  # pylint: disable=g-import-not-at-top
  from distill.data import datasets  # pylint: disable=g-import-not-at-top
  from models import resnet_weights  # pylint: disable=g-import-not-at-top
  model = models.build(config.model_name, datasets.num_classes(config.data),
                       config.model_dtype, **config.model.to_dict())
  shape = (1,) + tuple(datasets.input_shape(config.data))
  like = nn.meta.unbox(jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape))))
  resnet_weights.load(config.init.weights, like,
                      config.init.get('head') or 'auto')


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
  check_batch_fits(config, len(data.parts[config.data.train_on]),
                   config.data.train_on)


def check_batch_fits(config, part_size, part):
  """The training part is not empty and holds at least one batch."""
  if not part_size:
    raise ConfigError(f'data.train_on={part!r} is empty; '
                      'set data.labeled/validation/unlabeled sizes')
  if config.batch_size > part_size:
    raise ConfigError(f'batch_size={config.batch_size} is larger than the '
                      f'{part_size} examples of the part it trains on '
                      f'({part}); choose batch_size <= {part_size}')


def load_file(spec):
  """get_config(arg) of a `FILE[:ARG]` spec, as the --config flag does; a
  missing or broken file is one ConfigError line."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise ConfigError(f'--config={spec}: no config file {path}')
  module_spec = importlib.util.spec_from_file_location('_config', path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f'--config={spec}: {e.filename} line {e.lineno}: '
                      f'{e.msg}') from e
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'--config={spec}: {path} has no get_config(arg)')
  return module.get_config(arg or None)


def explain_flag_error(argv, error):
  """One line for a bad --config / --config.KEY flag, naming the file or the
  key, with the valid choices."""
  cause = error
  while cause.__cause__ is not None or cause.__context__ is not None:
    cause = cause.__cause__ or cause.__context__
  spec = next((a.split('=', 1)[1] for a in argv
               if a.startswith('--config=')), None)
  if spec is None:
    return f'error: {one_line(cause)}'
  try:
    config = load_file(spec)
  except ConfigError as e:
    return f'error: {e}'
  except Exception as e:  # pylint: disable=broad-except
    return f'error: --config={spec}: {type(e).__name__}: {one_line(e)}'
  for a in argv:
    if not a.startswith('--config.'):
      continue
    path, _, value = a[len('--config.'):].partition('=')
    moved = defaults.moved_key(path)
    if moved != path:
      return (f'error: --config.{path} is now --config.{moved} (a method\'s '
              'fit options are with its other options)')
    node, done = config, []
    for key in path.split('.'):
      if not hasattr(node, 'keys') or key not in node:
        valid = ', '.join(sorted(node.keys())) if hasattr(node, 'keys') else ''
        where = 'config.' + '.'.join(done) if done else 'config'
        return (f'error: unknown config key {path!r}; valid choices in '
                f'{where}: {valid}')
      node, done = node[key], done + [key]
    expected = _type_error(value, node)
    if expected:
      return f'error: --config.{path}={value}: expected {expected}'
  return f'error: {one_line(cause)}'


def _type_error(text, default):
  """What `text` should be to override `default`, if it cannot, else ''."""
  import ast  # pylint: disable=g-import-not-at-top
  try:
    if isinstance(default, bool):
      if text.lower() not in ('true', 'false', '1', '0'):
        return 'true or false'
    elif isinstance(default, int):
      int(text)
    elif isinstance(default, float):
      float(text)
    elif isinstance(default, (tuple, list)):
      if not isinstance(ast.literal_eval(text), (tuple, list)):
        return 'a tuple, e.g. (1, 2)'
  except (ValueError, SyntaxError):
    return {int: 'an integer', float: 'a number'}.get(
        type(default), f'a {type(default).__name__}')
  return ''
