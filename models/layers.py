"""Layers whose parameters carry logical axis names.

Logical names used across models (mapped to mesh axes by the rules in
`distill/sharding.py`): 'embed' (model width), 'mlp' (hidden width of MLPs),
'heads', 'kv' (per-head width), 'vocab', 'classes', 'conv_in', 'conv_out'.
A `None` name is never sharded.
"""
import flax.linen as nn
import jax.numpy as jnp

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
