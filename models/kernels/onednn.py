"""Convolutions computed by oneDNN on CPU: forward, input and weight gradient.

XLA:CPU runs a convolution's weight gradient at a fraction of the speed of
its forward pass and its forward and input gradient at about half of
oneDNN's (`python -m experiments.bench --sections=breakdown`): the kernels
that kept our CPU step behind PyTorch's, which runs oneDNN.
`conv_general_dilated` here has `lax.conv_general_dilated`'s signature and
runs all three through oneDNN's kernels (`onednn_conv.cc`, XLA FFI
handlers): Winograd's for 3x3 stride-1 convolutions with at least 32
channels in and out, where it was faster, and the direct kernels on the
NHWC buffers as they are elsewhere (`_layout`). It applies on CPU,
float32, 2-D, NHWC/HWIO, no dilation or groups, non-negative padding.
Anything else is XLA's convolution. Under a mesh each device runs its own
batch slice.

The same library holds a training batch norm (`batch_norm_train`) with the
residual add and ReLU that follow it in conv blocks fused into its passes:
OpenMP loops, not oneDNN's primitive, which was slower without the fusion
(onednn_conv.cc). XLA's elementwise kernels run one thread each on one
device; these use every core.

The handlers are compiled on first use with the system's C++ compiler against
oneDNN (Debian/Ubuntu: `apt-get install libdnnl-dev g++`) into a cache
folder (`DISTILL_KERNEL_CACHE`, default `~/.cache/distill/kernels`) keyed
by the source, the jaxlib version and the CPU (they are compiled with
-march=native); without them `available()` is False, says
why (`unavailable_reason()`), and every convolution is XLA's.
"""
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'onednn_conv.cc')
# FFI target names, by what they compute, and the handlers' symbols.
_TARGETS = {'forward': 'distill_onednn_conv_forward',
            'input_grad': 'distill_onednn_conv_input_grad',
            'weight_grad': 'distill_onednn_conv_weight_grad'}
_SYMBOLS = {'forward': 'DistillOnednnConvForward',
            'input_grad': 'DistillOnednnConvInputGrad',
            'weight_grad': 'DistillOnednnConvWeightGrad'}
# The batch norm's handlers are OpenMP loops of the same library (not
# oneDNN's primitive: onednn_conv.cc says why).
_BN_TARGETS = {'forward': 'distill_cpu_batch_norm_forward',
               'backward': 'distill_cpu_batch_norm_backward'}
_BN_SYMBOLS = {'forward': 'DistillCpuBatchNormForward',
               'backward': 'DistillCpuBatchNormBackward'}
_POOL_TARGETS = {'forward': 'distill_cpu_max_pool_forward',
                 'backward': 'distill_cpu_max_pool_backward'}
_POOL_SYMBOLS = {'forward': 'DistillCpuMaxPoolForward',
                 'backward': 'DistillCpuMaxPoolBackward'}
_LOCK = threading.Lock()
_STATE = {}          # 'ok': bool, 'reason': str, 'lib': ctypes.CDLL


def _cache_dir():
  return os.environ.get('DISTILL_KERNEL_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'distill', 'kernels')


def _cpu_signature():
  """The host CPU's model and instruction-set flags: the library is
  compiled with -march=native, so a cache folder shared between different
  machines keeps one build per kind of CPU."""
  try:
    with open('/proc/cpuinfo', 'rb') as f:
      lines = [l for l in f.read().splitlines()
               if l.startswith((b'model name', b'flags'))]
    return b'\n'.join(sorted(set(lines)))
  except OSError:
    import platform  # pylint: disable=g-import-not-at-top
    return platform.processor().encode()


def _library_path():
  with open(_SOURCE, 'rb') as f:
    digest = hashlib.sha256(f.read() + jax.__version__.encode() +
                            jax.lib.__version__.encode() +
                            _cpu_signature()).hexdigest()[:16]
  return os.path.join(_cache_dir(), f'onednn_conv-{digest}.so')


def _compile(path):
  """Compiles the handler into `path` (atomically); returns an error text."""
  compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which(
      'c++')
  if not compiler:
    return 'no C++ compiler (g++) on PATH'
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  cmd = [compiler, '-O3', '-march=native', '-shared', '-fPIC', '-std=c++17',
         '-fopenmp', '-w', f'-I{jax.ffi.include_dir()}', _SOURCE, '-o', tmp,
         '-ldnnl']
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
      lines = [l for l in proc.stderr.splitlines() if 'error' in l]
      return 'compiling the oneDNN kernel failed (is libdnnl-dev ' \
             f'installed?): {(lines or [proc.stderr.strip()])[0][:200]}'
    os.replace(tmp, path)
    return ''
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _load():
  # OpenMP worker threads (DISTILL_ONEDNN_THREADS > 1) sleep when idle
  # rather than spin beside XLA's threads; read when libgomp loads.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  path = _library_path()
  if not os.path.exists(path):
    error = _compile(path)
    if error:
      return False, error
  try:
    lib = ctypes.cdll.LoadLibrary(path)
  except OSError as e:
    return False, f'loading {path} failed: {e}'
  for targets, symbols in ((_TARGETS, _SYMBOLS), (_BN_TARGETS, _BN_SYMBOLS),
                           (_POOL_TARGETS, _POOL_SYMBOLS)):
    for kind, target in targets.items():
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(lib, symbols[kind])),
          platform='cpu')
  _STATE['lib'] = lib
  return True, ''


def can_build():
  """Whether the kernels are built or can be (a compiler and oneDNN's
  header), without building or loading them (the JAX backend may not
  have started yet)."""
  if 'ok' in _STATE:
    return _STATE['ok']
  if os.path.exists(_library_path()):
    return True
  compiler = os.environ.get('CXX') or shutil.which('g++') or shutil.which(
      'c++')
  return bool(compiler) and any(
      os.path.exists(os.path.join(d, 'oneapi', 'dnnl', 'dnnl.hpp'))
      for d in ('/usr/include', '/usr/local/include'))


def available():
  """Whether the oneDNN convolution kernels are built and registered
  (builds it on the first call)."""
  with _LOCK:
    if 'ok' not in _STATE:
      try:
        _STATE['ok'], _STATE['reason'] = _load()
      except (OSError, subprocess.SubprocessError) as e:
        _STATE['ok'], _STATE['reason'] = False, str(e)
    return _STATE['ok']


def unavailable_reason():
  return '' if available() else _STATE['reason']


def describe():
  """One line: which kernels `model.conv=auto` runs here, without building
  them (`can_build`: a run that needs none does not pay the compile)."""
  if not can_build():
    return ('XLA (' + (_STATE.get('reason') or
                       'no C++ compiler or oneDNN header') + ')')
  layout = os.environ.get('DISTILL_ONEDNN_LAYOUT', 'auto')
  if layout == 'auto':
    layout = (f'Winograd for 3x3 stride-1 with >= {WINOGRAD_MIN_CHANNELS} '
              'channels, direct NHWC elsewhere')
  return (f'oneDNN convolutions ({layout}); fused batch norm + add + ReLU '
          'and max pool kernels')


def threads_per_call(devices=1):
  """oneDNN (OpenMP) threads per call when `devices` CPU devices run side
  by side: the usable cores shared among them (at least 1), unless
  DISTILL_ONEDNN_THREADS=N says otherwise. On one device a call uses every
  core; under data parallelism over host devices each device's calls run
  on their own thread, one core each."""
  if os.environ.get('DISTILL_ONEDNN_THREADS'):
    return max(1, int(os.environ['DISTILL_ONEDNN_THREADS']))
  try:
    cores = len(os.sched_getaffinity(0))
  except AttributeError:                          # not Linux
    cores = os.cpu_count() or 1
  return max(1, cores // max(1, devices))


# Attribute `layout` of the handlers: 0 = oneDNN's direct kernels on the NHWC
# buffers as they are, 1 = blocked layouts chosen by oneDNN with reorders in
# and out of each call, 2 = oneDNN's Winograd kernels (F(4x4, 3x3), blocked
# layouts with reorders; the library falls back to 0 where the CPU has none).
# NHWC was faster than blocked for every ResNet-20 convolution. Winograd,
# reorders included, took 0.55-0.85x the direct kernels' time for 3x3
# stride-1 convolutions with at least 32 channels in and out (all three
# calls; batch 32 and 128, 8x8 to 32x32, 32 to 128 channels) and 1.05-1.6x
# with 16 or 24 channels on either side (fewer multiplies, but transforms
# and reorders over memory that the small products do not pay for): a
# throwaway oneDNN timing script on this machine (AVX-512, two threads).
# 'auto' (the default) takes Winograd where it was faster, direct NHWC
# elsewhere; DISTILL_ONEDNN_LAYOUT=nhwc|blocked|winograd forces one for
# measuring (winograd: wherever the shape allows it).
LAYOUT = {'nhwc': 0, 'blocked': 1, 'winograd': 2}
LAYOUTS = ('auto',) + tuple(LAYOUT)
WINOGRAD_MIN_CHANNELS = 32


def winograd_shape(w_shape, strides):
  """Whether a convolution with HWIO kernel `w_shape` and `strides` is one
  oneDNN's Winograd kernels compute: 3x3, stride 1."""
  return tuple(w_shape[:2]) == (3, 3) and tuple(strides) == (1, 1)


def _layout(w_shape, strides):
  """The handlers' `layout` for this convolution (DISTILL_ONEDNN_LAYOUT)."""
  name = os.environ.get('DISTILL_ONEDNN_LAYOUT', 'auto')
  if name not in LAYOUTS:
    raise ValueError(f'DISTILL_ONEDNN_LAYOUT={name!r}; valid choices: '
                     f'{", ".join(LAYOUTS)}')
  if name == 'winograd' or name == 'auto':
    if not winograd_shape(w_shape, strides):
      return LAYOUT['nhwc']
    if name == 'auto' and min(w_shape[2:]) < WINOGRAD_MIN_CHANNELS:
      return LAYOUT['nhwc']
    return LAYOUT['winograd']
  return LAYOUT[name]


def _pads(padding, in_spatial, kernel_spatial, strides):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_spatial, kernel_spatial, strides,
                                     padding))
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def _mesh_devices():
  mesh = jax.sharding.get_abstract_mesh()
  return 1 if mesh is None or mesh.empty else int(mesh.size)


def _call(kind, shape, a, b, strides, pads, w_shape):
  """oneDNN handler `kind` (forward, input_grad, weight_grad) on `a`, `b`,
  returning f32[`shape`]; `w_shape`: the kernel's (HWIO)."""
  (pt, pb), (pl, pr) = pads
  return jax.ffi.ffi_call(
      _TARGETS[kind], jax.ShapeDtypeStruct(shape, jnp.float32))(
          a, b, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
          pad_top=np.int64(pt), pad_bottom=np.int64(pb),
          pad_left=np.int64(pl), pad_right=np.int64(pr),
          threads=np.int64(threads_per_call(_mesh_devices())),
          layout=np.int64(_layout(w_shape, strides)))


def _xla_conv(x, w, strides, pads):
  return lax.conv_general_dilated(
      x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _out_shape(x, w, strides, pads):
  return jax.eval_shape(lambda: _xla_conv(x, w, strides, pads)).shape


def _batch_axes(spec):
  """The mesh axes the batch of an NHWC operand sharded by `spec` lies on:
  () when unsharded, None when other dimensions are sharded too (XLA's
  convolution then, which the partitioner can split)."""
  if spec is None or all(s is None for s in spec):
    return ()
  if any(s is not None for s in tuple(spec)[1:]):
    return None
  batch = spec[0]
  return (batch,) if isinstance(batch, str) else tuple(batch)


def _per_device(fn, axes, reduce=False):
  """`fn(a, b)` on each device's batch slice of `a` (and of `b` where
  `reduce`: the weight gradient, summed over the batch axes). A custom call
  has no partitioning rule: without this the partitioner would gather the
  whole batch onto every device."""
  if not axes:
    return fn
  batch = P(axes)
  if reduce:
    local = lambda a, b: lax.psum(fn(a, b), axes)
    in_specs, out_specs = (batch, batch), P()
  else:
    local, in_specs, out_specs = fn, (batch, P()), batch
  return jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(),
                       in_specs=in_specs, out_specs=out_specs,
                       check_vma=False)


def _local_shape(shape, axes):
  mesh = jax.sharding.get_abstract_mesh()
  shards = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
  return (shape[0] // shards,) + tuple(shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, spec):
  axes = _batch_axes(spec)
  if axes is None:
    return _xla_conv(x, w, strides, pads)
  shape = _local_shape(_out_shape(x, w, strides, pads), axes)
  return _per_device(
      lambda x_, w_: _call('forward', shape, x_, w_, strides, pads,
                           w.shape),
      axes)(x, w)


def _conv_fwd(x, w, strides, pads, spec):
  return _conv(x, w, strides, pads, spec), (x, w)


def _conv_bwd(strides, pads, spec, residuals, dy):
  x, w = residuals
  axes = _batch_axes(spec)
  if axes is None:
    _, vjp = jax.vjp(lambda x_, w_: _xla_conv(x_, w_, strides, pads), x, w)
    return vjp(dy)
  x_shape = _local_shape(x.shape, axes)
  dx = _per_device(
      lambda dy_, w_: _call('input_grad', x_shape, dy_, w_, strides, pads,
                            w.shape),
      axes)(dy, w)
  dw = _per_device(
      lambda x_, dy_: _call('weight_grad', w.shape, x_, dy_, strides, pads,
                            w.shape),
      axes, reduce=True)(x, dy)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def _nhwc_hwio(dimension_numbers):
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return dimension_numbers == lax.conv_dimension_numbers(
        (1, 1, 1, 1), (1, 1, 1, 1), ('NHWC', 'HWIO', 'NHWC'))
  return tuple(dimension_numbers) == ('NHWC', 'HWIO', 'NHWC')


def applies(lhs, rhs, lhs_dilation=None, rhs_dilation=None,
            dimension_numbers=None, feature_group_count=1,
            batch_group_count=1, preferred_element_type=None):
  """Whether this convolution can go to oneDNN."""
  ones = lambda d: d is None or all(int(v) == 1 for v in d)
  return (lhs.ndim == 4 and rhs.ndim == 4 and lhs.dtype == jnp.float32 and
          rhs.dtype == jnp.float32 and _nhwc_hwio(dimension_numbers) and
          ones(lhs_dilation) and ones(rhs_dilation) and
          feature_group_count == 1 and batch_group_count == 1 and
          preferred_element_type in (None, jnp.float32) and available())


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None,
                         input_spec=None):
  """`lax.conv_general_dilated`, computed by oneDNN where it `applies`.
  `input_spec`: how `lhs` is sharded over the mesh in force (a
  PartitionSpec), None when it is not."""
  if not applies(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count,
                 preferred_element_type):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)
  strides = tuple(int(s) for s in window_strides)
  pads = _pads(padding, lhs.shape[1:3], rhs.shape[:2], strides)
  if any(p < 0 for pair in pads for p in pair) or 0 in _out_shape(
      lhs, rhs, strides, pads):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers, feature_group_count, batch_group_count, precision,
        preferred_element_type)
  if tuple(rhs.shape[:2]) == (1, 1) and strides != (1, 1):
    # A strided 1x1 convolution is the 1x1 convolution of the subsampled
    # input. oneDNN 2.6's own strided 1x1 weight gradient (jit_1x1:avx2,
    # taken for a few input channels, e.g. 4) wrote outside its buffers and
    # returned other numbers from call to call
    # (tests/test_onednn.py::test_repeated_calls_equal_xla); XLA's strided
    # slice (its gradient a pad) takes that path away for every shape.
    if any(p for pair in pads for p in pair):
      lhs = jnp.pad(lhs, ((0, 0),) + pads + ((0, 0),))
    lhs = lhs[:, ::strides[0], ::strides[1], :]
    strides, pads = (1, 1), ((0, 0), (0, 0))
  return _conv(lhs, rhs, strides, pads, input_spec)


# --- batch normalization ----------------------------------------------------


def batch_norm_applies(x):
  """Whether a training batch norm of `x` (statistics over all but the last
  axis) can go to the library's fused kernel: CPU, float32, NHWC, its
  batch on one device (a batch sharded over several devices needs
  statistics across them, which XLA's batch norm computes with its
  all-reduces)."""
  if not (x.ndim == 4 and x.dtype == jnp.float32 and available()):
    return False
  mesh = jax.sharding.get_abstract_mesh()
  return mesh is None or mesh.empty or int(mesh.size) == 1


def _bn_call(name, shapes, *args, **attrs):
  return jax.ffi.ffi_call(
      name, tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))(
          *args, threads=np.int64(threads_per_call(_mesh_devices())),
          **{k: np.float32(v) if k == 'epsilon' else np.int64(v)
             for k, v in attrs.items()})


_PLACEHOLDER = (1,)   # the shape of an operand a handler does not read


def batch_norm_train(x, scale, bias, epsilon, residual=None, relu=False):
  """(y, mean, var) of a training batch norm of NHWC `x` by the library's
  fused kernel: mean and biased variance over N, H, W, n = (x - mean) /
  sqrt(var + epsilon) * scale + bias, and y = n, n + residual, relu(n) or
  relu(n + residual) as `residual` (x's shape, or None) and `relu` say: the
  add and ReLU run in the kernel too, so XLA makes no elementwise pass over
  y. Differentiable in x, scale, bias and residual through y (mean and var
  are for the running averages: their cotangents are ignored)."""
  add = residual is not None
  if not add:
    residual = jnp.zeros(_PLACEHOLDER, jnp.float32)
  return _bn_train(x, scale, bias, residual, float(epsilon), bool(relu), add)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _bn_train(x, scale, bias, residual, epsilon, relu, add):
  c = x.shape[-1]
  return _bn_call(_BN_TARGETS['forward'], (x.shape, (c,), (c,)), x, scale,
                  bias, residual, epsilon=epsilon, relu=relu, add=add)


def _bn_fwd(x, scale, bias, residual, epsilon, relu, add):
  y, mean, var = _bn_train(x, scale, bias, residual, epsilon, relu, add)
  # ReLU's gradient is read from its output, so y is kept only with relu.
  kept = y if relu else jnp.zeros(_PLACEHOLDER, jnp.float32)
  return (y, mean, var), (x, scale, mean, var, kept)


def _bn_bwd(epsilon, relu, add, residuals, cotangents):
  x, scale, mean, var, y = residuals
  dy = cotangents[0]
  c = x.shape[-1]
  dx, dscale, dbias, dz = _bn_call(
      _BN_TARGETS['backward'],
      (x.shape, (c,), (c,), x.shape if relu and add else _PLACEHOLDER), x,
      dy, scale, mean, var, y, epsilon=epsilon, relu=relu, add=add)
  if not add:
    return dx, dscale, dbias, jnp.zeros(_PLACEHOLDER, jnp.float32)
  return dx, dscale, dbias, dz if relu else dy


_bn_train.defvjp(_bn_fwd, _bn_bwd)


def max_pool_applies(x, window):
  """Whether the library's max pool can take `x` (N, H, W, C) over
  non-overlapping `window`s: CPU float32, 2-D windows that tile the input,
  its batch on one device (as the fused batch norm)."""
  return (len(window) == 2 and x.ndim == 4 and
          x.shape[1] % window[0] == 0 and x.shape[2] % window[1] == 0 and
          batch_norm_applies(x))


def max_pool(x, window):
  """Max pooling of NHWC `x` over non-overlapping 2-D `window`s (stride =
  window), by the library: one pass forward (keeping each window's first
  maximum's position), one pass backward. See `max_pool_applies`."""
  return _max_pool(x, tuple(int(w) for w in window))


def _pool_forward(x, window):
  """(y, the position in its window of each output's first maximum)."""
  shape = (x.shape[0], x.shape[1] // window[0], x.shape[2] // window[1],
           x.shape[3])
  return jax.ffi.ffi_call(_POOL_TARGETS['forward'], (
      jax.ShapeDtypeStruct(shape, jnp.float32),
      jax.ShapeDtypeStruct(shape, jnp.float32)))(
          x, wh=np.int64(window[0]), ww=np.int64(window[1]),
          threads=np.int64(threads_per_call(_mesh_devices())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x, window):
  return _pool_forward(x, window)[0]


def _max_pool_fwd(x, window):
  return _pool_forward(x, window)     # (output, residual: the positions)


def _max_pool_bwd(window, arg, dy):
  shape = (dy.shape[0], dy.shape[1] * window[0], dy.shape[2] * window[1],
           dy.shape[3])
  return (jax.ffi.ffi_call(_POOL_TARGETS['backward'], jax.ShapeDtypeStruct(
      shape, jnp.float32))(
          dy, arg, wh=np.int64(window[0]), ww=np.int64(window[1]),
          threads=np.int64(threads_per_call(_mesh_devices()))),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
