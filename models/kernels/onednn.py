"""Convolutions whose weight gradient oneDNN computes on CPU.

XLA:CPU computes a convolution's weight gradient at a fraction of the speed
of its forward pass (`python -m experiments.bench --sections=breakdown`),
the one kernel that kept our CPU step behind PyTorch's. `conv_general_dilated`
here has `lax.conv_general_dilated`'s signature: the forward pass and the
input gradient stay XLA's, the weight gradient is oneDNN's blocked-layout
kernel (`onednn_conv.cc`, an XLA FFI handler) where it applies: CPU, float32,
2-D, NHWC/HWIO, no dilation or groups. Anything else is XLA's convolution.

The handler is compiled on first use with the system's C++ compiler against
oneDNN (Debian/Ubuntu: `apt-get install libdnnl-dev g++`) into a cache
folder (`DISTILL_KERNEL_CACHE`, default `~/.cache/distill/kernels`) keyed
by the source and jaxlib version; without them `available()` is False, says
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
_TARGET = 'distill_onednn_conv_weight_grad'
_LOCK = threading.Lock()
_STATE = {}          # 'ok': bool, 'reason': str, 'lib': ctypes.CDLL


def _cache_dir():
  return os.environ.get('DISTILL_KERNEL_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'distill', 'kernels')


def _library_path():
  with open(_SOURCE, 'rb') as f:
    digest = hashlib.sha256(f.read() + jax.__version__.encode() +
                            jax.lib.__version__.encode()).hexdigest()[:16]
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
  cmd = [compiler, '-O3', '-shared', '-fPIC', '-std=c++17', '-fopenmp',
         '-w', f'-I{jax.ffi.include_dir()}', _SOURCE, '-o', tmp, '-ldnnl']
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
  jax.ffi.register_ffi_target(
      _TARGET, jax.ffi.pycapsule(lib.DistillOnednnConvWeightGrad),
      platform='cpu')
  _STATE['lib'] = lib
  return True, ''


def available():
  """Whether the oneDNN weight-gradient kernel is built and registered
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


def threads_per_call():
  """oneDNN threads per call: 1 unless DISTILL_ONEDNN_THREADS=N says
  otherwise. CPU runs use the cores through data parallelism over host
  devices (`cpu_devices`), each device's calls on its own thread; a single
  OpenMP thread per call starts no OpenMP thread team beside XLA's own
  thread pool."""
  return max(1, int(os.environ.get('DISTILL_ONEDNN_THREADS') or 1))


def _pads(padding, in_spatial, kernel_spatial, strides):
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_spatial, kernel_spatial, strides,
                                     padding))
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def _weight_grad(x, dy, kernel_shape, strides, pads):
  (pt, pb), (pl, pr) = pads
  return jax.ffi.ffi_call(
      _TARGET, jax.ShapeDtypeStruct(kernel_shape, jnp.float32))(
          x, dy, stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
          pad_top=np.int64(pt), pad_bottom=np.int64(pb),
          pad_left=np.int64(pl), pad_right=np.int64(pr),
          threads=np.int64(threads_per_call()))


def _xla_conv(x, w, strides, pads):
  return lax.conv_general_dilated(
      x, w, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _sharded_weight_grad(x, dy, w, strides, pads, spec):
  """The weight gradient of a convolution whose input is sharded by `spec`
  (a PartitionSpec of NHWC, or None): each device runs oneDNN on its batch
  slice and the slices' gradients are summed over the batch axes. A
  custom call has no partitioning rule, so without this the partitioner
  would gather the whole batch onto every device. Spatial or channel
  sharding goes to XLA's weight gradient."""
  if spec is None or all(s is None for s in spec):
    return _weight_grad(x, dy, w.shape, strides, pads)
  if any(s is not None for s in tuple(spec)[1:]):
    _, weight_vjp = jax.vjp(lambda w_: _xla_conv(x, w_, strides, pads), w)
    return weight_vjp(dy)[0]
  batch = spec[0]
  axes = (batch,) if isinstance(batch, str) else tuple(batch)
  local = lambda x_, dy_: lax.psum(
      _weight_grad(x_, dy_, w.shape, strides, pads), axes)
  return jax.shard_map(local, mesh=jax.sharding.get_abstract_mesh(),
                       in_specs=(P(batch), P(batch)), out_specs=P(),
                       check_vma=False)(x, dy)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, pads, spec):
  del spec
  return _xla_conv(x, w, strides, pads)


def _conv_fwd(x, w, strides, pads, spec):
  return _conv(x, w, strides, pads, spec), (x, w)


def _conv_bwd(strides, pads, spec, residuals, dy):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x_: _xla_conv(x_, w, strides, pads), x)
  return (input_vjp(dy)[0],
          _sharded_weight_grad(x, dy, w, strides, pads, spec))


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
  """Whether this convolution's weight gradient can go to oneDNN."""
  ones = lambda d: d is None or all(int(v) == 1 for v in d)
  return (lhs.ndim == 4 and lhs.dtype == jnp.float32 and
          rhs.dtype == jnp.float32 and _nhwc_hwio(dimension_numbers) and
          ones(lhs_dilation) and ones(rhs_dilation) and
          feature_group_count == 1 and batch_group_count == 1 and
          preferred_element_type in (None, jnp.float32) and available())


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None,
                         input_spec=None):
  """`lax.conv_general_dilated`, with oneDNN's weight gradient where it
  `applies`. `input_spec`: how `lhs` is sharded over the mesh in force (a
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
  return _conv(lhs, rhs, strides, pads, input_spec)
