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

from core.errors import ConfigError, check_choice
from models.kernels import onednn

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


IMAGE = ('activation_batch', 'activation_height', 'activation_width',
         'activation_channels')

# model.conv: which convolution a conv model's layers run.
CONV_IMPLEMENTATIONS = {
    # oneDNN's weight gradient on CPU where it is built, XLA's elsewhere
    'auto': 'auto',
    'xla': 'xla',          # XLA's convolution everywhere
    'onednn': 'onednn',    # oneDNN's weight gradient (CPU; built or an error)
}


def _onednn_conv(lhs, *args, **kwargs):
  """oneDNN's weight gradient, told how the input's batch is sharded (the
  image's logical names under the rules in force), so each device computes
  the gradient of its own slice."""
  spec = partition_spec(lhs.shape, IMAGE)
  return onednn.conv_general_dilated(lhs, *args, input_spec=spec, **kwargs)


def _auto_conv(*args, **kwargs):
  """XLA's convolution, or on the CPU backend oneDNN's weight gradient
  where it is built (chosen while tracing)."""
  if jax.default_backend() == 'cpu':
    return _onednn_conv(*args, **kwargs)
  return jax.lax.conv_general_dilated(*args, **kwargs)


def conv_function(impl):
  """The `lax.conv_general_dilated`-like function of `model.conv` `impl`."""
  check_choice('model.conv', impl, CONV_IMPLEMENTATIONS)
  if impl == 'onednn':
    if not onednn.available():
      raise ConfigError('model.conv=onednn but the oneDNN kernel is not '
                        f'available: {onednn.unavailable_reason()}; valid '
                        'choices here: auto, xla')
    return _onednn_conv
  return _auto_conv if impl == 'auto' else jax.lax.conv_general_dilated


def conv(features, kernel, strides=1, dtype=jnp.float32, name=None,
         use_bias=False, impl='auto'):
  """nn.Conv (SAME padding) with kernel names (None, None, conv_in, conv_out),
  computed by `model.conv` implementation `impl` (CONV_IMPLEMENTATIONS)."""
  return nn.Conv(
      features, kernel, strides=strides, padding='SAME', use_bias=use_bias,
      dtype=dtype, conv_general_dilated=conv_function(impl),
      kernel_init=partitioned(nn.initializers.kaiming_normal(),
                              (None,) * len(kernel) + ('conv_in', 'conv_out')),
      bias_init=partitioned(nn.initializers.zeros, ('conv_out',)),
      name=name)


def max_pool(x, window, impl='xla'):
  """Max pooling over non-overlapping `window`s (stride = window) of the
  spatial axes of `x` (N, *spatial, C), VALID padding.

  With `impl` auto or onednn (a model.conv implementation), the kernel
  library's max pool where it applies (`onednn.max_pool_applies`: CPU,
  float32, 2-D, the batch on one device), one pass each way; its gradient
  goes to each window's first maximum.

  Where the windows tile the input, as a reshape and a max: its gradient is
  an elementwise mask, where `nn.max_pool`'s (a reduce-window's) runs
  through index arithmetic and a scatter that cost XLA:CPU more than the
  small CNN's convolutions. Ties share the gradient equally (after a ReLU
  only zeros tie, whose gradient the ReLU stops). Otherwise `nn.max_pool`.
  """
  spatial = x.shape[1:-1]
  if (impl != 'xla' and jax.default_backend() == 'cpu'
      and onednn.max_pool_applies(x, window)):
    return onednn.max_pool(x, window)
  if any(s % w for s, w in zip(spatial, window)):
    return nn.max_pool(x, window, strides=window)
  shape = [x.shape[0]]
  for s, w in zip(spatial, window):
    shape += [s // w, w]
  y = x.reshape(shape + [x.shape[-1]])
  return jnp.max(y, axis=tuple(range(2, 2 * len(window) + 1, 2)))


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm (same variables, same results within float tolerance)
  whose training step runs the kernel library's fused batch norm (forward
  and backward, models/kernels/onednn_conv.cc) where `impl` (a model.conv
  implementation) and the input allow:
  CPU, float32, NHWC, the batch on one device (`onednn.batch_norm_applies`).
  Otherwise, and in evaluation, it is nn.BatchNorm.

  `residual` (added to the normalised output) and `relu` (applied last)
  fuse what conv blocks do next into the same call: in the library they run
  inside the norm's own passes over memory, elsewhere as
  `relu(residual + nn.BatchNorm(x))`."""
  impl: str = 'xla'

  def _onednn_applies(self, x, running, mask):
    """Whether this call is a training step the library can run: a batch
    norm as layers.batch_norm builds it, on CPU
    (`onednn.batch_norm_applies`)."""
    axis = self.axis if isinstance(self.axis, tuple) else (self.axis,)
    return (not running and mask is None and not self.is_initializing()
            and self.impl != 'xla' and jax.default_backend() == 'cpu'
            and axis in ((-1,), (x.ndim - 1,))
            and self.use_bias and self.use_scale and self.axis_name is None
            and self.dtype in (None, jnp.float32)
            and self.param_dtype == jnp.float32
            and onednn.batch_norm_applies(x))

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None,
               residual=None, relu=False):
    running = nn.merge_param('use_running_average', self.use_running_average,
                             use_running_average)
    if not self._onednn_applies(x, running, mask):
      y = super().__call__(x, use_running_average, mask=mask)
      if residual is not None:
        y = residual + y
      return nn.relu(y) if relu else y
    features = (x.shape[-1],)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, features,
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, features,
                           jnp.float32)
    scale = self.param('scale', self.scale_init, features, self.param_dtype)
    bias = self.param('bias', self.bias_init, features, self.param_dtype)
    y, mean, var = onednn.batch_norm_train(x, scale, bias, self.epsilon,
                                           residual, relu)
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def batch_norm(train, dtype=jnp.float32, name=None, impl='auto'):
  """The batch norm of conv models: oneDNN's in training on CPU where
  `impl` (model.conv) is auto or onednn and it applies, else nn.BatchNorm."""
  check_choice('model.conv', impl, CONV_IMPLEMENTATIONS)
  return BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      scale_init=partitioned(nn.initializers.ones, ('conv_out',)),
      bias_init=partitioned(nn.initializers.zeros, ('conv_out',)),
      impl=impl, name=name)


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


def partition_spec(shape, names):
  """The PartitionSpec that logical axis `names` of an array of `shape` map
  to under the rules in force (`activation_rules`, set by the train step)
  on the current mesh (`jax.set_mesh`), or None without rules or a mesh.
  Each name's mesh axes are taken in order while they divide the dimension
  and are unused."""
  rules = _ACTIVATION_RULES.get()
  if not rules:
    return None
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  table = dict(rules)
  spec, used = [], set()
  for dim, name in zip(shape, names):
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
  return P(*spec)


def constrain(x, names):
  """Constrains activation `x` to the sharding of its logical axis `names`
  (`partition_spec`); without rules or a mesh (a plain `model.apply`) `x` is
  returned as it is."""
  spec = partition_spec(x.shape, names)
  return x if spec is None else jax.lax.with_sharding_constraint(x, spec)


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
