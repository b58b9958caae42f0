"""LAuReL: Learned Augmented Residual Layer (Menghani, Kumar, Kumar, ICML 2025).

Replaces the residual `x_{i+1} = f(x_i) + x_i` of a block with

    x_{i+1} = alpha * f(x_i) + beta * g(x_i, x_{i-1}, ..., x_{i-k+1})

from three pieces that combine (spec: ../shared/docs/papers.md, section 5):

  RW  learned residual weights alpha, beta (scalars, or vectors of width D);
      `rw_mode='sigmoid'`: alpha = 2 sigmoid(a), beta = 2 sigmoid(b), 1 and 1
      at init, so the block starts as the plain residual (default);
      `rw_mode='softmax'`: (alpha, beta) = softmax(a, b), 0.5 and 0.5 at init.
  LR  g = x + B A x, a rank-r map D -> r -> D; B starts at zero, A is Xavier
      (`a_init='xavier'`, ResNets) or column-orthogonal (`'colorth'`, LMs:
      A_ij = 1/sqrt(rD) if i mod r == j).
  PA  g = x + sum_{j<k} gamma_j h(x_{i-j}) over the last k block inputs, with
      h the identity (`pa_h='identity'`, gamma starts at 0) or a low-rank map
      shared over j (`pa_h='lowrank'`, gamma starts at 1). With LR, each
      previous activation has its own low-rank pair (eq. 6).

Registered names (pass as `--config.model.residual=NAME`, options as
`--config.model.residual_kw.rank=32`): laurel_rw, laurel_lr, laurel_pa,
laurel_rw_lr, laurel_rw_pa, laurel_lr_pa, laurel_rw_lr_pa.

Added parameters per block (the paper's Table 4): RW 2 (2D as vectors),
LR 2rD, PA k (identity h) or 2rD + k (low-rank h), LR+PA 2rkD + k, plus 2 for
RW in the combinations. Every variant with its default options computes
exactly f(x) + x at initialisation. Scalars and vectors (alpha, beta, gamma)
have ndim <= 1, so the optimizers in `distill/optim.py` never decay them.
"""
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from core.errors import ConfigError, check_choice
from models import layers
from models.residual import register

RW_MODES = ('sigmoid', 'softmax')
A_INITS = ('xavier', 'colorth')
PA_H = ('identity', 'lowrank')


def column_orthogonal(key, shape, dtype=jnp.float32):
  """A_ij = 1/sqrt(rD) where i mod r == j, else 0 (shape (D, r))."""
  del key
  d, r = shape
  i = jnp.arange(d)[:, None]
  j = jnp.arange(r)[None, :]
  return jnp.where(i % r == j, 1.0 / jnp.sqrt(d * r), 0.0).astype(dtype)


class Laurel(nn.Module):
  """One LAuReL residual: `(x, fx, prev) -> alpha fx + beta g(x, prev)`.

  `x` is the block input (or its projected shortcut) of width D on the last
  axis (channels for NHWC feature maps); `prev` holds the earlier block
  inputs x_{i-1}, ..., x_{i-k+1}, newest first (zeros where there are none).
  """
  rw: ClassVar[bool] = False        # which pieces: fixed per registered name
  lr: ClassVar[bool] = False
  pa: ClassVar[bool] = False
  rank: int = 16
  pa_k: int = 3
  rw_mode: str = 'sigmoid'
  rw_vector: bool = False
  a_init: str = 'xavier'
  pa_h: str = 'identity'
  dtype: jnp.dtype = jnp.float32

  @classmethod
  def history_length(cls, pa_k=3, **unused_kw):
    return pa_k - 1 if cls.pa else 0

  def _check(self, width):
    check_choice('model.residual_kw.rw_mode', self.rw_mode, RW_MODES)
    check_choice('model.residual_kw.a_init', self.a_init, A_INITS)
    check_choice('model.residual_kw.pa_h', self.pa_h, PA_H)
    if self.lr or (self.pa and self.pa_h == 'lowrank'):
      if not 1 <= self.rank <= width:
        raise ConfigError(f'model.residual_kw.rank={self.rank} must be in '
                          f'[1, {width}] (the width it maps from)')
    if self.pa and self.pa_k < 1:
      raise ConfigError(f'model.residual_kw.pa_k={self.pa_k} must be >= 1 '
                        '(the number of activations PA mixes, x_i included)')

  def _low_rank(self, name, width):
    """The map v -> B A v: down to `rank` by A (D, r), up by B (r, D) = 0."""
    a_init = (nn.initializers.xavier_uniform() if self.a_init == 'xavier'
              else column_orthogonal)
    a = self.param(f'{name}_A', layers.partitioned(a_init, (None, None)),
                   (width, self.rank)).astype(self.dtype)
    b = self.param(f'{name}_B', layers.partitioned(nn.initializers.zeros,
                                                   (None, None)),
                   (self.rank, width)).astype(self.dtype)
    return lambda v: jnp.einsum('...r,rd->...d',
                                jnp.einsum('...d,dr->...r', v, a), b)

  def _weights(self, width):
    shape = (width,) if self.rw_vector else ()
    a = self.param('alpha', nn.initializers.zeros, shape)
    b = self.param('beta', nn.initializers.zeros, shape)
    if self.rw_mode == 'softmax':
      w = jax.nn.softmax(jnp.stack([a, b]), axis=0)
      return w[0], w[1]
    return 2 * jax.nn.sigmoid(a), 2 * jax.nn.sigmoid(b)

  @nn.compact
  def __call__(self, x, fx, prev=()):
    width = x.shape[-1]
    self._check(width)
    if not self.pa:
      g = x + self._low_rank('lr', width)(x) if self.lr else x
    else:
      acts = ((x,) + tuple(prev))[:self.pa_k]
      if len(acts) != self.pa_k:
        raise ValueError(f'LAuReL-PA needs {self.pa_k - 1} earlier '
                         f'activations, got {len(prev)}')
      identity = not self.lr and self.pa_h == 'identity'
      gamma = self.param('gamma', nn.initializers.zeros if identity
                         else nn.initializers.ones, (self.pa_k,))
      if not self.lr and not identity:
        shared = self._low_rank('pa', width)    # eq. 4: one h_i for every j
      g = x
      for j, act in enumerate(acts):
        if self.lr:
          h = self._low_rank(f'pa{j}', width)(act)   # eq. 6: a pair per j
        else:
          h = act if identity else shared(act)
        g = g + gamma[j].astype(self.dtype) * h
    if not self.rw:
      return fx + g
    alpha, beta = self._weights(width)
    return alpha.astype(self.dtype) * fx + beta.astype(self.dtype) * g


def _variant(name, **flags):
  cls = type(f'Laurel_{name}', (Laurel,), {
      **flags, '__doc__': f'LAuReL-{name.upper().replace("_", "+")} (see Laurel).'})
  return register(f'laurel_{name}')(cls)


for _name in ('rw', 'lr', 'pa', 'rw_lr', 'rw_pa', 'lr_pa', 'rw_lr_pa'):
  _variant(_name, **{p: p in _name.split('_') for p in ('rw', 'lr', 'pa')})


def learned_weights(params, rw_mode='sigmoid'):
  """The learned LAuReL scalars of a model's `params`, as they act:
  {'alpha': [...], 'beta': [...], 'gamma': [...]} (every element of every
  block's, flattened; alpha and beta through `rw_mode`'s map, 1 and 1 at
  initialisation for sigmoid, 0.5 and 0.5 for softmax; gamma as stored).
  Empty lists for what the model does not have."""
  out = {'alpha': [], 'beta': [], 'gamma': []}

  def walk(tree):
    if not hasattr(tree, 'items'):
      return
    if 'alpha' in tree and 'beta' in tree:
      a = np.asarray(tree['alpha'], np.float64).ravel()
      b = np.asarray(tree['beta'], np.float64).ravel()
      if rw_mode == 'softmax':
        m = np.maximum(a, b)
        ea, eb = np.exp(a - m), np.exp(b - m)
        a, b = ea / (ea + eb), eb / (ea + eb)
      else:
        a, b = 2 / (1 + np.exp(-a)), 2 / (1 + np.exp(-b))
      out['alpha'] += a.tolist()
      out['beta'] += b.tolist()
    if 'gamma' in tree and not hasattr(tree['gamma'], 'items'):
      out['gamma'] += np.asarray(tree['gamma'], np.float64).ravel().tolist()
    for key, value in tree.items():
      if key not in ('alpha', 'beta', 'gamma'):
        walk(value)
  walk(params)
  return out
