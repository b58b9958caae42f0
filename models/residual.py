"""The residual connection as one swappable piece.

Every residual block in `models/` combines its shortcut `x` and its branch
`f(x)` through a module from this registry, chosen by the model's `residual`
field (a string, so it can come from a config):

    out = residual_module(residual, name='residual')(x, fx)

`standard` is `x + f(x)`. Variants such as LAuReL register themselves here
with `@register('name')` and receive the same `(x, fx)` call; they may keep
parameters and state of their own.
"""
import flax.linen as nn

from distill.errors import check_choice

RESIDUALS = {}


def register(name):
  def wrap(cls):
    RESIDUALS[name] = cls
    return cls
  return wrap


@register('standard')
class StandardResidual(nn.Module):
  """The usual residual connection: x + f(x)."""

  @nn.compact
  def __call__(self, x, fx):
    return x + fx


def residual_module(kind, **kwargs):
  """The residual module registered as `kind`."""
  check_choice('residual', kind, RESIDUALS)
  return RESIDUALS[kind](**kwargs)
