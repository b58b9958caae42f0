"""Layers whose parameters carry logical axis names, activation sharding
constraints, and rematerialisation.

Logical names of parameters (mapped to mesh axes by the rules in
`distill/sharding.py`): 'embed' (model width), 'mlp' (hidden width of MLPs),
'heads', 'kv' (per-head width), 'vocab', 'classes', 'conv_in', 'conv_out'.
Activations are named 'activation_batch', 'activation_length',
'activation_embed', 'activation_heads', 'activation_kv', 'activation_mlp',
'activation_vocab', 'activation_height', 'activation_width',
'activation_channels', 'activation_classes' and constrained with
`constrain` (the train step sets their rules). A `None` name is never
sharded.
"""
import contextlib
import contextvars

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from core.errors import check_choice

default_kernel_init = nn.initializers.lecun_normal()


def partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


class Dense(nn.Module):
  """nn.Dense with logical names for its kernel (in, out) and bias (out,)."""
  features: int
  names: tuple = ('embed', 'mlp')
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  kernel_init: object = default_kernel_init

  @nn.compact
  def __call__(self, x):
    return nn.Dense(
        self.features, use_bias=self.use_bias, dtype=self.dtype,
        kernel_init=partitioned(self.kernel_init, self.names),
        bias_init=partitioned(nn.initializers.zeros, self.names[-1:]),
        name='dense')(x)


def conv(features, kernel, strides=1, dtype=jnp.float32, name=None,
         use_bias=False):
  """nn.Conv (SAME padding) with kernel names (None, None, conv_in, conv_out)."""
  return nn.Conv(
      features, kernel, strides=strides, padding='SAME', use_bias=use_bias,
      dtype=dtype,
      kernel_init=partitioned(nn.initializers.kaiming_normal(),
                              (None,) * len(kernel) + ('conv_in', 'conv_out')),
      bias_init=partitioned(nn.initializers.zeros, ('conv_out',)),
      name=name)


def batch_norm(train, dtype=jnp.float32, name=None):
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      scale_init=partitioned(nn.initializers.ones, ('conv_out',)),
      bias_init=partitioned(nn.initializers.zeros, ('conv_out',)),
      name=name)


_ACTIVATION_RULES = contextvars.ContextVar('activation_rules', default=())


@contextlib.contextmanager
def activation_rules(rules):
  """Activation constraints follow `rules` ((logical name, mesh axes)
  pairs) inside this context; the train step enters it while tracing.
  (Not flax's `nn.logical_axis_rules`, which also re-constrains boxed
  parameters.)"""
  token = _ACTIVATION_RULES.set(tuple(rules))
  try:
    yield
  finally:
    _ACTIVATION_RULES.reset(token)


def constrain(x, names):
  """Constrains activation `x` to the sharding its logical axis `names` map
  to under the rules in force (`activation_rules`, set by the train step) on
  the current mesh (`jax.set_mesh`). Each name's mesh axes are taken in
  order while they divide the dimension and are unused; without rules or a
  mesh (a plain `model.apply`) `x` is returned as it is."""
  rules = _ACTIVATION_RULES.get()
  if not rules:
    return x
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  table = dict(rules)
  spec, used = [], set()
  for dim, name in zip(x.shape, names):
    axes = table.get(name) or ()
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    chosen, size = [], 1
    for axis in axes:
      n = mesh.shape[axis]
      if axis not in used and n > 1 and dim % (size * n) == 0:
        chosen.append(axis)
        size *= n
    used.update(chosen)
    spec.append(tuple(chosen) if len(chosen) > 1 else
                (chosen[0] if chosen else None))
  return jax.lax.with_sharding_constraint(x, P(*spec))


# model.remat: what a rematerialised block keeps for the backward pass.
REMAT_POLICIES = {
    'none': None,                                     # no rematerialisation
    'full': jax.checkpoint_policies.nothing_saveable,  # recompute everything
    # keep every matmul output, recompute the elementwise work in between
    'dots': jax.checkpoint_policies.checkpoint_dots,
    # keep the projections' and MLP's matmul outputs (no batch dimension in
    # the dot), recompute attention scores and elementwise work
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat(module_cls, policy, static_argnums=(), prevent_cse=True):
  """`module_cls` rematerialised with the named `policy` (REMAT_POLICIES),
  or unchanged for 'none'."""
  check_choice('model.remat', policy, REMAT_POLICIES)
  if policy == 'none':
    return module_cls
  return nn.remat(module_cls, policy=REMAT_POLICIES[policy],
                  static_argnums=static_argnums, prevent_cse=prevent_cse)
