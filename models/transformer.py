"""A decoder-only Transformer language model (pre-norm, RMSNorm).

Sized by `num_layers`, `width`, `num_heads`, `mlp_dim`; positions are
`learned` (an embedding table of `max_len`) or `rope` (rotary, no params).
Each block's residual goes through the swappable `models.residual` piece
(`residual`, `residual_kw`; LAuReL in `models/laurel.py`). `attention`
picks the attention implementation (`models/attention.py`), `remat` what a
block keeps for the backward pass (`models/layers.py: REMAT_POLICIES`).
Activations are constrained by logical names at the embedding output, each
block's input and output, inside attention and the MLP, and at the logits.

Pretrained families (Llama 3.x, Qwen2/2.5, Qwen3, Gemma 2; their import:
`distill/hf_checkpoint.py`) are points of the same space, set by fields
whose defaults are this project's own LM:
  num_kv_heads (0: num_heads; fewer: grouped-query attention), head_dim (0:
  width // num_heads), mlp ('gelu': Dense-GELU-Dense with biases; 'swiglu',
  'geglu': gated, no biases), qkv_bias, qk_norm (RMSNorm of each head's
  query and key, Qwen3), norm_eps, norm_plus_one (norms scale by 1 + gain,
  gains start at 0: Gemma), post_norms (a norm on each branch output too:
  Gemma 2), embed_scale (embeddings times sqrt(width): Gemma),
  rope_theta, rope_scaling ('' | 'llama3' with rope_factor,
  rope_low_freq_factor, rope_high_freq_factor, rope_original_max_len),
  query_pre_attn_scalar (0: head_dim; scores scale by its -1/2 power),
  attn_softcap, logit_softcap (c * tanh(x / c); 0: none), sliding_window
  (0: none; else the even-numbered layers, 0, 2, ..., see only that many
  newest keys: Gemma 2).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from core.errors import ConfigError, check_choice
from models import attention as attention_lib
from models import layers
from models import residual as residual_lib

SEQ = ('activation_batch', 'activation_length', 'activation_embed')
HEADS = ('activation_batch', 'activation_length', 'activation_heads',
         'activation_kv')

POSITIONS = ('learned', 'rope')
MLPS = {'gelu': None, 'swiglu': nn.silu, 'geglu': nn.gelu}
ROPE_SCALINGS = ('', 'llama3')
# The family fields of TransformerLM and their defaults (this project's LM).
FAMILY = dict(num_kv_heads=0, head_dim=0, mlp='gelu', qkv_bias=False,
              qk_norm=False, norm_eps=1e-6, norm_plus_one=False,
              post_norms=False, embed_scale=False, rope_theta=10000.0,
              rope_scaling='', rope_factor=8.0, rope_low_freq_factor=1.0,
              rope_high_freq_factor=4.0, rope_original_max_len=8192,
              query_pre_attn_scalar=0.0, attn_softcap=0.0, logit_softcap=0.0,
              sliding_window=0)


class RMSNorm(nn.Module):
  """RMSNorm; `plus_one` scales by (1 + gain) with gains starting at 0."""
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  plus_one: bool = False
  names: tuple = ('embed',)

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
    scale = self.param('scale', layers.partitioned(init, self.names),
                       (x.shape[-1],))
    if self.plus_one:
      scale = 1.0 + scale
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
    return (x32 * scale).astype(self.dtype)


def rope_frequencies(half, base=10000.0, scaling=None):
  """The `half` rotary frequencies; `scaling` a dict of Llama 3's
  rope_scaling (type 'llama3', factor, low_freq_factor, high_freq_factor,
  original_max_len) or None."""
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  if not scaling:
    return freq
  factor = scaling['factor']
  low, high = scaling['low_freq_factor'], scaling['high_freq_factor']
  old = scaling['original_max_len']
  wavelen = 2 * jnp.pi / freq
  scaled = jnp.where(wavelen > old / low, freq / factor, freq)
  smooth = (old / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= old / high) & (wavelen <= old / low)
  return jnp.where(medium, smoothed, scaled)


def rope(x, positions, base=10000.0, scaling=None):
  """Rotary position embedding on (..., seq, heads, head_dim); `positions`
  (seq,) or, per row, (batch, seq)."""
  half = x.shape[-1] // 2
  freq = rope_frequencies(half, base, scaling)
  angles = positions[..., None].astype(jnp.float32) * freq  # (.., seq, half)
  sin, cos = jnp.sin(angles)[..., None, :], jnp.cos(angles)[..., None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin],
                         -1).astype(x.dtype)


class CausalSelfAttention(nn.Module):
  """Causal self-attention; `fam` the family fields (TransformerLM's
  docstring) as a sorted tuple of pairs, `window` a sliding window (None:
  none; may be traced). `pos` (B, T): the tokens' positions (rope), `valid`
  (B, T): which are not padding (TransformerLM.__call__). `cache_len` > 0:
  decoding, the keys and values written to a cache of that length
  (collection 'cache') and each call's queries attend to all written."""
  num_heads: int
  positions: str = 'learned'
  attention: str = 'xla'
  dtype: jnp.dtype = jnp.float32
  fam: tuple = ()
  cache_len: int = 0

  @nn.compact
  def __call__(self, x, window=None, pos=None, valid=None):
    f = dict(FAMILY, **dict(self.fam))
    width = x.shape[-1]
    head_dim = f['head_dim'] or width // self.num_heads
    kv_heads = f['num_kv_heads'] or self.num_heads
    init = layers.partitioned(nn.initializers.lecun_normal(),
                              ('embed', 'heads', 'kv'))
    bias = layers.partitioned(nn.initializers.zeros, ('heads', 'kv'))
    qkv = [nn.DenseGeneral((n, head_dim), dtype=self.dtype,
                           use_bias=f['qkv_bias'], kernel_init=init,
                           bias_init=bias, name=name)(x)
           for name, n in (('query', self.num_heads), ('key', kv_heads),
                           ('value', kv_heads))]
    q, k, v = (layers.constrain(a, HEADS) for a in qkv)
    if f['qk_norm']:
      norm = dict(eps=f['norm_eps'], dtype=self.dtype,
                  plus_one=f['norm_plus_one'], names=('kv',))
      q = RMSNorm(**norm, name='query_norm')(q)
      k = RMSNorm(**norm, name='key_norm')(k)
    if self.positions == 'rope':
      pos = jnp.arange(x.shape[1]) if pos is None else pos
      scaling = None
      if f['rope_scaling']:
        scaling = dict(factor=f['rope_factor'],
                       low_freq_factor=f['rope_low_freq_factor'],
                       high_freq_factor=f['rope_high_freq_factor'],
                       original_max_len=f['rope_original_max_len'])
      q = rope(q, pos, f['rope_theta'], scaling)
      k = rope(k, pos, f['rope_theta'], scaling)
    if f['query_pre_attn_scalar']:     # every implementation scales by H^-1/2
      q = q * jnp.asarray(math.sqrt(head_dim / f['query_pre_attn_scalar']),
                          q.dtype)
    if self.cache_len:
      out = self._decode(q, k, v, valid, f['attn_softcap'], window)
    elif valid is not None:
      index = jnp.broadcast_to(jnp.arange(x.shape[1]), valid.shape)
      out = attention_lib.attend_masked(q, k, v, index, index, valid,
                                        f['attn_softcap'], window)
    else:
      out = attention_lib.attend(q, k, v, self.attention,
                                 softcap=f['attn_softcap'], window=window)
    out = layers.constrain(out, HEADS)
    return nn.DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, use_bias=False,
        kernel_init=layers.partitioned(nn.initializers.lecun_normal(),
                                       ('heads', 'kv', 'embed')),
        name='out')(out)

  def _decode(self, q, k, v, valid, softcap, window):
    """Writes k, v (and `valid`) at the cache's index, attends the queries
    to every key written so far (theirs included), advances the index."""
    b, t = k.shape[:2]
    shape = (b, self.cache_len) + k.shape[2:]
    keys = self.variable('cache', 'cached_key', jnp.zeros, shape, k.dtype)
    values = self.variable('cache', 'cached_value', jnp.zeros, shape,
                           v.dtype)
    written = self.variable('cache', 'cached_valid', jnp.zeros,
                            (b, self.cache_len), bool)
    index = self.variable('cache', 'cache_index',
                          lambda: jnp.zeros((), jnp.int32))
    i = index.value
    valid = jnp.ones((b, t), bool) if valid is None else valid
    keys.value = jax.lax.dynamic_update_slice(keys.value, k, (0, i, 0, 0))
    values.value = jax.lax.dynamic_update_slice(values.value, v,
                                                (0, i, 0, 0))
    written.value = jax.lax.dynamic_update_slice(written.value, valid, (0, i))
    index.value = i + t
    q_index = jnp.broadcast_to(i + jnp.arange(t), (b, t))
    k_index = jnp.broadcast_to(jnp.arange(self.cache_len),
                               (b, self.cache_len))
    return attention_lib.attend_masked(q, keys.value, values.value, q_index,
                                       k_index, written.value, softcap,
                                       window)


class DecoderBlock(nn.Module):
  """Pre-norm attention then MLP. The block's branch is
  f(x) = a + m with a = attn(norm(x)) and m = mlp(norm(x + a)), and its output
  is `residual(x, f(x), prev)`: with the standard residual exactly the usual
  x + a + m, and one LAuReL instance per block (the paper's placement).
  With `post_norms` a and m are normed once more (Gemma 2). `layer` (an int
  or a traced index under nn.scan) picks the sliding-window layers."""
  num_heads: int
  mlp_dim: int
  positions: str = 'learned'
  dropout: float = 0.0
  residual: str = 'standard'
  residual_kw: tuple = ()
  attention: str = 'xla'
  dtype: jnp.dtype = jnp.float32
  fam: tuple = ()
  cache_len: int = 0

  @nn.compact
  def __call__(self, x, prev=(), train=False, layer=0, pos=None, valid=None):
    f = dict(FAMILY, **dict(self.fam))
    x = layers.constrain(x, SEQ)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    norm = dict(eps=f['norm_eps'], dtype=self.dtype,
                plus_one=f['norm_plus_one'])
    window = None
    if f['sliding_window']:          # the even-numbered layers (Gemma 2)
      window = jnp.where(jnp.asarray(layer) % 2 == 0, f['sliding_window'],
                         max(x.shape[1], self.cache_len) + 1)
    a = CausalSelfAttention(self.num_heads, self.positions, self.attention,
                            self.dtype, self.fam, self.cache_len,
                            name='attn')(RMSNorm(**norm, name='norm1')(x),
                                         window, pos, valid)
    if f['post_norms']:
      a = RMSNorm(**norm, name='post_norm1')(a)
    a = drop(a)
    y = RMSNorm(**norm, name='norm2')(x + a)
    mlp_act = ('activation_batch', 'activation_length', 'activation_mlp')
    if f['mlp'] == 'gelu':
      y = layers.Dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                       name='mlp_in')(y)
      y = nn.gelu(layers.constrain(y, mlp_act))
      m = layers.Dense(x.shape[-1], ('mlp', 'embed'), dtype=self.dtype,
                       name='mlp_out')(y)
    else:
      gate = layers.Dense(self.mlp_dim, ('embed', 'mlp'), use_bias=False,
                          dtype=self.dtype, name='mlp_gate')(y)
      up = layers.Dense(self.mlp_dim, ('embed', 'mlp'), use_bias=False,
                        dtype=self.dtype, name='mlp_in')(y)
      y = MLPS[f['mlp']](layers.constrain(gate, mlp_act)) * layers.constrain(
          up, mlp_act)
      m = layers.Dense(x.shape[-1], ('mlp', 'embed'), use_bias=False,
                       dtype=self.dtype, name='mlp_out')(y)
    if f['post_norms']:
      m = RMSNorm(**norm, name='post_norm2')(m)
    m = drop(m)
    out = residual_lib.residual_module(
        self.residual, self.residual_kw, dtype=self.dtype,
        name='residual')(x, a + m, prev)
    return layers.constrain(out, SEQ), residual_lib.push_history(prev, x)


class ScannedBlocks(nn.Module):
  """`DecoderBlock` as the body of `nn.scan` over layers: carry (x, prev)."""
  block: dict
  train: bool = False
  remat: str = 'none'

  @nn.compact
  def __call__(self, carry, layer):
    x, prev = carry
    block = layers.remat(DecoderBlock, self.remat, static_argnums=(3,),
                         prevent_cse=False)     # inside scan: no CSE to undo
    args = (x, prev, self.train) + (() if layer is None else (layer,))
    x, prev = block(**self.block, name='block')(*args)
    return (x, prev), None


class TransformerLM(nn.Module):
  """Token ids (batch, seq) -> next-token logits (batch, seq, vocab).

  `scan_layers=True` runs the blocks under `nn.scan` (one compiled body,
  parameters stacked on a leading 'layers' axis under params/blocks/block);
  the residual history LAuReL-PA reads is then part of the fixed-size carry.
  `tie_embeddings` computes the logits with the embedding table;
  `embed_from=D` keeps a (vocab, D) table (and positions) and a learned
  projection to `width` (GUIDE's trainable-projection reading).

  Padded batches and decoding (distill/generate.py): `valid` (batch, seq)
  marks the tokens that are not padding (left padding: a prompt's tokens
  at the end of its row), `positions` (batch, seq) each token's position
  (0 at its row's first real token); `cache_len` > 0 makes the model a
  decoder whose attention layers keep the keys and values of every call in
  the 'cache' collection (apply with mutable=['cache']), each call's tokens
  following the ones before. These paths attend with XLA's masked
  attention (models/attention.py: attend_masked), unrolled layers only.
  """
  num_classes: int                # vocabulary size
  num_layers: int = 4
  width: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 256
  positions: str = 'learned'
  dropout: float = 0.0
  residual: str = 'standard'
  residual_kw: tuple = ()
  scan_layers: bool = False
  tie_embeddings: bool = False
  embed_from: int = 0
  attention: str = 'xla'
  remat: str = 'none'
  dtype: jnp.dtype = jnp.float32
  # the family fields (FAMILY; the module docstring)
  num_kv_heads: int = 0
  head_dim: int = 0
  mlp: str = 'gelu'
  qkv_bias: bool = False
  qk_norm: bool = False
  norm_eps: float = 1e-6
  norm_plus_one: bool = False
  post_norms: bool = False
  embed_scale: bool = False
  rope_theta: float = 10000.0
  rope_scaling: str = ''
  rope_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  query_pre_attn_scalar: float = 0.0
  attn_softcap: float = 0.0
  logit_softcap: float = 0.0
  sliding_window: int = 0
  cache_len: int = 0
  # the head's matmul (HEAD_MATMULS): 'auto' is 'rows' on the CPU backend
  head_matmul: str = 'auto'

  def family(self):
    """The family fields that differ from FAMILY, as sorted pairs."""
    return tuple(sorted((k, getattr(self, k)) for k, v in FAMILY.items()
                        if getattr(self, k) != v))

  def check_family(self):
    """One-line ConfigErrors for family fields that do not fit together."""
    check_choice('model.mlp', self.mlp, MLPS)
    check_choice('model.rope_scaling', self.rope_scaling, ROPE_SCALINGS)
    check_choice('model.head_matmul', self.head_matmul, HEAD_MATMULS)
    kv = self.num_kv_heads or self.num_heads
    if kv <= 0 or self.num_heads % kv:
      raise ConfigError(f'model.num_kv_heads={self.num_kv_heads} must divide '
                        f'model.num_heads={self.num_heads}')
    if self.positions != 'rope' and (self.rope_scaling or
                                     self.rope_theta != FAMILY['rope_theta']):
      raise ConfigError('model.rope_theta and model.rope_scaling need '
                        "model.positions='rope'")
    attention_lib.check_features(
        self.attention, self.attn_softcap,
        self.sliding_window if self.sliding_window else None)

  @nn.compact
  def __call__(self, tokens, train=False, positions=None, valid=None,
               hidden=False):
    """Logits (batch, seq, vocab) in float32; `hidden=True`: (the final
    normed hidden states (batch, seq, width), the unembedding (width,
    vocab)) instead, whose `project` is the logits, so a loss can compute
    them a chunk of tokens at a time (distill/chunked.py)."""
    check_choice('model.positions', self.positions, POSITIONS)
    self.check_family()
    masked = positions is not None or valid is not None or self.cache_len
    if masked and self.scan_layers:
      raise ConfigError('padded batches and decoding run unrolled layers: '
                        'model.scan_layers=False (distill/generate.py: '
                        'unstack_layers converts the parameters)')
    if self.cache_len and positions is None:
      raise ConfigError('a decoding TransformerLM (cache_len > 0) needs each '
                        "token's positions")
    if self.embed_from and self.tie_embeddings:
      raise ConfigError('model.embed_from (a projected embedding table) '
                        'cannot be combined with model.tie_embeddings')
    table_width = self.embed_from or self.width
    embed = nn.Embed(self.num_classes, table_width, dtype=self.dtype,
                     embedding_init=layers.partitioned(
                         nn.initializers.normal(0.02), ('vocab', 'embed')),
                     name='embed')
    x = embed(tokens)
    if self.embed_scale:        # Gemma: sqrt(width), rounded to the dtype
      x = x * jnp.asarray(math.sqrt(self.width), x.dtype)
    if self.positions == 'learned':
      pos = self.param('pos_embed', layers.partitioned(
          nn.initializers.normal(0.02), (None, 'embed')),
                       (self.max_len, table_width))
      x = x + (pos[None, :tokens.shape[1]] if positions is None else
               pos[positions]).astype(self.dtype)
    if self.embed_from:       # GUIDE's trainable projection of a wider table
      proj = self.param('embed_proj', layers.partitioned(
          nn.initializers.lecun_normal(), (None, 'embed')),
                        (self.embed_from, self.width))
      x = x @ proj.astype(self.dtype)
    x = layers.constrain(nn.Dropout(self.dropout, deterministic=not train)(x),
                         SEQ)
    prev = residual_lib.init_history(
        residual_lib.history_length(self.residual, self.residual_kw), x)
    block = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                 positions=self.positions, dropout=self.dropout,
                 residual=self.residual, residual_kw=self.residual_kw,
                 attention=self.attention, dtype=self.dtype,
                 fam=self.family(), cache_len=self.cache_len)
    if self.scan_layers:
      scanned = nn.scan(ScannedBlocks, variable_axes={'params': 0},
                        split_rngs={'params': True, 'dropout': True},
                        length=self.num_layers,
                        metadata_params={nn.PARTITION_NAME: 'layers'})
      layer = (jnp.arange(self.num_layers) if self.sliding_window
               else None)
      (x, _), _ = scanned(block, train, self.remat, name='blocks')(
          (x, prev), layer)
    else:
      block_cls = layers.remat(DecoderBlock, self.remat, static_argnums=(3,))
      for i in range(self.num_layers):
        args = (x, prev, train) + (
            (i, positions, valid) if masked else
            (i,) if self.sliding_window else ())
        x, prev = block_cls(**block, name=f'block{i}')(*args)
    x = RMSNorm(eps=self.norm_eps, dtype=self.dtype,
                plus_one=self.norm_plus_one, name='final_norm')(x)
    self.sow('intermediates', 'pre_logits', x)
    if hidden:
      return x, nn.meta.unbox(
          embed.embedding.T if self.tie_embeddings else
          self.variables['params']['head']['dense']['kernel'])
    if self.tie_embeddings:
      head = embed.attend
    else:
      head = layers.Dense(self.num_classes, ('embed', 'vocab'),
                          use_bias=False, dtype=self.dtype, name='head')
    logits = head_logits(self.head_matmul, head, x).astype(jnp.float32)
    if self.logit_softcap:
      logits = self.logit_softcap * jnp.tanh(logits / self.logit_softcap)
    return layers.constrain(logits, (
        'activation_batch', 'activation_length', 'activation_vocab'))


# model.head_matmul: how the head multiplies the final hidden states
# (batch, seq, width) by the unembedding (width, vocab), with the same
# numbers either way. 'rows': the tokens flattened into rows
# (models/layers.over_rows), for XLA:CPU, which otherwise computes the
# head's weight gradient through a transposed copy of the logits' gradient,
# the largest single cost of a CPU-scale LM step; 'plain': one contraction
# over batch and sequence, for accelerators and the compile check (XLA's
# memory plan for the flattened head can keep one more logits buffer: the
# dense 256k-vocabulary step, `python -m launch.compile_check
# --config=configs/guide_lm.py:scale=paper,method=forward_kl,vocab=256000
# --devices=8 --config.model.head_matmul=rows`, 51.67 GiB of temporaries
# against 43.86 with 'plain'). 'auto': 'rows' on the CPU backend.
HEAD_MATMULS = ('auto', 'rows', 'plain')


def head_logits(choice, head, x):
  """`head(x)`, over rows where `choice` (model.head_matmul, checked by
  the model) says so."""
  rows = choice == 'rows' or (choice == 'auto' and
                              jax.default_backend() == 'cpu')
  return layers.over_rows(head, x) if rows else head(x)


def project(model, x, head):
  """A TransformerLM's float32 logits from its final hidden states `x`
  (..., width) and unembedding `head` (width, vocab), as `hidden=True`
  returns them: what its plain call computes, in the model's dtype, then
  the soft cap."""
  logits = head_logits(model.head_matmul,
                       lambda r: jnp.dot(r, head.astype(model.dtype)),
                       x.astype(model.dtype)).astype(jnp.float32)
  if model.logit_softcap:
    logits = model.logit_softcap * jnp.tanh(logits / model.logit_softcap)
  return logits
