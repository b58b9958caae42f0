"""The LM loss over the sequence in chunks (distill/chunked.py,
config.loss_chunk_len) equals the plain computation on the whole batch's
logits, loss and gradients, for CE and every LM objective, with padding.

    python -m pytest -q -p no:xdist tests/test_chunked_loss.py
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal, randint

from core.errors import ConfigError
from distill import chunked
from distill import methods
from models import transformer

B, T, D, V, CHUNK = 3, 7, 8, 11, 3      # T not a multiple of CHUNK


def _project(x, head, softcap=0.0):
  logits = jnp.dot(x, head).astype(jnp.float32)
  return softcap * jnp.tanh(logits / softcap) if softcap else logits


def _case(seed=0):
  """Student and teacher hidden states and heads, and an LM batch with
  padding (target_mask 0 at the end of two rows, one example masked)."""
  s_h = normal((seed, 0), (B, T, D))
  s_w = normal((seed, 1), (D, V))
  t_h = normal((seed, 2), (B, T, D))
  t_w = normal((seed, 3), (D, V), scale=2.0)
  target_mask = np.ones((B, T), np.float32)
  target_mask[0, 5:] = 0
  target_mask[2, 2:] = 0
  batch = {'targets': randint((seed, 4), (B, T), 0, V),
           'target_mask': jnp.asarray(target_mask),
           'mask': jnp.asarray([1.0, 1.0, 0.0]),
           'inputs': jnp.zeros((B, T), jnp.int32), 'id': jnp.arange(B)}
  return s_h, s_w, t_h, t_w, batch


# (method, method_kw): CE and each objective, truncated and blended
# (the others' code paths are the same, so they run with the slow tests)
CASES = [
    ('supervised', {}),
    pytest.param('vanilla', {'temperature': 2.0}, marks=pytest.mark.slow),
    pytest.param('forward_kl', {'alpha': 0.5, 'temperature': 2.0},
                 marks=pytest.mark.slow),
    pytest.param('reverse_kl', {'alpha': 0.3, 'teacher_top_k': 4},
                 marks=pytest.mark.slow),
    ('jsd', {'alpha': 0.7, 'beta': 0.3, 'teacher_top_p': 0.8,
             'truncation': 'other_bucket'}),
    pytest.param('forward_kl', {'teacher_top_k': 3, 'teacher_top_p': 0.9},
                 marks=pytest.mark.slow),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,kw', CASES)
def test_chunked_equals_plain_loss_and_gradients(name, kw):
  s_h, s_w, t_h, t_w, batch = _case()
  method = methods.get(name)
  loss_fn = method.loss_fn(kw)
  online = method.needs_teacher
  softcap = 5.0 if name == 'jsd' else 0.0     # the projection's soft cap too
  project = functools.partial(_project, softcap=softcap)

  def plain(h, w):
    teacher = {'logits': project(t_h, t_w)} if online else None
    return loss_fn(project(h, w), teacher, batch)

  def chunks(h, w):
    teacher = (t_h, t_w, project) if online else None
    return chunked.loss(loss_fn, (h, w, project), teacher, batch, CHUNK)

  (l0, m0), g0 = jax.jit(jax.value_and_grad(plain, (0, 1), has_aux=True))(
      s_h, s_w)
  (l1, m1), g1 = jax.jit(jax.value_and_grad(chunks, (0, 1), has_aux=True))(
      s_h, s_w)
  assert np.isfinite(float(l0)) and float(l0) > 0
  np.testing.assert_allclose(l1, l0, rtol=1e-5, atol=1e-6)
  assert sorted(m1) == sorted(m0)
  for key in m0:
    np.testing.assert_allclose(m1[key], m0[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)
  for a, b in zip(g1, g0):
    assert float(jnp.max(jnp.abs(b))) > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # padded and masked positions carry no gradient
  assert float(jnp.max(jnp.abs(g1[0][2, 2:]))) == 0.0


@pytest.mark.slow
def test_sparse_cache_teacher_is_chunked_like_the_batch():
  """An offline top-k cache ((B, T, k) ids and log-probabilities) is
  split along the sequence with the batch."""
  s_h, s_w, t_h, t_w, batch = _case(1)
  logp = jax.nn.log_softmax(_project(t_h, t_w))
  topk_logp, topk_ids = jax.lax.top_k(logp, 4)
  teacher = {'topk_ids': topk_ids, 'topk_logp': topk_logp}
  loss_fn = methods.get('jsd').loss_fn({'beta': 0.4})
  l0, g0 = jax.jit(jax.value_and_grad(lambda h: loss_fn(
      _project(h, s_w), teacher, batch)[0]))(s_h)
  l1, g1 = jax.jit(jax.value_and_grad(lambda h: chunked.loss(
      loss_fn, (h, s_w, _project), teacher, batch, CHUNK)[0]))(s_h)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_model_hidden_output_projects_to_its_logits():
  """TransformerLM(hidden=True) and `project` give its plain logits, tied
  or with a head, with a soft cap."""
  tokens = jnp.arange(12).reshape(2, 6) % 13
  for kw in ({'tie_embeddings': True, 'logit_softcap': 3.0}, {}):
    model = transformer.TransformerLM(13, num_layers=1, width=16,
                                      num_heads=2, mlp_dim=32, max_len=8,
                                      **kw)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), tokens)
    logits, (x, head) = jax.jit(lambda v: (
        model.apply(v, tokens), model.apply(v, tokens, hidden=True)))(
            variables)
    assert head.shape == (16, 13)
    np.testing.assert_allclose(transformer.project(model, x, head), logits,
                               rtol=1e-6, atol=1e-6)


def test_bad_chunk_settings_are_one_line_errors():
  ok = methods.get('forward_kl')
  chunked.check(0, 'mlp', ok)                  # off: anything goes
  with pytest.raises(ConfigError, match='integer >= 0'):
    chunked.check(-1, 'transformer_lm', ok)
  with pytest.raises(ConfigError, match='valid choices: transformer_lm'):
    chunked.check(64, 'resnet', ok)
  with pytest.raises(ConfigError, match="'weighted' fits"):
    chunked.check(64, 'transformer_lm', methods.get('weighted'))


@pytest.mark.slow
def test_a_trainer_with_chunks_trains_and_evaluates_as_without(tmp_path):
  """config.loss_chunk_len in a Trainer: the same train losses and
  validation metrics as the plain step (the eval step's logits in chunks
  too), with a chunk that does not divide the sequence."""
  from distill import train                # pylint: disable=g-import-not-at-top
  from distill.data import synthetic       # pylint: disable=g-import-not-at-top
  from distill.logging_utils import read_metrics  # pylint: disable=g-import-not-at-top
  import mesh_equivalence                  # pylint: disable=g-import-not-at-top
  out = {}
  for chunk in (0, 5):
    c = mesh_equivalence.lm_config(dict(data=1), seq=16, width=32)
    c.total_steps = 3
    c.loss_chunk_len = chunk
    workdir = str(tmp_path / f'chunk{chunk}')
    trainer = train.Trainer(c, workdir, devices=jax.devices()[:1],
                            data=synthetic.data_like(c, n=64))
    before = trainer.evaluate(['validation'])
    final = trainer.run()
    out[chunk] = (before, final, [r['train/loss'] for r in
                                  read_metrics(workdir) if 'train/loss' in r])
  (b0, f0, l0), (b5, f5, l5) = out[0], out[5]
  assert set(b0) == set(b5) == {'validation/loss', 'validation/accuracy'}
  for k in b0:
    assert b5[k] == pytest.approx(b0[k], rel=1e-5), k
  np.testing.assert_allclose(l5, l0, rtol=1e-5)
  assert f5['validation/loss'] == pytest.approx(f0['validation/loss'],
                                                rel=1e-4)


def test_the_eval_step_keeps_one_chunk_of_logits():
  """Compiled, the eval step of an LM with loss_chunk_len holds a chunk's
  logits, not the batch's: its temporaries fall below half the plain
  step's at a vocabulary of 8192 (the logits dominate)."""
  from distill import train                # pylint: disable=g-import-not-at-top
  from distill.data import synthetic       # pylint: disable=g-import-not-at-top
  import mesh_equivalence                  # pylint: disable=g-import-not-at-top
  temps = {}
  for chunk in (0, 16):
    c = mesh_equivalence.lm_config(dict(data=1), seq=64, width=32)
    c.data.vocab_size = 8192
    c.loss_chunk_len = chunk
    trainer = train.Trainer(c, '/nonexistent', devices=jax.devices()[:1],
                            data=synthetic.data_like(c), abstract=True)
    compiled = trainer.eval_step.lower(
        trainer.state.params, trainer.state.model_state,
        trainer.batch_shapes()).compile()
    temps[chunk] = compiled.memory_analysis().temp_size_in_bytes
  assert temps[16] < 0.5 * temps[0], temps
