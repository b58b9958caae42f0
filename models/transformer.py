"""A decoder-only Transformer language model (pre-norm, RMSNorm).

Sized by `num_layers`, `width`, `num_heads`, `mlp_dim`; positions are
`learned` (an embedding table of `max_len`) or `rope` (rotary, no params).
Residual sums go through the swappable `models.residual` piece.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from distill.errors import check_choice
from models import layers
from models.residual import residual_module

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
    q, k, v = qkv
    if self.positions == 'rope':
      pos = jnp.arange(x.shape[1])
      q, k = rope(q, pos), rope(k, pos)
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(head_dim).astype(
        self.dtype)
    mask = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
    logits = jnp.where(mask, logits.astype(jnp.float32), -1e30)
    probs = jax.nn.softmax(logits, -1).astype(self.dtype)
    out = jnp.einsum('bhqk,bkhd->bqhd', probs, v)
    return nn.DenseGeneral(
        width, axis=(-2, -1), dtype=self.dtype, use_bias=False,
        kernel_init=layers.partitioned(nn.initializers.lecun_normal(),
                                       ('heads', 'kv', 'embed')),
        name='out')(out)


class DecoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  positions: str = 'learned'
  dropout: float = 0.0
  residual: str = 'standard'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    y = CausalSelfAttention(self.num_heads, self.positions, self.dtype,
                            name='attn')(RMSNorm(dtype=self.dtype,
                                                 name='norm1')(x))
    x = residual_module(self.residual, name='residual1')(x, drop(y))
    y = RMSNorm(dtype=self.dtype, name='norm2')(x)
    y = layers.Dense(self.mlp_dim, ('embed', 'mlp'), dtype=self.dtype,
                     name='mlp_in')(y)
    y = layers.Dense(x.shape[-1], ('mlp', 'embed'), dtype=self.dtype,
                     name='mlp_out')(nn.gelu(y))
    return residual_module(self.residual, name='residual2')(x, drop(y))


class TransformerLM(nn.Module):
  """Token ids (batch, seq) -> next-token logits (batch, seq, vocab)."""
  num_classes: int                # vocabulary size
  num_layers: int = 4
  width: int = 128
  num_heads: int = 4
  mlp_dim: int = 512
  max_len: int = 256
  positions: str = 'learned'
  dropout: float = 0.0
  residual: str = 'standard'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, train=False):
    check_choice('model.positions', self.positions, POSITIONS)
    embed = nn.Embed(self.num_classes, self.width, dtype=self.dtype,
                     embedding_init=layers.partitioned(
                         nn.initializers.normal(0.02), ('vocab', 'embed')),
                     name='embed')
    x = embed(tokens)
    if self.positions == 'learned':
      pos = self.param('pos_embed', layers.partitioned(
          nn.initializers.normal(0.02), (None, 'embed')),
                       (self.max_len, self.width))
      x = x + pos[None, :tokens.shape[1]].astype(self.dtype)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(self.num_layers):
      x = DecoderBlock(self.num_heads, self.mlp_dim, self.positions,
                       self.dropout, self.residual, self.dtype,
                       name=f'block{i}')(x, train)
    x = RMSNorm(dtype=self.dtype, name='final_norm')(x)
    self.sow('intermediates', 'pre_logits', x)
    return layers.Dense(self.num_classes, ('embed', 'vocab'), use_bias=False,
                        dtype=self.dtype, name='head')(x).astype(jnp.float32)
