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
import importlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from core.errors import check_choice

default_kernel_init = nn.initializers.lecun_normal()


def partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


def over_rows(fn, x):
  """`fn` (a matmul by a weight) on `x` (..., features) with its leading
  dimensions flattened into one: (rows, features) -> (rows, out), reshaped
  back. XLA:CPU computes the weight's gradient of a contraction over two or
  more dimensions (an LM's batch and sequence) through a transposed copy of
  the output's cotangent, with the loss's elementwise tail fused into that
  copy. A sharded leading dimension (the batch) stays the major one, so the
  rows keep its sharding. The LM head's choice: models/transformer.py,
  `head_matmul`."""
  if x.ndim <= 2:
    return fn(x)
  y = fn(x.reshape(-1, x.shape[-1]))
  return y.reshape(x.shape[:-1] + y.shape[-1:])


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

# model.conv: which kernels a conv model's convolutions, batch norms and max
# pools run (`kernels_for`).
CONV_IMPLEMENTATIONS = {
    # the CPU kernel library's on the CPU backend, XLA's elsewhere
    'auto': 'auto',
    'xla': 'xla',          # XLA's everywhere
    'onednn': 'onednn',    # the CPU kernel library's (built or an error)
}
# The provider of the CPU kernel library (models/kernels/cpu.py), imported
# only when a model runs it: accelerator code paths never load it.
_CPU_PROVIDER = 'models.kernels.cpu'


class XlaKernels:
  """The kernels of conv models everywhere but the CPU kernel library:
  XLA's convolution, a reshape max pool and flax's batch norm. A provider
  (`kernels_for`) has these members; the CPU library's (models/kernels/cpu.py)
  overrides them where its kernels apply."""
  name = 'xla'
  conv_general_dilated = staticmethod(jax.lax.conv_general_dilated)
  batch_norm_train = None       # (x, scale, bias, eps, residual, relu) ->
                                # (y, mean, var), where batch_norm_applies

  @staticmethod
  def batch_norm_applies(x):
    del x
    return False

  @staticmethod
  def max_pool(x, window):
    """Max pooling over non-overlapping `window`s (see `max_pool`)."""
    spatial = x.shape[1:-1]
    if any(s % w for s, w in zip(spatial, window)):
      return nn.max_pool(x, window, strides=window)
    shape = [x.shape[0]]
    for s, w in zip(spatial, window):
      shape += [s // w, w]
    y = x.reshape(shape + [x.shape[-1]])
    return jnp.max(y, axis=tuple(range(2, 2 * len(window) + 1, 2)))


def kernels_for(impl):
  """The kernel provider of `model.conv` `impl` (CONV_IMPLEMENTATIONS),
  chosen once per model: 'xla' is XlaKernels; 'onednn' the CPU kernel
  library's (one line if it cannot be built here); 'auto' the library's on
  the CPU backend, else XlaKernels. Only the library's path imports it."""
  check_choice('model.conv', impl, CONV_IMPLEMENTATIONS)
  if impl == 'xla' or (impl == 'auto' and jax.default_backend() != 'cpu'):
    return XlaKernels
  cpu = importlib.import_module(_CPU_PROVIDER)
  if impl == 'onednn':
    cpu.check_available()
  return cpu.CpuKernels


def conv_function(impl):
  """The `lax.conv_general_dilated`-like function of `model.conv` `impl`."""
  return kernels_for(impl).conv_general_dilated


def torch_pads(kernel):
  """The explicit padding of a torch/torchvision convolution or pooling of
  `kernel` (padding = k // 2 on each side; 7x7/2: (3, 3), 3x3/2: (1, 1)),
  where 'SAME' pads a strided window less before than after."""
  return tuple((k // 2, k // 2) for k in kernel)


def conv(features, kernel, strides=1, dtype=jnp.float32, name=None,
         use_bias=False, kernels=None, padding='SAME'):
  """nn.Conv (`padding`: 'SAME', or explicit pairs, e.g. `torch_pads`) with
  kernel names (None, None, conv_in, conv_out), computed by the `kernels`
  provider (default: model.conv auto's)."""
  kernels = kernels or kernels_for('auto')
  return nn.Conv(
      features, kernel, strides=strides, padding=padding, use_bias=use_bias,
      dtype=dtype, conv_general_dilated=kernels.conv_general_dilated,
      kernel_init=partitioned(nn.initializers.kaiming_normal(),
                              (None,) * len(kernel) + ('conv_in', 'conv_out')),
      bias_init=partitioned(nn.initializers.zeros, ('conv_out',)),
      name=name)


def max_pool(x, window, kernels=XlaKernels):
  """Max pooling over non-overlapping `window`s (stride = window) of the
  spatial axes of `x` (N, *spatial, C), VALID padding, by the `kernels`
  provider.

  The CPU library's where it applies (models/kernels/cpu.py: 2-D, float32,
  the batch on one device): one pass each way; its gradient goes to each
  window's first maximum.

  XlaKernels: where the windows tile the input, a reshape and a max: its
  gradient is an elementwise mask, where `nn.max_pool`'s (a reduce-window's)
  runs through index arithmetic and a scatter that cost XLA:CPU more than
  the small CNN's convolutions. Ties share the gradient equally (after a
  ReLU only zeros tie, whose gradient the ReLU stops). Otherwise
  `nn.max_pool`.
  """
  return kernels.max_pool(x, window)


class BatchNorm(nn.BatchNorm):
  """nn.BatchNorm (same variables, same results within float tolerance)
  whose training step runs the `kernels` provider's fused batch norm
  (forward and backward; the CPU library's: models/kernels/onednn_conv.cc)
  where it applies (`kernels.batch_norm_applies`). Otherwise, and in
  evaluation, it is nn.BatchNorm.

  `residual` (added to the normalised output) and `relu` (applied last)
  fuse what conv blocks do next into the same call: in the library they run
  inside the norm's own passes over memory, elsewhere as
  `relu(residual + nn.BatchNorm(x))`."""
  kernels: Any = XlaKernels

  def _fused_applies(self, x, running, mask):
    """Whether this call is a training step the provider's fused kernel
    can run: a batch norm as layers.batch_norm builds it."""
    axis = self.axis if isinstance(self.axis, tuple) else (self.axis,)
    return (not running and mask is None and not self.is_initializing()
            and self.kernels.batch_norm_train is not None
            and axis in ((-1,), (x.ndim - 1,))
            and self.use_bias and self.use_scale and self.axis_name is None
            and self.dtype in (None, jnp.float32)
            and self.param_dtype == jnp.float32
            and self.kernels.batch_norm_applies(x))

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None,
               residual=None, relu=False):
    running = nn.merge_param('use_running_average', self.use_running_average,
                             use_running_average)
    if not self._fused_applies(x, running, mask):
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
    y, mean, var = self.kernels.batch_norm_train(x, scale, bias, self.epsilon,
                                                 residual, relu)
    mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


def batch_norm(train, dtype=jnp.float32, name=None, kernels=None):
  """The batch norm of conv models: the `kernels` provider's fused one in
  training where it applies (default: model.conv auto's), else
  nn.BatchNorm."""
  return BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      scale_init=partitioned(nn.initializers.ones, ('conv_out',)),
      bias_init=partitioned(nn.initializers.zeros, ('conv_out',)),
      kernels=kernels or kernels_for('auto'), name=name)


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
