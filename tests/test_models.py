"""Models: shapes, sizes, logical names, causality, residual registry."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal, randint

from core.errors import ConfigError
from models import residual
import models


def init(model, x):
  return model.init(jax.random.PRNGKey(0), x, train=False)


def n_params(variables):
  return sum(x.size for x in jax.tree.leaves(nn.meta.unbox(
      variables['params'])))


@pytest.mark.slow
@pytest.mark.parametrize('depth,expected', [(8, 78_000), (20, 272_000),
                                            (32, 467_000)])
def test_resnet_sizes_match_the_paper_family(depth, expected):
  """He et al. report 0.27M parameters for ResNet-20 and 0.46M for -32."""
  model = models.build('resnet', 10, depth=depth)
  v = init(model, jnp.zeros((1, 32, 32, 3)))
  assert abs(n_params(v) - expected) / expected < 0.06


@pytest.mark.slow
@pytest.mark.parametrize('depth,millions', [(18, 11.69), (50, 25.56)])
def test_imagenet_resnet_sizes(depth, millions):
  """torchvision's ResNet-18 has 11.69M and ResNet-50 25.56M parameters."""
  model = models.build('resnet_imagenet', 1000, depth=depth)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 64, 64, 3))))
  n = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes['params'])))
  assert abs(n / 1e6 - millions) < 0.05


@pytest.mark.slow
def test_resnet_width_multiplier_and_output():
  model = models.build('resnet', 10, depth=8, width=2.0)
  x = jnp.zeros((2, 32, 32, 3))
  v = init(model, x)
  assert v['params']['stem']['kernel'].value.shape == (3, 3, 3, 32)
  assert model.apply(v, x).shape == (2, 10)


def test_resnet_rejects_bad_depth():
  with pytest.raises(ConfigError, match='valid choices: 8, 20'):
    init(models.build('resnet', 10, depth=10), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.slow
@pytest.mark.parametrize('name,kw,shape', [
    ('mlp', dict(hidden=(32,)), (2, 8, 8, 1)),
    ('cnn', dict(widths=(8, 16)), (2, 28, 28, 1)),
    ('cnn', dict(widths=(8, 16), dense=32), (2, 40, 1)),
])
def test_classifiers_output_logits(name, kw, shape):
  model = models.build(name, 10, **kw)
  x = jnp.ones(shape)
  v = init(model, x)
  assert model.apply(v, x).shape == (2, 10)


@pytest.mark.slow
def test_every_kernel_has_logical_names():
  for model, x in [
      (models.build('resnet', 10, depth=8), jnp.zeros((1, 32, 32, 3))),
      (models.build('transformer_lm', 11, num_layers=1, width=16,
                    num_heads=2, mlp_dim=32, max_len=8),
       jnp.zeros((1, 8), jnp.int32))]:
    v = model.init(jax.random.PRNGKey(0), x)
    leaves = jax.tree.leaves(v['params'],
                             is_leaf=lambda l: isinstance(l, nn.Partitioned))
    for leaf in leaves:
      assert isinstance(leaf, nn.Partitioned), leaf
      assert len(leaf.names) == leaf.value.ndim


@pytest.mark.slow
@pytest.mark.parametrize('positions', ['learned', 'rope'])
def test_transformer_is_causal(positions):
  model = models.build('transformer_lm', 13, num_layers=2, width=32,
                       num_heads=4, mlp_dim=64, max_len=16,
                       positions=positions)
  x = randint(1, (2, 16), 0, 13)
  v = init(model, x)
  y1 = model.apply(v, x)
  y2 = model.apply(v, x.at[:, 10:].set((x[:, 10:] + 1) % 13))
  assert y1.shape == (2, 16, 13)
  np.testing.assert_allclose(y1[:, :10], y2[:, :10], atol=1e-5)
  assert not np.allclose(y1[:, 10:], y2[:, 10:])


def test_rope_is_relative():
  """Rotary attention scores depend on position differences only."""
  from models.transformer import rope
  q = normal(0, (1, 1, 8))
  k = normal(1, (1, 1, 8))
  def score(i, j):
    return jnp.sum(rope(q[None], jnp.array([i]))[0] *
                   rope(k[None], jnp.array([j]))[0])
  np.testing.assert_allclose(score(3, 1), score(7, 5), rtol=1e-5)


def test_unknown_model_and_option_errors():
  with pytest.raises(ConfigError, match='valid choices: cnn, mlp, resnet, '
                     'resnet_imagenet, transformer_lm'):
    models.build('vit', 10)
  with pytest.raises(ConfigError, match='valid choices: conv, depth, '
                     'extra_blocks, '
                     'remat, residual, residual_kw, width'):
    models.build('resnet', 10, dept=20)


@pytest.mark.slow
def test_residual_is_swappable():
  """A registered residual variant is picked up by name in every block."""
  @residual.register('test_scaled')
  class Scaled(nn.Module):  # pylint: disable=unused-variable
    dtype: object = jnp.float32

    @classmethod
    def history_length(cls, **unused_kw):
      return 0

    @nn.compact
    def __call__(self, x, fx, prev=()):
      a = self.param('alpha', nn.initializers.constant(0.5), ())
      return x + a * fx
  try:
    model = models.build('resnet', 10, depth=8, residual='test_scaled')
    v = init(model, jnp.zeros((1, 32, 32, 3)))
    blocks = [k for k in v['params'] if k.startswith('stage')]
    assert blocks and all('alpha' in v['params'][b]['residual']
                          for b in blocks)
    lm = models.build('transformer_lm', 7, num_layers=2, width=16,
                      num_heads=2, mlp_dim=16, max_len=4,
                      residual='test_scaled')
    v = init(lm, jnp.zeros((1, 4), jnp.int32))
    assert 'alpha' in v['params']['block1']['residual']
  finally:
    del residual.RESIDUALS['test_scaled']
  with pytest.raises(ConfigError, match='valid choices: laurel_lr, .* '
                     'standard'):
    residual.residual_module('laurel_xx')


def test_over_rows_equals_the_plain_contraction():
  """The LM head's matmul over rows (models/layers.over_rows) gives the
  plain (batch, tokens, width) x (width, vocab) contraction's logits and
  gradients bitwise: the same numbers, another XLA program."""
  from models import layers  # pylint: disable=g-import-not-at-top
  x, w = normal(0, (4, 6, 8)), normal(1, (8, 16))

  def loss(head, x, w):
    return jnp.sum(jnp.tanh(head(x, w)) * jnp.arange(16.0))

  plain = lambda x, w: jnp.dot(x, w)
  rows = lambda x, w: layers.over_rows(lambda r: jnp.dot(r, w), x)
  np.testing.assert_array_equal(jax.jit(rows)(x, w), jax.jit(plain)(x, w))
  for a, b in zip(jax.jit(jax.grad(lambda *a: loss(rows, *a), (0, 1)))(x, w),
                  jax.jit(jax.grad(lambda *a: loss(plain, *a), (0, 1)))(x, w)):
    np.testing.assert_array_equal(a, b)
  assert layers.over_rows(lambda r: r * 2, x[0]).shape == (6, 8)   # 2-D
