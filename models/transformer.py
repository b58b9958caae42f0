"""A decoder-only Transformer language model (pre-norm, RMSNorm).

Sized by `num_layers`, `width`, `num_heads`, `mlp_dim`; positions are
`learned` (an embedding table of `max_len`) or `rope` (rotary, no params).
Each block's residual goes through the swappable `models.residual` piece
(`residual`, `residual_kw`; LAuReL in `models/laurel.py`). `attention`
picks the attention implementation (`models/attention.py`), `remat` what a
block keeps for the backward pass (`models/layers.py: REMAT_POLICIES`).
Activations are constrained by logical names at the embedding output, each
block's input and output, inside attention and the MLP, and at the logits.
"""
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


class RMSNorm(nn.Module):
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', layers.partitioned(nn.initializers.ones,
                                                   ('embed',)), (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + self.eps)
    return (x32 * scale).astype(self.dtype)


def rope(x, positions, base=10000.0):
  """Rotary position embedding on (..., seq, heads, head_dim)."""
  half = x.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions[:, None].astype(jnp.float32) * freq[None]   # (seq, half)
  sin, cos = jnp.sin(angles)[:, None], jnp.cos(angles)[:, None]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin],
                         -1).astype(x.dtype)


class CausalSelfAttention(nn.Module):
  num_heads: int
  positions: str = 'learned'
  attention: str = 'xla'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    head_dim = width // self.num_heads
    init = layers.partitioned(nn.initializers.lecun_normal(),
                              ('embed', 'heads', 'kv'))
    qkv = [nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype,
                           use_bias=False, kernel_init=init, name=n)(x)
           for n in ('query', 'key', 'value')]
    q, k, v = (layers.constrain(a, HEADS) for a in qkv)
    if self.positions == 'rope':
      pos = jnp.arange(x.shape[1])
      q, k = rope(q, pos), rope(k, pos)
    out = layers.constrain(attention_lib.attend(q, k, v, self.attention),
                           HEADS)
    return nn.DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, use_bias=False,
        kernel_init=layers.partitioned(nn.initializers.lecun_normal(),
                                       ('heads', 'kv', 'embed')),
        name='out')(out)


class DecoderBlock(nn.Module):
  """Pre-norm attention then MLP. The block's branch is
  f(x) = a + m with a = attn(norm(x)) and m = mlp(norm(x + a)), and its output
  is `residual(x, f(x), prev)`: with the standard residual exactly the usual
  x + a + m, and one LAuReL instance per block (the paper's placement)."""
  num_heads: int
  mlp_dim: int
  positions: str = 'learned'
  dropout: float = 0.0
  residual: str = 'standard'
  residual_kw: tuple = ()
  attention: str = 'xla'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, prev=(), train=False):
    x = layers.constrain(x, SEQ)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    a = drop(CausalSelfAttention(self.num_heads, self.positions,
                                 self.attention, self.dtype,
                                 name='attn')(RMSNorm(dtype=self.dtype,
                                                      name='norm1')(x)))
    y = RMSNorm(dtype=self.dtype, name='norm2')(x + a)
    y = layers.Dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                     name='mlp_in')(y)
    y = layers.constrain(y, ('activation_batch', 'activation_length',
                             'activation_mlp'))
    m = drop(layers.Dense(x.shape[-1], ('mlp', 'embed'), dtype=self.dtype,
                          name='mlp_out')(nn.gelu(y)))
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
  def __call__(self, carry, _):
    x, prev = carry
    block = layers.remat(DecoderBlock, self.remat, static_argnums=(3,),
                         prevent_cse=False)     # inside scan: no CSE to undo
    x, prev = block(**self.block, name='block')(x, prev, self.train)
    return (x, prev), None


class TransformerLM(nn.Module):
  """Token ids (batch, seq) -> next-token logits (batch, seq, vocab).

  `scan_layers=True` runs the blocks under `nn.scan` (one compiled body,
  parameters stacked on a leading 'layers' axis under params/blocks/block);
  the residual history LAuReL-PA reads is then part of the fixed-size carry.
  `tie_embeddings` computes the logits with the embedding table;
  `embed_from=D` keeps a (vocab, D) table (and positions) and a learned
  projection to `width` (GUIDE's trainable-projection reading).
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

  @nn.compact
  def __call__(self, tokens, train=False):
    check_choice('model.positions', self.positions, POSITIONS)
    if self.embed_from and self.tie_embeddings:
      raise ConfigError('model.embed_from (a projected embedding table) '
                        'cannot be combined with model.tie_embeddings')
    table_width = self.embed_from or self.width
    embed = nn.Embed(self.num_classes, table_width, dtype=self.dtype,
                     embedding_init=layers.partitioned(
                         nn.initializers.normal(0.02), ('vocab', 'embed')),
                     name='embed')
    x = embed(tokens)
    if self.positions == 'learned':
      pos = self.param('pos_embed', layers.partitioned(
          nn.initializers.normal(0.02), (None, 'embed')),
                       (self.max_len, table_width))
      x = x + pos[None, :tokens.shape[1]].astype(self.dtype)
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
                 attention=self.attention, dtype=self.dtype)
    if self.scan_layers:
      scanned = nn.scan(ScannedBlocks, variable_axes={'params': 0},
                        split_rngs={'params': True, 'dropout': True},
                        length=self.num_layers,
                        metadata_params={nn.PARTITION_NAME: 'layers'})
      (x, _), _ = scanned(block, train, self.remat, name='blocks')(
          (x, prev), None)
    else:
      block_cls = layers.remat(DecoderBlock, self.remat, static_argnums=(3,))
      for i in range(self.num_layers):
        x, prev = block_cls(**block, name=f'block{i}')(x, prev, train)
    x = RMSNorm(dtype=self.dtype, name='final_norm')(x)
    self.sow('intermediates', 'pre_logits', x)
    if self.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = layers.Dense(self.num_classes, ('embed', 'vocab'),
                            use_bias=False, dtype=self.dtype, name='head')(x)
    return layers.constrain(logits.astype(jnp.float32), (
        'activation_batch', 'activation_length', 'activation_vocab'))
