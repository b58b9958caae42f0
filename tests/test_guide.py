"""GUIDE: PCA embeddings, exact first-block folding, uniform selection,
errors, the trainable-projection reading, and training from a projection."""
import functools
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import normal, randint

from core.errors import ConfigError
from distill import guide, optim
from models import transformer
import models

VOCAB = 13


def lm(width, heads, mlp, layers=2, positions='learned', **kw):
  return models.build('transformer_lm', VOCAB, num_layers=layers,
                      width=width, num_heads=heads, mlp_dim=mlp, max_len=8,
                      positions=positions, **kw)


def init(model, seed):
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(seed),
                                    tokens))['params']
  # Non-trivial norm gains and biases, so that folding them is exercised.
  rng = np.random.default_rng(seed + 100)
  return jax.tree_util.tree_map_with_path(
      lambda p, a: a + 0.3 * rng.standard_normal(a.shape).astype(np.float32)
      if any(n in jax.tree_util.keystr(p) for n in ('scale', 'bias'))
      else a, params)


def attn_sublayer(block, positions, x):
  """norm1 then causal attention, from the kernels' own shapes (so a teacher
  restricted to some heads can be run)."""
  h = transformer.RMSNorm().apply({'params': block['norm1']}, x)
  q, k, v = (jnp.einsum('btd,dhl->bthl', h, block['attn'][n]['kernel'])
             for n in ('query', 'key', 'value'))
  if positions == 'rope':
    pos = jnp.arange(x.shape[1])
    q, k = transformer.rope(q, pos), transformer.rope(k, pos)
  logits = jnp.einsum('bqhl,bkhl->bhqk', q, k) / np.sqrt(q.shape[-1])
  mask = np.tril(np.ones((x.shape[1],) * 2, bool))
  probs = jax.nn.softmax(jnp.where(mask, logits, -1e30), -1)
  out = jnp.einsum('bhqk,bkhl->bqhl', probs, v)
  return jnp.einsum('bqhl,hld->bqd', out, block['attn']['out']['kernel'])


def mlp_sublayer(block, x):
  h = transformer.RMSNorm().apply({'params': block['norm2']}, x)
  h = nn.gelu(h @ block['mlp_in']['dense']['kernel'] +
              block['mlp_in']['dense']['bias'])
  return h @ block['mlp_out']['dense']['kernel'] + block['mlp_out'][
      'dense']['bias']


def test_uniform_indices_are_evenly_spaced():
  np.testing.assert_array_equal(guide.uniform_indices(8, 4), [0, 2, 4, 6])
  np.testing.assert_array_equal(guide.uniform_indices(6, 4), [0, 1, 3, 4])
  np.testing.assert_array_equal(guide.uniform_indices(5, 5), np.arange(5))


@pytest.mark.slow
def test_equal_width_reproduces_the_teacher_exactly():
  """d_S = d_T, no selection: E_S Pm^T = E_T, and the student's first block
  is the teacher's block in the rotated basis."""
  teacher, student = lm(16, 2, 32), lm(16, 2, 32)
  tp, sp = init(teacher, 0), init(student, 1)
  out = guide.project(tp, sp, preserve_logit_scale=False)
  pm = guide.pca_basis(tp['embed']['embedding'], 16)
  np.testing.assert_allclose(pm.T @ pm, np.eye(16), atol=1e-5)
  np.testing.assert_allclose(out['embed']['embedding'] @ pm.T,
                             tp['embed']['embedding'], atol=1e-5)
  np.testing.assert_allclose(out['pos_embed'] @ pm.T, tp['pos_embed'],
                             atol=1e-5)
  x_s = normal(7, (2, 8, 16))
  block = transformer.DecoderBlock(2, 32)
  y_s, _ = block.apply({'params': out['block0']}, x_s)
  y_t, _ = block.apply({'params': tp['block0']}, x_s @ pm.T)
  np.testing.assert_allclose(y_s, y_t @ pm, rtol=1e-4, atol=1e-4)
  # the other blocks keep the student's own initialisation
  assert jax.tree.all(jax.tree.map(np.array_equal, out['block1'],
                                   sp['block1']))


@pytest.mark.slow
@pytest.mark.parametrize('positions', ['learned', 'rope'])
def test_folding_is_exact_for_rmsnorm_at_a_smaller_width(positions):
  """d_S < d_T, heads/dims/units kept: each sub-layer of the projected block
  on the student stream equals the teacher's on the reconstruction X_S Pm^T,
  projected back by Pm."""
  # head dim 8 in both: 4 heads over width 32, 2 heads over width 16
  teacher = lm(32, 4, 24, positions=positions)
  student = lm(16, 2, 24, positions=positions)
  tp, sp = init(teacher, 0), init(student, 1)
  out = guide.project(tp, sp, positions=positions,
                      preserve_logit_scale=False)
  pm = guide.pca_basis(tp['embed']['embedding'], 16)
  heads = guide.uniform_indices(4, 2)
  t_block = dict(tp['block0'])
  t_block['attn'] = {  # the teacher restricted to the selected heads
      'query': {'kernel': tp['block0']['attn']['query']['kernel'][:, heads]},
      'key': {'kernel': tp['block0']['attn']['key']['kernel'][:, heads]},
      'value': {'kernel': tp['block0']['attn']['value']['kernel'][:, heads]},
      'out': {'kernel': tp['block0']['attn']['out']['kernel'][heads]}}
  x_s = normal(7, (2, 8, 16))
  np.testing.assert_allclose(
      attn_sublayer(out['block0'], positions, x_s),
      attn_sublayer(t_block, positions, x_s @ pm.T) @ pm,
      rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(mlp_sublayer(out['block0'], x_s),
                             mlp_sublayer(tp['block0'], x_s @ pm.T) @ pm,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_selection_is_consistent_between_query_and_key():
  teacher = lm(32, 4, 64)                           # head dim 8 -> 8
  student = models.build('transformer_lm', VOCAB, num_layers=1, width=16,
                         num_heads=2, mlp_dim=16, max_len=8)
  tp, sp = init(teacher, 0), init(student, 1)
  out = guide.project(tp, sp, preserve_logit_scale=False)
  pm = guide.pca_basis(tp['embed']['embedding'], 16)
  ratio = np.sqrt(32 / 16)
  heads, units = guide.uniform_indices(4, 2), guide.uniform_indices(64, 16)
  np.testing.assert_array_equal(heads, [0, 2])
  np.testing.assert_array_equal(units, np.arange(0, 64, 4))
  for name, gain in (('query', 'norm1'), ('key', 'norm1')):
    folded = ratio * np.tensordot(
        pm.T * tp['block0'][gain]['scale'][None],
        tp['block0']['attn'][name]['kernel'], axes=1)
    np.testing.assert_allclose(out['block0']['attn'][name]['kernel'],
                               folded[:, heads], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out['block0']['mlp_in']['dense']['bias'],
                             tp['block0']['mlp_in']['dense']['bias'][units])


def test_rope_selects_whole_rotary_pairs_and_scales_the_query():
  teacher = lm(32, 2, 32, positions='rope')      # head dim 16, 8 pairs
  student = lm(16, 2, 32, positions='rope')      # head dim 8, 4 pairs
  tp, sp = init(teacher, 0), init(student, 1)
  idx = guide._head_dim_indices(16, 8, 'rope')   # pylint: disable=protected-access
  np.testing.assert_array_equal(idx, [0, 2, 4, 6, 8, 10, 12, 14])
  plain = guide.project(tp, sp, positions='rope', preserve_logit_scale=False)
  scaled = guide.project(tp, sp, positions='rope')
  np.testing.assert_allclose(
      scaled['block0']['attn']['query']['kernel'],
      plain['block0']['attn']['query']['kernel'] * np.sqrt(8 / 16),
      rtol=1e-6)
  np.testing.assert_allclose(scaled['block0']['attn']['key']['kernel'],
                             plain['block0']['attn']['key']['kernel'])


@pytest.mark.slow
@pytest.mark.parametrize('student_kw,message', [
    (dict(width=64, heads=2, mlp=32), 'student width 64 is larger'),
    (dict(width=16, heads=4, mlp=32), 'student heads 4 is larger'),
    (dict(width=16, heads=2, mlp=64), 'student MLP dimension 64 is larger'),
])
def test_incompatible_students_raise_one_line_errors(student_kw, message):
  tp = init(lm(32, 2, 32), 0)
  s = student_kw
  sp = init(lm(s['width'], s['heads'], s['mlp']), 1)
  with pytest.raises(ConfigError, match=message):
    guide.project(tp, sp)


def test_vocabulary_mismatch_is_refused():
  tp = init(lm(32, 2, 32), 0)
  other = models.build('transformer_lm', VOCAB + 1, num_layers=1, width=16,
                       num_heads=2, mlp_dim=16, max_len=8)
  sp = nn.meta.unbox(other.init(jax.random.PRNGKey(0), jnp.zeros(
      (1, 8), jnp.int32)))['params']
  with pytest.raises(ConfigError, match='vocabulary 14 != teacher vocabulary'
                     ' 13'):
    guide.project(tp, sp)


@pytest.mark.slow
def test_scan_layers_student_projects_its_first_layer():
  tp = init(lm(32, 2, 32), 0)
  unrolled = init(lm(16, 2, 32), 1)
  scanned = init(lm(16, 2, 32, scan_layers=True), 1)
  a = guide.project(tp, unrolled)
  b = guide.project(tp, scanned)
  for path in (('attn', 'query', 'kernel'), ('mlp_out', 'dense', 'bias')):
    x, y = a['block0'], b['blocks']['block']
    for p in path:
      x, y = x[p], y[p]
    np.testing.assert_allclose(y[0], x, rtol=1e-6)


@pytest.mark.slow
def test_trainable_projection_folds_into_a_plain_table():
  teacher = lm(32, 2, 32)
  proj_student = lm(16, 2, 32, embed_from=32)
  plain_student = lm(16, 2, 32)
  tp = init(teacher, 0)
  sp = guide.project(tp, init(proj_student, 1))
  np.testing.assert_array_equal(sp['embed']['embedding'],
                                tp['embed']['embedding'])
  assert sp['embed_proj'].shape == (32, 16)
  tokens = randint(3, (2, 8), 0, VOCAB)
  folded = guide.fold_projection(sp)
  np.testing.assert_allclose(
      plain_student.apply({'params': folded}, tokens),
      proj_student.apply({'params': sp}, tokens), rtol=1e-5, atol=1e-5)
  # the same start as the init-only reading
  np.testing.assert_allclose(
      folded['embed']['embedding'],
      guide.project(tp, init(plain_student, 1))['embed']['embedding'],
      rtol=1e-5, atol=1e-6)
  # frozen teacher table, learned projection
  tx, _ = optim.make(ml_collections.ConfigDict(dict(
      name='adam', lr=0.1, frozen='embed,pos_embed')),
                     ml_collections.ConfigDict(dict(name='constant')), 10, 0)
  grads = jax.tree.map(jnp.ones_like, sp)
  updates, _ = tx.update(grads, tx.init(sp), sp)
  assert not np.any(updates['embed']['embedding'])
  assert not np.any(updates['pos_embed'])
  assert np.all(updates['embed_proj'] != 0)


def _abstract_params(cfg, vocab):
  """A config's model parameters as shapes (nothing allocated)."""
  model = models.build(cfg.model_name, vocab, cfg.model_dtype,
                       **cfg.model.to_dict())
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
  return nn.meta.unbox(shapes['params'])


def test_paper_scale_config_sizes():
  """configs/guide_lm.py:scale=paper: a ~1.2B teacher and a ~0.4B student
  that GUIDE can project into (checked on shapes only: nothing allocated)."""
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  c = guide_lm.get_config('scale=paper')
  sizes = {role: _abstract_params(cfg, 65) for role, cfg in
           (('teacher', c.teacher.config), ('student', c))}
  n = {r: sum(x.size for x in jax.tree.leaves(p)) / 1e9
       for r, p in sizes.items()}
  assert 1.1 < n['teacher'] < 1.3 and 0.35 < n['student'] < 0.45, n
  guide.check_compatible(sizes['teacher'], sizes['student'], 'learned')
  assert c.mesh.fsdp == -1 and c.model.scan_layers



def test_llama3b_scale_config_shapes():
  """configs/guide_lm.py:scale=llama3b: a teacher of Llama 3.2 3B's shape
  (3.2B, GQA 24 / 8, head dim 128, 128,256 tokens, tied, Llama 3 rope
  scaling) and a GUIDE student half its width, 12 / 4 heads (0.55B); GUIDE
  projects one into the other (traced on shapes only: nothing allocated,
  nothing compiled)."""
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  c = guide_lm.get_config('scale=llama3b,init=guide,method=forward_kl,'
                          'loss_chunk=128')
  assert c.data.vocab_size == 128256 and c.data.seq_len == 2048
  assert c.distill.teacher_dtype == 'bfloat16' and c.model_dtype == 'bfloat16'
  assert c.mesh.fsdp == -1 and c.loss_chunk_len == 128
  params = {}
  for role, cfg in (('teacher', c.teacher.config), ('student', c)):
    m = cfg.model
    assert m.scan_layers and m.remat == 'dots_no_batch' and m.mlp == 'swiglu'
    assert (m.head_dim, m.rope_scaling, m.norm_eps) == (128, 'llama3', 1e-5)
    assert m.tie_embeddings and m.num_heads // m.num_kv_heads == 3
    params[role] = _abstract_params(cfg, cfg.data.vocab_size)
  n = {r: sum(x.size for x in jax.tree.leaves(p)) / 1e9
       for r, p in params.items()}
  assert 3.2 < n['teacher'] < 3.3 and 0.54 < n['student'] < 0.56, n
  guide.check_compatible(params['teacher'], params['student'], 'rope')
  out = jax.eval_shape(functools.partial(guide.project, positions='rope'),
                       params['teacher'], params['student'])
  assert jax.tree.map(lambda a: a.shape, out) == jax.tree.map(
      lambda a: a.shape, params['student'])

@pytest.mark.slow
def test_guide_and_distillation_train_end_to_end(tmp_path):
  """configs/guide_lm.py (runlocal): teacher, then a GUIDE-initialised
  student with the trainable projection, distilled online; its frozen
  teacher table stays the teacher's, and it folds into a plain student."""
  import os  # pylint: disable=g-import-not-at-top
  from conftest import shared_file  # pylint: disable=g-import-not-at-top
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  from distill import checkpoint, distillation  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(shared_file('tiny_shakespeare.txt'))
  c = guide_lm.get_config(f'init=guide,method=vanilla,runlocal,'
                          f'trainable_projection,manual_dir={folder}')
  summary = distillation.run(c, str(tmp_path))
  assert summary['init'] == 'guide' and summary['student/step'] == 2
  _, teacher, _ = checkpoint.load_trained(str(tmp_path / 'teacher'))
  config, student, _ = checkpoint.load_trained(str(tmp_path / 'student'))
  np.testing.assert_array_equal(student['params']['embed']['embedding'],
                                teacher['params']['embed']['embedding'])
  plain = dict(config.model.to_dict(), embed_from=0)
  model = models.build('transformer_lm', 65, **plain)
  tokens = jnp.zeros((1, 8), jnp.int32)
  full = models.build('transformer_lm', 65, **config.model.to_dict())
  np.testing.assert_allclose(
      model.apply({'params': guide.fold_projection(student['params'])},
                  tokens),
      full.apply({'params': student['params']}, tokens), rtol=1e-5,
      atol=1e-5)
