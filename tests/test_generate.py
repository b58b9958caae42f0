"""Generation with a KV cache and left-padded prompts (distill/generate.py):
the cache changes no token, a padded row gets what it gets alone, and
scoring is the model's own next-token loss."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from core.errors import ConfigError
from distill import generate

VOCAB = 37
FAMILIES = {
    'learned': dict(positions='learned'),
    'rope_gqa_window': dict(positions='rope', num_kv_heads=1, mlp='swiglu',
                            sliding_window=3, attention='xla'),
    'scanned_softcap': dict(positions='rope', scan_layers=True,
                            attn_softcap=5.0, logit_softcap=10.0,
                            attention='xla'),
}


def _model(kind):
  model = models.build('transformer_lm', VOCAB, num_layers=2, width=32,
                       num_heads=2, mlp_dim=64, max_len=32,
                       **FAMILIES[kind])
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))[
      'params']
  # larger weights than the init's, so greedy decoding is not one token
  params = jax.tree.map(lambda x: x * 4.0, params)
  return model, params


PROMPTS = [[3, 5, 7, 11, 13], [2], [17, 19, 23]]


@pytest.mark.slow
@pytest.mark.parametrize('kind', sorted(FAMILIES))
def test_cached_and_uncached_greedy_decoding_give_the_same_tokens(kind):
  model, params = _model(kind)
  cached = generate.generate(model, params, PROMPTS, 12)
  uncached = generate.generate(model, params, PROMPTS, 12, cache=False)
  np.testing.assert_array_equal(cached, uncached)
  assert len(np.unique(cached)) > 2


@pytest.mark.slow
@pytest.mark.parametrize('kind', sorted(FAMILIES))
def test_a_left_padded_row_gets_what_its_prompt_gets_alone(kind):
  model, params = _model(kind)
  batch = generate.generate(model, params, PROMPTS, 8)
  for row, prompt in enumerate(PROMPTS):
    alone = generate.generate(model, params, [prompt], 8)
    np.testing.assert_array_equal(batch[row], alone[0])


@pytest.mark.slow
def test_padded_logits_equal_each_prompt_alone():
  model, params = _model('rope_gqa_window')
  tokens, valid, positions = generate.left_pad(PROMPTS)
  padded = model.apply({'params': params}, tokens, positions=positions,
                       valid=valid)
  for row, prompt in enumerate(PROMPTS):
    alone = model.apply({'params': params}, jnp.asarray([prompt]))
    np.testing.assert_allclose(padded[row, -len(prompt):], alone[0],
                               atol=1e-5)


@pytest.mark.slow
def test_sampling_is_seeded_and_stays_in_the_top_k():
  model, params = _model('learned')
  a = generate.generate(model, params, PROMPTS, 10, temperature=1.0,
                        top_k=3, seed=1)
  b = generate.generate(model, params, PROMPTS, 10, temperature=1.0,
                        top_k=3, seed=1)
  c = generate.generate(model, params, PROMPTS, 10, temperature=1.0,
                        top_k=3, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  draws = {int(generate.sample(logits, jax.random.PRNGKey(i), 1.0, top_p=0.7)
               [0]) for i in range(200)}
  assert draws == {0, 1}
  draws = {int(generate.sample(logits, jax.random.PRNGKey(i), 1.0, top_k=1)
               [0]) for i in range(20)}
  assert draws == {0}


@pytest.mark.slow
def test_score_is_the_next_token_loss_over_overlapping_windows():
  model, params = _model('learned')
  tokens = np.random.default_rng(0).integers(0, VOCAB, 60)
  nll = generate.score(model, params, tokens, window=16)
  assert nll.shape == (59,)
  # the first window's scores are the model's plain loss on it
  logits = model.apply({'params': params}, jnp.asarray(tokens[None, :15]))
  first = optax.softmax_cross_entropy_with_integer_labels(
      logits[0], jnp.asarray(tokens[1:16]))
  np.testing.assert_allclose(nll[:15], first, rtol=1e-5, atol=1e-5)
  assert generate.perplexity(nll) > 1


@pytest.mark.parametrize('kwargs,message', [
    (dict(temperature=-1.0), 'temperature=-1.0 must be >= 0'),
    (dict(top_p=0.0), 'top_p=0.0 must be in'),
    (dict(max_new_tokens=40), "more than the model's learned positions"),
])
def test_bad_options_are_one_line(kwargs, message):
  model, params = _model('learned')
  kwargs = dict(dict(max_new_tokens=4), **kwargs)
  with pytest.raises(ConfigError, match=message):
    generate.generate(model, params, PROMPTS, **kwargs)
