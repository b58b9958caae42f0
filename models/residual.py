"""The residual connection as one swappable piece.

Every residual block in `models/` ends by combining its input (or projected
shortcut) `x` with its branch `f(x)` through a module from this registry,
chosen by the model's `residual` field (a string, so it can come from a
config) and its options `residual_kw`:

    out = residual_module(kind, residual_kw, name='residual')(x, fx, prev)

`standard` is `x + f(x)`. LAuReL (`models/laurel.py`) registers its variants
here. `prev` is a fixed-size tuple of the states that entered the previous
blocks, newest first (x_{i-1}, x_{i-2}, ...), for variants that read earlier
activations; its length is `history_length(kind, residual_kw)` (0 for the
standard residual). Models keep it with `push_history` and, where the shape of
the stream changes (a new ResNet stage), restart it with `fit_history`.
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from core import registry
from core.errors import ConfigError, check_choice

RESIDUALS = {}
register = registry.registrar(RESIDUALS, 'residual')


@register('standard')
class StandardResidual(nn.Module):
  """The usual residual connection: x + f(x)."""
  dtype: jnp.dtype = jnp.float32

  @classmethod
  def history_length(cls, **unused_kw):
    return 0

  @nn.compact
  def __call__(self, x, fx, prev=()):
    del prev
    return x + fx


def options(residual_kw):
  """`residual_kw` (None, a dict, a ConfigDict or (key, value) pairs) as a
  dict."""
  if residual_kw is None:
    return {}
  if isinstance(residual_kw, (tuple, list)):
    return dict(residual_kw)
  return dict(residual_kw.items())


def freeze_options(residual_kw):
  """Hashable form of `residual_kw` for a Flax module field."""
  return tuple(sorted(options(residual_kw).items()))


def _fields(cls):
  return {f.name for f in dataclasses.fields(cls)
          if f.name not in ('parent', 'name', 'dtype')}


def _check(kind, kw):
  """The class of `kind` and the options of `kw` it takes. An option that
  another registered residual takes is dropped (so a config can switch
  `model.residual` back to 'standard' and keep its LAuReL options); one that
  none takes is an error."""
  check_choice('model.residual', kind, RESIDUALS)
  cls = RESIDUALS[kind]
  known = set().union(*map(_fields, RESIDUALS.values()))
  unknown = sorted(set(kw) - known)
  if unknown:
    raise ConfigError(
        f'unknown option(s) {", ".join(unknown)} in model.residual_kw; valid '
        f'choices: {", ".join(sorted(known))}')
  return cls, {k: v for k, v in kw.items() if k in _fields(cls)}


def residual_module(kind, residual_kw=None, **module_kw):
  """The residual module registered as `kind`, configured by `residual_kw`."""
  cls, kw = _check(kind, options(residual_kw))
  return cls(**kw, **module_kw)


def history_length(kind, residual_kw=None):
  """How many earlier block inputs the residual `kind` reads."""
  cls, kw = _check(kind, options(residual_kw))
  return cls.history_length(**kw)


def init_history(length, like):
  """`length` zero states shaped like `like` (zeros add nothing: the maps
  applied to earlier activations are linear without bias)."""
  return tuple(jnp.zeros_like(like) for _ in range(length))


def push_history(prev, x):
  """The history after a block whose residual read `x`: newest first, same
  length."""
  return ((x,) + tuple(prev))[:len(prev)]


def fit_history(prev, x):
  """`prev`, or fresh zeros where the stream's shape changed (a new stage)."""
  if all(p.shape == x.shape and p.dtype == x.dtype for p in prev):
    return tuple(prev)
  return init_history(len(prev), x)
