"""Flax (linen) models, registered by name and sized by config.

    model = models.build('resnet', num_classes=10, depth=20, width=1.0)
    logits = model.apply(variables, images, train=False)

Every model takes `(inputs, train)` and returns float32 logits; it sows its
penultimate features as `intermediates/pre_logits` for methods that need
embeddings. Parameters carry logical axis names (`models/layers.py`).
"""
import dataclasses

import jax.numpy as jnp

from distill.errors import ConfigError, check_choice
from models import laurel  # noqa: F401  (registers the LAuReL residuals)
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
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  if 'residual_kw' in kwargs:
    kwargs['residual_kw'] = residual.freeze_options(kwargs['residual_kw'])
  if 'residual' in kwargs:                           # checks name and options
    residual.history_length(kwargs['residual'], kwargs.get('residual_kw'))
  return cls(num_classes=num_classes, dtype=DTYPES[dtype], **kwargs)
