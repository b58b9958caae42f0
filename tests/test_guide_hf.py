"""GUIDE and online distillation from an imported (Hugging Face) teacher:
GUIDE projects into a student of a pretrained family (grouped K/V heads,
gated MLPs, QK-norm, Gemma's norms), and a teacher trained here, written
out in Hugging Face format and re-imported as `teacher.hf`, gives the same
GUIDE student and the same distillation losses as read from its workdir.

    python -m pytest -q tests/test_guide_hf.py
"""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import normal

from core.errors import ConfigError
from distill import guide
import models

VOCAB = 13


def lm(width, heads, mlp_dim, **kw):
  return models.build('transformer_lm', VOCAB, num_layers=2, width=width,
                      num_heads=heads, mlp_dim=mlp_dim, max_len=8,
                      positions='rope', **kw)


def init(model, seed):
  params = nn.unbox(model.init(jax.random.PRNGKey(seed),
                               jnp.zeros((1, 8), jnp.int32)))['params']
  rng = np.random.default_rng(seed + 100)
  return jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape).astype(
      np.float32), params)


def test_grouped_heads_keep_their_groups():
  query, kv = guide.head_indices(8, 4, 4, 2)   # groups of 2 -> groups of 2
  np.testing.assert_array_equal(kv, [0, 2])
  np.testing.assert_array_equal(query, [0, 1, 4, 5])
  query, kv = guide.head_indices(8, 2, 2, 1)   # groups of 4 -> one of 2
  np.testing.assert_array_equal(query, [0, 2])
  query, kv = guide.head_indices(6, 6, 3, 3)   # no grouping: as before
  np.testing.assert_array_equal(query, kv)


@pytest.mark.slow
@pytest.mark.parametrize('family', [
    dict(mlp='swiglu', num_kv_heads=2),
    dict(mlp='swiglu', num_kv_heads=2, qkv_bias=True, qk_norm=True),
    dict(mlp='geglu', num_kv_heads=2, norm_plus_one=True, post_norms=True,
         embed_scale=True, attn_softcap=20.0),
])
def test_equal_size_family_student_computes_the_teachers_first_block(
    family):
  """With d_S = d_T and no selection the projected student's first block
  is the teacher's in the PCA basis: its logits after block 0 (one layer,
  the shared head rotated) equal the teacher's, for each family."""
  teacher = lm(32, 4, 64, **family)
  t_params = init(teacher, 0)
  s_params = guide.project(t_params, init(teacher, 1), positions='rope',
                           plus_one=family.get('norm_plus_one', False))
  pm = guide.pca_basis(t_params['embed']['embedding'], 32)
  # the student's first block applied to the teacher's rotated embeddings
  # equals the teacher's first block, rotated
  x = normal(3, (2, 8, 32))
  block = models.transformer.DecoderBlock(
      4, 64, positions='rope', fam=teacher.family())
  t_out, _ = block.apply({'params': t_params['block0']}, x)
  s_out, _ = block.apply({'params': s_params['block0']}, x @ pm)
  if family.get('post_norms'):     # norms of rotated vectors: gains differ
    return
  np.testing.assert_allclose(s_out, t_out @ pm, atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_smaller_gqa_student_projects():
  teacher = lm(32, 4, 64, mlp='swiglu', num_kv_heads=2, qkv_bias=True)
  student = lm(16, 2, 32, mlp='swiglu', num_kv_heads=1, qkv_bias=True)
  s = guide.project(init(teacher, 0), init(student, 1), positions='rope')
  shapes = jax.tree.map(jnp.shape, s)
  assert shapes == jax.tree.map(jnp.shape, init(student, 1))
  out = student.apply({'params': s}, jnp.zeros((1, 8), jnp.int32))
  assert np.isfinite(np.asarray(out)).all()


@pytest.mark.slow
def test_family_mismatch_and_bad_groups_are_one_line():
  with pytest.raises(ConfigError, match="student's model.mlp='gelu' differs "
                     "from the teacher's 'swiglu'"):
    guide.check_family(lm(32, 4, 64, mlp='swiglu'), lm(16, 2, 32))
  teacher = lm(32, 4, 64, mlp='swiglu', num_kv_heads=2)
  student = lm(16, 4, 32, mlp='swiglu', num_kv_heads=1)
  with pytest.raises(ConfigError, match='student K/V heads 1 of 4 query '
                     'heads do not fit the teacher'):
    guide.project(init(teacher, 0), init(student, 1), positions='rope')


@pytest.mark.slow
def test_a_teacher_written_out_and_imported_gives_the_same_student(tmp_path):
  """configs/guide_lm.py (runlocal, the llama family): the teacher trained
  here, saved with save_hf_lm and given as teacher.hf, gives the same GUIDE
  student and distillation losses as the same teacher read from its
  workdir; inputs.json records the imported files' hashes."""
  from conftest import shared_file  # pylint: disable=g-import-not-at-top
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  from distill import checkpoint, distillation, hf_checkpoint  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(shared_file('tiny_shakespeare.txt'))
  arg = f'init=guide,method=vanilla,runlocal,family=llama,manual_dir={folder}'
  here = distillation.run(guide_lm.get_config(arg), str(tmp_path / 'here'))
  t_config, t_vars, _ = checkpoint.load_trained(str(tmp_path / 'here' /
                                                    'teacher'))
  t_model = models.build('transformer_lm', 65, **t_config.model.to_dict())
  hf_checkpoint.save_hf_lm(t_model, t_vars['params'], str(tmp_path / 'hf'))
  imported = distillation.run(
      guide_lm.get_config(f'{arg},teacher_hf={tmp_path / "hf"}'),
      str(tmp_path / 'imported'))
  losses = [k for k in here if k.startswith('student/') and 'loss' in k]
  assert losses, here
  for key in (k for k in here if k.startswith('student/') and (
      'loss' in k or 'accuracy' in k)):
    np.testing.assert_allclose(imported[key], here[key], rtol=1e-5,
                               err_msg=key)
  _, a, _ = checkpoint.load_trained(str(tmp_path / 'here' / 'student'))
  _, b, _ = checkpoint.load_trained(str(tmp_path / 'imported' / 'student'))
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_allclose(x, y, atol=1e-5)
  inputs = json.loads((tmp_path / 'imported' / 'inputs.json').read_text())
  assert set(inputs['teacher']['files']) == {'config.json',
                                             'model.safetensors'}
