"""Causal multi-head attention by implementation name (`model.attention`).

    out = attention.attend(q, k, v, implementation='auto')   # (B, T, N, H)

- `xla`: `jax.nn.dot_product_attention` with XLA's implementation: the
  (B, N, T, T) scores are materialised (memory quadratic in T); any backend.
- `cudnn`: the same call with cuDNN's fused kernel (GPU, bfloat16/float16).
- `pallas`: the Pallas flash-attention kernel for TPU
  (`jax.experimental.pallas.ops.tpu.flash_attention`); TPU only, sequence
  lengths a multiple of 128.
- `flash`: blockwise attention in plain JAX with a custom VJP (online
  softmax over key blocks forward; the backward recomputes each block's
  scores from the saved log-sum-exp): memory linear in T on any backend,
  the reference for the kernels above and what the compile check on CPU
  devices measures. It computes every key block (no causal block skipping),
  so it does twice the causal minimum of score FLOPs.
- `auto`: pallas on TPU, cudnn on GPU for 16-bit inputs (else xla), flash on
  CPU.

Every implementation takes (batch, length, heads, head_dim) queries and
(batch, length, kv_heads, head_dim) keys and values (grouped-query
attention when kv_heads divides heads), scales scores by 1/sqrt(head_dim),
computes the softmax in float32 and returns the queries' dtype; they agree
to float tolerance (tests/test_attention.py).

Two features only `xla` has (the others refuse them in one line naming
`xla`; `auto` picks `xla` when either is asked for):
- `softcap`: scores become softcap * tanh(scores / softcap) (Gemma 2);
- `window`: a query sees only the `window` newest keys, itself included (a
  sliding window; may be a traced scalar, as under `nn.scan`).
"""
import functools
import math

import jax
import jax.numpy as jnp

from core.errors import ConfigError, check_choice

IMPLEMENTATIONS = ('auto', 'xla', 'cudnn', 'pallas', 'flash')
_MASKED = -1e30


# The features of `attend` that only some implementations have.
XLA_ONLY = {'softcap': 'model.attn_softcap', 'window': 'model.sliding_window'}


def resolve(implementation, dtype, xla_only=False):
  """The concrete implementation `auto` stands for on this backend
  (`xla` wherever `xla_only` features are used)."""
  check_choice('model.attention', implementation, IMPLEMENTATIONS)
  if implementation != 'auto':
    return implementation
  if xla_only:
    return 'xla'
  backend = jax.default_backend()
  if backend == 'tpu':
    return 'pallas'
  if backend == 'gpu' and jnp.dtype(dtype).itemsize == 2:
    return 'cudnn'
  return 'flash' if backend == 'cpu' else 'xla'


def check_features(implementation, softcap=0.0, window=None):
  """One-line ConfigError where `implementation` lacks a feature asked for."""
  for feature, value in (('softcap', softcap), ('window', window)):
    if value is not None and not (isinstance(value, (int, float))
                                  and not value):
      if implementation not in ('xla', 'auto'):
        raise ConfigError(f'{XLA_ONLY[feature]} is not supported by '
                          f'model.attention={implementation!r}; use '
                          "model.attention='xla' (or 'auto')")


def attend(q, k, v, implementation='auto', block=512, softcap=0.0,
           window=None):
  """Causal attention of (B, T, N, H) q and (B, T, K, H) k, v; see the
  module docstring."""
  check_features(implementation, softcap, window)
  general = bool(softcap) or window is not None
  impl = resolve(implementation, q.dtype, general)
  if impl == 'xla' and general:
    return _xla_general(q, k, v, softcap, window)
  if impl in ('xla', 'cudnn'):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                        implementation=impl)
  if k.shape[2] != q.shape[2]:         # grouped-query: repeat the K/V heads
    groups = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  if impl == 'pallas':
    if jax.default_backend() != 'tpu':
      raise ConfigError("model.attention='pallas' runs on TPU only; valid "
                        'choices elsewhere: auto, xla, flash (cudnn on GPU)')
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu  # pylint: disable=g-import-not-at-top
    out = tpu.flash_attention(*(x.transpose(0, 2, 1, 3) for x in (q, k, v)),
                              causal=True,
                              sm_scale=1.0 / math.sqrt(q.shape[-1]))
    return out.transpose(0, 2, 1, 3)
  return flash(q, k, v, block_size(k.shape[1], block))


def _xla_general(q, k, v, softcap, window):
  """Causal attention with soft-capped scores and/or a sliding window, the
  (B, N, T, T) scores materialised; K/V heads shared by groups of queries."""
  t, s = q.shape[1], k.shape[1]
  return attend_masked(q, k, v, jnp.arange(t)[None], jnp.arange(s)[None],
                       jnp.ones((1, s), bool), softcap, window)


def attend_masked(q, k, v, q_index, k_index, k_valid, softcap=0.0,
                  window=None):
  """Causal attention over keys that may be padding or not yet written
  (left-padded batches, the KV cache of decoding): a query at sequence
  index `q_index` (B, T) sees the keys at `k_index` (B, S) <= its own
  that are `k_valid` (B, S), within `window` of it when given; the
  (B, N, T, S) scores materialised (XLA, any backend), K/V heads shared by
  groups of queries. A query that sees no key (padding) gets a mean of the
  values (its output is not read)."""
  b, t, n, h = q.shape
  groups = n // k.shape[2]
  qg = q.reshape(b, t, k.shape[2], groups, h)
  s = jnp.einsum('btkgh,bskh->bkgts', qg, k,
                 preferred_element_type=jnp.float32) / math.sqrt(h)
  if softcap:
    s = softcap * jnp.tanh(s / softcap)
  q_pos, k_pos = q_index[:, :, None], k_index[:, None, :]
  mask = (q_pos >= k_pos) & k_valid[:, None, :]
  if window is not None:
    mask = mask & (q_pos - k_pos < window)
  p = jax.nn.softmax(jnp.where(mask[:, None, None], s, _MASKED), -1)
  out = jnp.einsum('bkgts,bskh->btkgh', p.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.reshape(b, t, n, h).astype(q.dtype)


def block_size(length, block):
  """The largest divisor of `length` that is at most `block`."""
  return max(d for d in range(1, min(length, block) + 1) if length % d == 0)


def _key_blocks(x, size):
  """(B, S, N, H) -> (S / size, B, size, N, H): the scan over key blocks."""
  b, s, n, h = x.shape
  return x.reshape(b, s // size, size, n, h).swapaxes(0, 1)


def _scores(q, kj, j, size, scale):
  """Scaled, causally masked float32 scores of all queries against key
  block j: (B, N, T, size)."""
  s = jnp.einsum('btnh,bsnh->bnts', q, kj,
                 preferred_element_type=jnp.float32) * scale
  q_pos = jnp.arange(q.shape[1])[:, None]
  k_pos = j * size + jnp.arange(size)[None, :]
  return jnp.where(q_pos >= k_pos, s, _MASKED)


def _forward(q, k, v, size):
  """(output, log-sum-exp (B, N, T)) by an online softmax over key blocks."""
  b, t, n, h = q.shape
  scale = 1.0 / math.sqrt(h)

  def body(carry, inputs):
    m, l, acc = carry
    kj, vj, j = inputs
    s = _scores(q, kj, j, size, scale)
    m_new = jnp.maximum(m, s.max(-1))
    correction = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    l = l * correction + p.sum(-1)
    pv = jnp.einsum('bnts,bsnh->btnh', p.astype(vj.dtype), vj,
                    preferred_element_type=jnp.float32)
    acc = acc * correction.transpose(0, 2, 1)[..., None] + pv
    return (m_new, l, acc), None

  init = (jnp.full((b, n, t), _MASKED, jnp.float32),
          jnp.zeros((b, n, t), jnp.float32),
          jnp.zeros((b, t, n, h), jnp.float32))
  blocks = (_key_blocks(k, size), _key_blocks(v, size),
            jnp.arange(k.shape[1] // size))
  (m, l, acc), _ = jax.lax.scan(body, init, blocks)
  out = acc / l.transpose(0, 2, 1)[..., None]
  return out.astype(q.dtype), m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def flash(q, k, v, size):
  """Causal blockwise attention (key blocks of `size`), memory linear in T."""
  return _forward(q, k, v, size)[0]


def _flash_fwd(q, k, v, size):
  out, lse = _forward(q, k, v, size)
  return out, (q, k, v, out, lse)


def _flash_bwd(size, residuals, d_out):
  q, k, v, out, lse = residuals
  scale = 1.0 / math.sqrt(q.shape[-1])
  d_out32 = d_out.astype(jnp.float32)
  delta = jnp.sum(d_out32 * out.astype(jnp.float32), -1).transpose(0, 2, 1)

  def body(dq, inputs):
    kj, vj, j = inputs
    p = jnp.exp(_scores(q, kj, j, size, scale) - lse[..., None])
    dv = jnp.einsum('bnts,btnh->bsnh', p, d_out32)
    dp = jnp.einsum('btnh,bsnh->bnts', d_out32, vj,
                    preferred_element_type=jnp.float32)
    ds = p * (dp - delta[..., None]) * scale
    dq = dq + jnp.einsum('bnts,bsnh->btnh', ds, kj,
                         preferred_element_type=jnp.float32)
    dk = jnp.einsum('bnts,btnh->bsnh', ds, q,
                    preferred_element_type=jnp.float32)
    return dq, (dk, dv)

  blocks = (_key_blocks(k, size), _key_blocks(v, size),
            jnp.arange(k.shape[1] // size))
  dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(q.shape, jnp.float32), blocks)

  def unblock(x, like):
    return x.swapaxes(0, 1).reshape(like.shape).astype(like.dtype)

  return dq.astype(q.dtype), unblock(dk, k), unblock(dv, v)


flash.defvjp(_flash_fwd, _flash_bwd)
