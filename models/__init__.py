"""Flax (linen) models, registered by name and sized by config.

    model = models.build('resnet', num_classes=10, depth=20, width=1.0)
    logits = model.apply(variables, images, train=False)

Every model takes `(inputs, train)` and returns float32 logits; it sows its
penultimate features as `intermediates/pre_logits` for methods that need
embeddings. Parameters carry logical axis names (`models/layers.py`).
"""
import dataclasses

import jax.numpy as jnp

from core.errors import ConfigError, check_choice
from models import attention
from models import laurel  # noqa: F401  (registers the LAuReL residuals)
from models import layers
from models import residual
from models.cnn import SmallCNN
from models.mlp import MLP
from models.resnet import CifarResNet, ImageNetResNet
from models.transformer import TransformerLM

MODELS = {
    'mlp': MLP,
    'cnn': SmallCNN,
    'resnet': CifarResNet,
    'resnet_imagenet': ImageNetResNet,
    'transformer_lm': TransformerLM,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _fits(value, like):
  """Whether a config value has the type of a field's default `like`."""
  if isinstance(like, bool):
    return isinstance(value, bool)
  if isinstance(like, int):
    return isinstance(value, int) and not isinstance(value, bool)
  if isinstance(like, float):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(like, str):
    return isinstance(value, str)
  if isinstance(like, (tuple, list)) and like:
    return isinstance(value, (tuple, list)) and all(
        _fits(v, like[0]) for v in value)
  return True


def _check_type(model, key, value, default):
  if key == 'residual_kw' or _fits(value, default):
    return
  kind = type(default).__name__
  if isinstance(default, (tuple, list)):
    kind = f'a sequence of {type(default[0]).__name__}'
  raise ConfigError(f'model.{key}={value!r} must be {kind} (model {model!r}, '
                    f'default {default!r})')


def build(name, num_classes, dtype='float32', **kwargs):
  """The model registered as `name` with config kwargs, checked by field."""
  check_choice('model', name, MODELS)
  check_choice('model.dtype', dtype, DTYPES)
  cls = MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)
            if f.name not in ('parent', 'name', 'num_classes', 'dtype')}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(f'unknown option(s) {", ".join(unknown)} for model '
                      f'{name!r}; valid choices: {", ".join(sorted(fields))}')
  defaults = {f.name: f.default for f in dataclasses.fields(cls)}
  for key, value in kwargs.items():
    _check_type(name, key, value, defaults[key])
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  if 'residual_kw' in kwargs:
    kwargs['residual_kw'] = residual.freeze_options(kwargs['residual_kw'])
  if 'residual' in kwargs:                           # checks name and options
    residual.history_length(kwargs['residual'], kwargs.get('residual_kw'))
  if 'remat' in kwargs:
    check_choice('model.remat', kwargs['remat'], layers.REMAT_POLICIES)
  if 'conv' in kwargs:
    check_choice('model.conv', kwargs['conv'], layers.CONV_IMPLEMENTATIONS)
    if kwargs['conv'] == 'onednn':       # one line where it cannot be built
      layers.kernels_for('onednn')
  if 'attention' in kwargs:
    check_choice('model.attention', kwargs['attention'],
                 attention.IMPLEMENTATIONS)
  model = cls(num_classes=num_classes, dtype=DTYPES[dtype], **kwargs)
  if hasattr(model, 'check_family'):     # the LM's family fields fit together
    model.check_family()
  return model
