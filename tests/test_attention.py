"""Attention implementations equal the einsum path the LM used before them
(forward and gradients), and flash attention's memory is linear in length;
the analytic FLOP count equals a hand count; remat changes no numbers."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal, randint

from core.errors import ConfigError
from distill import flops
from models import attention
import models


def einsum_attention(q, k, v):
  """The LM's attention before models/attention.py (the reference)."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / jnp.sqrt(q.shape[-1])
  mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
  probs = jax.nn.softmax(jnp.where(mask, logits, -1e30), -1)
  return jnp.einsum('bhqk,bkhd->bqhd', probs, v)


@pytest.mark.slow
@pytest.mark.parametrize('impl,block', [('xla', 512), ('flash', 512),
                                        ('flash', 16), ('flash', 7),
                                        ('auto', 512)])
def test_implementations_equal_the_einsum_path(impl, block):
  q, k, v, w = (normal((0, i), (2, 48, 3, 8)) for i in range(4))

  def loss(fn, *qkv):
    return jnp.sum(fn(*qkv) * w)

  fn = functools.partial(attention.attend, implementation=impl, block=block)
  np.testing.assert_allclose(fn(q, k, v), einsum_attention(q, k, v),
                             atol=2e-6)
  got = jax.grad(functools.partial(loss, fn), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(functools.partial(loss, einsum_attention),
                  argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=5e-6)


def test_block_size_divides_the_length():
  assert attention.block_size(2048, 512) == 512
  assert attention.block_size(48, 512) == 48
  assert attention.block_size(100, 64) == 50


@pytest.mark.slow
def test_flash_memory_grows_linearly_with_length():
  """XLA's temporaries for flash attention's gradient at 4,096 tokens are
  twice those at 2,048 (the einsum path's grow four times)."""
  def temp(fn, t):
    x = jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)),
                            argnums=(0, 1, 2)))
    return grad.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

  flash = functools.partial(attention.attend, implementation='flash',
                            block=128)
  assert temp(flash, 4096) / temp(flash, 2048) < 2.2
  assert temp(einsum_attention, 4096) / temp(einsum_attention, 2048) > 3.5


def test_unknown_implementation_is_one_line():
  with pytest.raises(ConfigError, match="unknown model.attention 'fast'; "
                     'valid choices: auto, cudnn, flash, pallas, xla'):
    models.build('transformer_lm', 10, attention='fast')
  with pytest.raises(ConfigError, match="unknown model.remat 'some'"):
    models.build('resnet', 10, remat='some')


LM = dict(num_layers=3, width=32, num_heads=4, mlp_dim=64, max_len=16)


@pytest.mark.parametrize('scan', [False, True])
def test_analytic_flops_of_a_small_lm_equal_a_hand_count(scan):
  b, t, (l, d, f), v = 2, 16, (3, 32, 64), 50
  model = models.build('transformer_lm', v, scan_layers=scan, **LM)
  x = jax.ShapeDtypeStruct((b, t), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jnp.zeros((b, t), jnp.int32))
  per_layer = 2 * b * t * d * (4 * d + 2 * f) + 4 * b * t * t * d
  assert flops.forward(model, variables, x) == l * per_layer + 2 * b * t * d * v


def test_analytic_flops_of_a_resnet8_equal_a_hand_count():
  model = models.build('resnet', 10, depth=8, width=1.0)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jnp.zeros((2, 32, 32, 3)))
  b = 2

  def conv(hw, cin, cout, k=3):
    return 2 * b * hw * hw * cout * k * k * cin

  hand = (conv(32, 3, 16) + 2 * conv(32, 16, 16)            # stem, stage 0
          + conv(16, 16, 32) + conv(16, 32, 32) + conv(16, 16, 32, 1)
          + conv(8, 32, 64) + conv(8, 64, 64) + conv(8, 32, 64, 1)
          + 2 * b * 64 * 10)                                 # head
  assert flops.forward(model, variables, x) == hand


@pytest.mark.slow
@pytest.mark.parametrize('name,kw,shape,policy', [
    ('transformer_lm', dict(LM, scan_layers=True), (2, 16), 'full'),
    ('transformer_lm', LM, (2, 16), 'dots_no_batch'),
    ('resnet', dict(depth=8, width=0.25), (2, 8, 8, 3), 'dots'),
])
def test_remat_changes_no_numbers(name, kw, shape, policy):
  x = (randint(1, shape, 0, 10)
       if name == 'transformer_lm' else normal(1, shape))
  plain = models.build(name, 10, **kw)
  remat = models.build(name, 10, remat=policy, **kw)
  variables = plain.init(jax.random.PRNGKey(0), x)

  def loss(model, params):
    out, _ = model.apply({**variables, 'params': params}, x, train=True,
                         mutable=['batch_stats'])
    return jnp.sum(out ** 2)

  g_plain = jax.jit(jax.grad(functools.partial(loss, plain)))(
      variables['params'])
  g_remat = jax.jit(jax.grad(functools.partial(loss, remat)))(
      variables['params'])
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
    # float32 sums in another order: an element's rounding error scales
    # with its leaf's largest terms
    np.testing.assert_allclose(a, b, rtol=1e-5,
                               atol=1e-6 * (1 + float(np.max(np.abs(a)))))
