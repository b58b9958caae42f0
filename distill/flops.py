"""Analytic FLOP counts from a function's jaxpr, and the chips' peaks.

    flops.of(fn, *abstract_args)     # matmul + convolution FLOPs of fn
    flops.model_flops_per_step(trainer)

Only `dot_general` (2 x output elements x contraction size) and
`conv_general_dilated` (2 x output elements x kernel window x input
channels per group; likewise oneDNN's convolution calls on CPU) count: the
work MFU is measured against. Higher-order
primitives are entered: a `scan` body counts `length` times (XLA's own cost
analysis counts a scanned layer stack once), `cond` its costliest branch, a
`while` body once (its trip count is unknown), a `shard_map` body times
its shards (its shapes are per device). A train step's model FLOPs
are 3 x the student's forward (forward, and a backward of twice its cost)
plus the forward of a teacher run inside the step; rematerialisation is not
counted (MFU is model FLOPs, not hardware FLOPs).
"""
import functools
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

# Peak dense bfloat16 FLOP/s per chip by device kind (prefix match, first
# hit), from the vendors' datasheets.
PEAK_FLOPS = (
    ('TPU v6', 918e12),        # Trillium (v6e)
    ('TPU v5 lite', 197e12),   # v5e
    ('TPU v5e', 197e12),
    ('TPU v5p', 459e12),
    ('TPU v5', 459e12),
    ('TPU v4', 275e12),
    ('TPU v3', 123e12),
    ('TPU v2', 45e12),
    ('NVIDIA H200', 989e12),
    ('NVIDIA H100', 989e12),   # SXM; PCIe parts are lower
    ('NVIDIA A100', 312e12),
    ('NVIDIA L4', 121e12),
)


def _prod(xs):
  return math.prod(int(x) for x in xs)


def _dot_flops(eqn):
  (contract, _), _ = eqn.params['dimension_numbers']
  lhs = eqn.invars[0].aval.shape
  return 2 * _prod(eqn.outvars[0].aval.shape) * _prod(lhs[d] for d in contract)


def _conv_flops(eqn):
  rhs = eqn.invars[1].aval.shape
  spec = eqn.params['dimension_numbers'].rhs_spec   # (out, in, *spatial)
  window = _prod(rhs[d] for d in spec[2:])
  return 2 * _prod(eqn.outvars[0].aval.shape) * rhs[spec[1]] * window


# oneDNN's convolution kernels (models/kernels/onednn.py) by FFI target:
# which operand or result holds the kernel (HWIO) and which the larger
# activation whose elements each take 2 x window x input-channel FLOPs.
_CONV_CALLS = {
    'distill_onednn_conv_forward': ('in', 1, 'out', 0),
    'distill_onednn_conv_input_grad': ('in', 1, 'in', 0),     # dy, w -> dx
    'distill_onednn_conv_weight_grad': ('out', 0, 'in', 1),   # x, dy -> dw
}


def _ffi_conv_flops(eqn):
  where = _CONV_CALLS.get(eqn.params.get('target_name'))
  if where is None:
    return 0
  avals = {'in': [v.aval for v in eqn.invars],
           'out': list(eqn.params['result_avals'])}
  kernel = avals[where[0]][where[1]].shape              # KH, KW, C, O
  y = avals[where[2]][where[3]].shape                   # the output side
  return 2 * _prod(y) * kernel[0] * kernel[1] * kernel[2]


def _sub_jaxprs(value):
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def jaxpr_flops(jaxpr):
  """Matmul and convolution FLOPs of a (closed) jaxpr, nested ones included."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      total += _dot_flops(eqn)
    elif name == 'conv_general_dilated':
      total += _conv_flops(eqn)
    elif name == 'ffi_call':
      total += _ffi_conv_flops(eqn)
    elif name == 'shard_map':       # per-device shapes inside: scale back
      inner = jaxpr_flops(eqn.params['jaxpr'])
      outer = _prod(eqn.invars[0].aval.shape)
      local = _prod(eqn.params['jaxpr'].invars[0].aval.shape)
      total += inner * (outer // max(1, local))
    elif name == 'cond':
      total += max(jaxpr_flops(b) for b in eqn.params['branches'])
    else:
      inner = sum(jaxpr_flops(j) for v in eqn.params.values()
                  for j in _sub_jaxprs(v))
      total += inner * (eqn.params['length'] if name == 'scan' else 1)
  return total


def of(fn, *args):
  """FLOPs of `fn(*args)`; args may be ShapeDtypeStructs."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args))


def forward(model, variables, inputs):
  """Forward FLOPs of `model.apply(variables, inputs)` (abstract ok)."""
  return of(lambda v, x: model.apply(v, x, train=False), variables, inputs)


def _shapes(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def model_flops_per_step(trainer):
  """Model FLOPs of one train step of `trainer` over its global batch."""
  state = _shapes(trainer.state)
  inputs = trainer.batch_shapes()['inputs']
  inputs = jax.ShapeDtypeStruct(inputs.shape, inputs.dtype)
  total = 3 * forward(trainer.model, {'params': state.params,
                                      **state.model_state}, inputs)
  if trainer.teacher is not None:
    t_model, _ = trainer.teacher
    total += forward(t_model, _shapes(trainer.teacher_variables), inputs)
  return float(total)


def peak_per_device(device):
  """The chip's peak FLOP/s (bfloat16, dense), None if not in the table."""
  kind = getattr(device, 'device_kind', '')
  return next((peak for prefix, peak in PEAK_FLOPS
               if kind.startswith(prefix)), None)


# The best ceiling measured on this host, kept between runs: measured
# while other processes share the cores it is low, and a run's MFU then
# read over 100% (253% on 2026-12-02, two tables side by side).
CEILING_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'distill',
                             'cpu_matmul_ceiling.json')


def _host_key():
  model = ''
  try:
    with open('/proc/cpuinfo') as f:
      model = next((l.split(':', 1)[1].strip() for l in f
                    if l.startswith('model name')), '')
  except OSError:
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(
      os, 'sched_getaffinity') else os.cpu_count()
  return f'{model}|{cores} cores|jax {jax.__version__}'


@functools.lru_cache(maxsize=None)
def cpu_matmul_ceiling(n=1024, repeats=5, cache=CEILING_CACHE):
  """The float32 matmul FLOP/s this host reaches (the CPU's peak for MFU:
  all its cores, however many CPU devices share them): the best of this
  measurement and those kept in `cache` for the same CPU model, core count
  and JAX (a loaded machine measures less than its peak)."""
  x = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    f(x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  measured = 2 * n ** 3 / best
  if not cache:
    return measured
  key = _host_key()
  try:
    with open(cache) as f:
      kept = json.load(f)
  except (OSError, ValueError):
    kept = {}
  if measured > kept.get(key, 0.0):
    kept[key] = measured
    try:
      os.makedirs(os.path.dirname(cache), exist_ok=True)
      tmp = f'{cache}.{os.getpid()}.tmp'
      with open(tmp, 'w') as f:
        json.dump(kept, f)
      os.replace(tmp, cache)
    except OSError:
      pass                     # a read-only home: this run's figure only
  return kept[key]


def peak_total(devices):
  """Peak FLOP/s of `devices` together: the table's per-chip peak times the
  chip count, or the measured matmul ceiling of a CPU host."""
  devices = list(devices)
  if all(d.platform == 'cpu' for d in devices):
    return cpu_matmul_ceiling()
  peaks = [peak_per_device(d) for d in devices]
  return None if None in peaks else float(np.sum(peaks))
