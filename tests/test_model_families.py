"""The TransformerLM's family fields (models/transformer.py): scanned and
unrolled layers agree, remat changes no numbers, grouped-query attention is
the same in every implementation, features an implementation lacks are
refused in one line, and the defaults are this project's LM.

    python -m pytest -q tests/test_model_families.py
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal, randint

from core.errors import ConfigError
from models import attention
import models

VOCAB = 23
BASE = dict(num_layers=3, width=32, num_heads=4, mlp_dim=48, max_len=16,
            positions='rope')
FAMILIES = {
    'llama': dict(mlp='swiglu', num_kv_heads=2, rope_theta=500000.0,
                  rope_scaling='llama3', rope_original_max_len=8,
                  norm_eps=1e-5),
    'qwen2': dict(mlp='swiglu', num_kv_heads=1, qkv_bias=True,
                  tie_embeddings=True),
    'qwen3': dict(mlp='swiglu', num_kv_heads=2, head_dim=16, qk_norm=True),
    'gemma2': dict(mlp='geglu', num_kv_heads=2, head_dim=8,
                   norm_plus_one=True, post_norms=True, embed_scale=True,
                   query_pre_attn_scalar=12.0, attn_softcap=5.0,
                   logit_softcap=4.0, sliding_window=3, tie_embeddings=True),
}


def tokens(shape=(2, 16)):
  return randint(1, shape, 0, VOCAB)


def init(model, x):
  params = nn.unbox(model.init(jax.random.PRNGKey(0), x))['params']
  rng = np.random.default_rng(7)
  return jax.tree.map(   # gains and biases away from their init
      lambda a: a + 0.2 * rng.standard_normal(a.shape).astype(np.float32), params)


def stacked(params, layers):
  """Unrolled params (block0, block1, ...) in nn.scan's layout."""
  out = {k: v for k, v in params.items() if not k.startswith('block')}
  out['blocks'] = {'block': jax.tree.map(
      lambda *a: jnp.stack(a), *[params[f'block{i}'] for i in range(layers)])}
  return out


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_scanned_layers_equal_unrolled_ones(family):
  x = tokens()
  plain = models.build('transformer_lm', VOCAB, **BASE, **FAMILIES[family])
  scanned = models.build('transformer_lm', VOCAB, scan_layers=True, **BASE,
                         **FAMILIES[family])
  params = init(plain, x)
  want = plain.apply({'params': params}, x)
  got = scanned.apply({'params': stacked(params, BASE['num_layers'])}, x)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
  shapes = jax.tree.map(jnp.shape, nn.unbox(scanned.init(
      jax.random.PRNGKey(0), x))['params'])
  assert shapes == jax.tree.map(jnp.shape, stacked(params, 3))


@pytest.mark.slow
@pytest.mark.parametrize('family,scan,policy', [
    ('gemma2', True, 'full'), ('gemma2', False, 'dots_no_batch'),
    ('qwen3', True, 'dots'), ('llama', False, 'full')])
def test_remat_changes_no_numbers(family, scan, policy):
  x = tokens()
  kw = dict(BASE, scan_layers=scan, **FAMILIES[family])
  plain = models.build('transformer_lm', VOCAB, **kw)
  remat = models.build('transformer_lm', VOCAB, remat=policy, **kw)
  params = init(plain, x)

  def loss(model, p):
    return jnp.sum(model.apply({'params': p}, x, train=True) ** 2)

  g_plain = jax.jit(jax.grad(functools.partial(loss, plain)))(params)
  g_remat = jax.jit(jax.grad(functools.partial(loss, remat)))(params)
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
    # float32 sums: an element's rounding error scales with its leaf's
    # largest terms (up to 140 here), not with the element
    np.testing.assert_allclose(a, b, rtol=1e-5,
                               atol=1e-5 + 1e-6 * float(np.max(np.abs(a))))


@pytest.mark.slow
def test_sliding_window_only_on_even_layers():
  """A window as long as the sequence changes nothing; a short one changes
  the logits (which layers: Gemma 2's, tests/test_hf_import.py)."""
  x = tokens()
  kw = dict(BASE, num_layers=2, mlp='geglu')
  full = models.build('transformer_lm', VOCAB, **kw)
  params = init(full, x)
  same = models.build('transformer_lm', VOCAB, sliding_window=16, **kw)
  np.testing.assert_allclose(same.apply({'params': params}, x),
                             full.apply({'params': params}, x), atol=1e-5)
  short = models.build('transformer_lm', VOCAB, sliding_window=2, **kw)
  out = short.apply({'params': params}, x)
  assert not np.allclose(out, full.apply({'params': params}, x), atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize('impl', ['flash', 'auto'])
def test_grouped_query_attention_in_every_implementation(impl):
  q = normal((0, 0), (2, 12, 6, 8))
  k, v = (normal((0, i), (2, 12, 2, 8)) for i in (1, 2))
  want = attention.attend(q, k, v, 'xla')
  repeated = [jnp.repeat(a, 3, axis=2) for a in (k, v)]
  np.testing.assert_allclose(attention.attend(q, *repeated, 'xla'), want,
                             atol=1e-5)
  np.testing.assert_allclose(attention.attend(q, k, v, impl, block=4), want,
                             atol=1e-5)
  # the einsum path of soft-capping and windows, with neither in effect
  np.testing.assert_allclose(attention.attend(q, k, v, 'xla', window=12),
                             want, atol=1e-5)


@pytest.mark.parametrize('impl', ['flash', 'cudnn', 'pallas'])
@pytest.mark.parametrize('field,value', [('attn_softcap', 50.0),
                                         ('sliding_window', 4)])
def test_features_an_implementation_lacks_are_one_line(impl, field, value):
  with pytest.raises(ConfigError, match=f'model.{field} is not supported by '
                     f"model.attention='{impl}'; use model.attention='xla'"):
    models.build('transformer_lm', VOCAB, attention=impl,
                 **{**BASE, field: value})


def test_auto_attention_takes_xla_for_its_features():
  x = tokens()
  kw = dict(BASE, **FAMILIES['gemma2'])
  xla = models.build('transformer_lm', VOCAB, attention='xla', **kw)
  auto = models.build('transformer_lm', VOCAB, attention='auto', **kw)
  params = init(xla, x)
  np.testing.assert_array_equal(auto.apply({'params': params}, x),
                                xla.apply({'params': params}, x))


@pytest.mark.parametrize('kw,message', [
    (dict(num_kv_heads=3), 'model.num_kv_heads=3 must divide '
     'model.num_heads=4'),
    (dict(mlp='relu'), "unknown model.mlp 'relu'; valid choices: geglu, "
     'gelu, swiglu'),
    (dict(rope_scaling='yarn'), "unknown model.rope_scaling 'yarn'"),
    (dict(positions='learned', rope_theta=5e5), 'model.rope_theta and '
     "model.rope_scaling need model.positions='rope'"),
])
def test_bad_family_fields_are_one_line(kw, message):
  with pytest.raises(ConfigError, match=message):
    models.build('transformer_lm', VOCAB, **{**BASE, **kw})


def test_defaults_are_the_plain_lm():
  """No family field set: the parameters this project's LM always had."""
  model = models.build('transformer_lm', VOCAB, **BASE)
  assert model.family() == ()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), tokens()))['params']
  assert sorted(params['block0']) == ['attn', 'mlp_in', 'mlp_out', 'norm1',
                                      'norm2']
  assert sorted(params['block0']['attn']) == ['key', 'out', 'query', 'value']
  assert set(params['block0']['mlp_in']['dense']) == {'kernel', 'bias'}


def test_config_family_presets_are_the_models_fields():
  """configs/common.py's copy of the defaults is the model's (configs load
  without models); `family=plain` sets every key at the plain LM's values,
  a pretrained family its conventions, each building a model."""
  from configs import common, shakespeare_lm  # pylint: disable=g-import-not-at-top
  from models import transformer  # pylint: disable=g-import-not-at-top
  assert common.LM_FAMILY_DEFAULTS == transformer.FAMILY
  plain = shakespeare_lm.get_config('runlocal,family=plain')
  assert set(transformer.FAMILY) <= set(plain.model)
  assert models.build('transformer_lm', VOCAB, **plain.model.to_dict(
      )).family() == ()
  assert 'num_kv_heads' not in shakespeare_lm.get_config('runlocal').model
  for name in ('llama', 'qwen3', 'gemma2'):
    c = shakespeare_lm.get_config(f'runlocal,family={name}')
    model = models.build('transformer_lm', VOCAB, **c.model.to_dict())
    assert model.num_kv_heads == 1 and model.positions == 'rope'
