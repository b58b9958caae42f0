"""GUIDE: a student LM initialised from a trained teacher LM in parameter space
(Trinh, Menghani, Vee 2025; spec and reconstruction: ../shared/docs/papers.md
section 4).

    student_params = guide.project(teacher_params, student_params, ...)

For our `TransformerLM` (pre-RMSNorm blocks), with d_T >= d_S:
1. PCA of the teacher embedding table E_T (V x d_T), uncentred: the top d_S
   right singular vectors form Pm (d_T x d_S, orthonormal columns);
   E_S = E_T Pm, and likewise the learned position table and (tied) the
   unembedding.
2. The first block reads the reconstruction X_S Pm^T: Pm is folded into its
   input weights with the RMSNorm gain and the width ratio,
       W_S^{Q,K,V,in} = sqrt(d_T / d_S) Pm^T diag(g_T) W_T^{Q,K,V,in},
   the student's norm gains set to 1, and its output weights project back,
   W_S^{O,out} = W_T^{O,out} Pm (biases likewise).
3. Heads, head dimensions and MLP units shrink by uniform selection
   (evenly spaced indices, the same for Q and K, and for V and O; with RoPE
   whole rotary pairs, so the kept pairs' frequencies match the student's
   when the ratio of pair counts is an integer). The query is scaled by
   sqrt(l_S / l_T) so that attention logits keep the teacher's scale.
4. Every other parameter keeps the student's own initialisation.

Pretrained families (models/transformer.py; teacher and student of the same
family, `check_family`): K/V heads are selected uniformly and, within each
kept K/V head's group, its query heads, so the student's groups are the
teacher's (h_S / k_S <= h_T / k_T); gated MLPs select the same units of
gate and up projections; Q/K/V biases and QK-norm gains follow their heads
and head dimensions; norms scaling by (1 + gain) get gain 0 (`plus_one`).
Exact only where the plain LM's step is (QK-norm and Gemma's post norms
see fewer dimensions; their gains are kept or the student's own).

With d_S = d_T and no selection the student's embeddings equal the
teacher's up to the orthogonal basis, and its first block computes the
teacher's first block exactly in that basis (tests/test_guide.py).
`trainable_projection` (the paper's "learned projection" reading) is the
config option `init.trainable_projection`: the student keeps the frozen
teacher table and learns M (initialised to Pm); `fold_projection` turns it
into a plain table.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from core.errors import ConfigError


def uniform_indices(n_teacher, n_student):
  """Evenly spaced indices: floor(i * n_T / n_S) for i < n_S."""
  if n_student > n_teacher:
    raise ValueError(f'cannot select {n_student} of {n_teacher}')
  return (np.arange(n_student) * n_teacher) // n_student


def pca_basis(table, width):
  """Top-`width` right singular vectors of `table` (rows = tokens), d x w,
  signs fixed so that each column's largest entry is positive. Past the
  table's rank (a vocabulary smaller than `width`) the columns continue with
  an orthonormal complement, so Pm always has orthonormal columns."""
  _, _, vt = jnp.linalg.svd(table.astype(jnp.float32), full_matrices=True)
  basis = vt[:width].T
  sign = jnp.sign(basis[jnp.argmax(jnp.abs(basis), 0), jnp.arange(width)])
  return basis * jnp.where(sign == 0, 1.0, sign)


def _block0(params):
  """The first block's parameters (unrolled or under nn.scan)."""
  if 'block0' in params:
    return params['block0']
  return jax.tree.map(lambda a: a[0], params['blocks']['block'])


def _set_block0(params, block):
  params = dict(params)
  if 'block0' in params:
    params['block0'] = block
  else:
    stacked = params['blocks']['block']
    params['blocks'] = {'block': jax.tree.map(
        lambda s, b: s.at[0].set(b.astype(s.dtype)), stacked, block)}
  return params


# Model fields a GUIDE student must share with its teacher.
FAMILY_FIELDS = ('mlp', 'qkv_bias', 'qk_norm', 'norm_plus_one', 'post_norms',
                 'embed_scale', 'positions')


def check_family(teacher, student):
  """One-line ConfigError unless the two TransformerLMs are of one family."""
  for field in FAMILY_FIELDS:
    t, s = getattr(teacher, field), getattr(student, field)
    if t != s:
      raise ConfigError(f'init.method=guide: the student\'s model.{field}='
                        f'{s!r} differs from the teacher\'s {t!r}')


def kv_heads(params):
  """The number of K/V heads of a TransformerLM's params."""
  block = params['block0'] if 'block0' in params else params['blocks'][
      'block']                         # shapes only: works on abstract params
  return block['attn']['key']['kernel'].shape[-2]


def head_indices(ht, kt, hs, ks):
  """(query heads, K/V heads) of the teacher a student keeps: K/V heads
  uniformly, and in each kept K/V head's group of h_T / k_T queries, h_S /
  k_S of them uniformly (without grouping, k = h: the same indices)."""
  kv = uniform_indices(kt, ks)
  within = uniform_indices(ht // kt, hs // ks)
  query = (kv[:, None] * (ht // kt) + within[None, :]).reshape(-1)
  return query, kv


def dims(params):
  """(vocab, width, heads, head_dim, mlp) of a TransformerLM's params."""
  vocab, width = params['embed']['embedding'].shape
  if 'embed_proj' in params:
    width = params['embed_proj'].shape[1]
  scanned = 'block0' not in params       # stacked on a leading layer axis
  block = params['blocks']['block'] if scanned else params['block0']
  _, heads, head_dim = block['attn']['query']['kernel'].shape[scanned:]
  mlp = block['mlp_in']['dense']['kernel'].shape[-1]
  return vocab, width, heads, head_dim, mlp


def check_compatible(teacher_params, student_params, positions='learned'):
  """One-line ConfigErrors for a student GUIDE cannot be projected into."""
  (vt, dt, ht, lt, ft) = dims(teacher_params)
  (vs, ds, hs, ls, fs) = dims(student_params)
  problems = []
  if 'embed_proj' in student_params and (
      student_params['embed_proj'].shape[0] != dt):
    problems.append(f'model.embed_from={student_params["embed_proj"].shape[0]}'
                    f' must be the teacher width {dt}')
  if vs != vt:
    problems.append(f'vocabulary {vs} != teacher vocabulary {vt}')
  for name, s, t in (('width', ds, dt), ('heads', hs, ht),
                     ('head dimension', ls, lt), ('MLP dimension', fs, ft)):
    if s > t:
      problems.append(f'student {name} {s} is larger than the teacher\'s {t}')
  if positions == 'rope' and (ls % 2 or lt % 2):
    problems.append('RoPE needs even head dimensions')
  kt, ks = kv_heads(teacher_params), kv_heads(student_params)
  if ks > kt or (ht // kt) < (hs // ks):
    problems.append(f'student K/V heads {ks} of {hs} query heads do not fit '
                    f'the teacher\'s {kt} of {ht} (fewer K/V heads, and '
                    'at most as many queries per K/V head)')
  if positions == 'learned' and 'pos_embed' in student_params:
    if student_params['pos_embed'].shape[0] > teacher_params[
        'pos_embed'].shape[0]:
      problems.append('student max_len is larger than the teacher\'s')
  if problems:
    raise ConfigError('init.method=guide: ' + '; '.join(problems))


def _head_dim_indices(l_t, l_s, positions):
  if positions == 'rope':            # whole (i, i + half) rotary pairs
    half = uniform_indices(l_t // 2, l_s // 2)
    return np.concatenate([half, half + l_t // 2])
  return uniform_indices(l_t, l_s)


def project(teacher_params, student_params, positions='learned',
            preserve_logit_scale=True, basis=None, plus_one=False):
  """GUIDE's student parameters (see the module docstring). Pure and
  jit-able; `basis` overrides the PCA basis (d_T x d_S); `plus_one`: the
  norms scale by (1 + gain) (Gemma)."""
  check_compatible(teacher_params, student_params, positions)
  (_, dt, ht, lt, ft) = dims(teacher_params)
  (_, ds, hs, ls, fs) = dims(student_params)
  e_t = teacher_params['embed']['embedding']
  pm = pca_basis(e_t, ds) if basis is None else basis
  out = dict(student_params)
  dtype = student_params['embed']['embedding'].dtype
  trainable = 'embed_proj' in student_params    # frozen E_T, learned M = Pm
  out['embed'] = {'embedding': (e_t if trainable else e_t @ pm).astype(dtype)}
  if trainable:
    out['embed_proj'] = pm.astype(dtype)
  if 'pos_embed' in student_params and 'pos_embed' in teacher_params:
    n = student_params['pos_embed'].shape[0]
    p_t = teacher_params['pos_embed'][:n]
    out['pos_embed'] = (p_t if trainable else p_t @ pm).astype(dtype)

  t, s = _block0(teacher_params), _block0(student_params)
  heads, kv = head_indices(ht, kv_heads(teacher_params), hs,
                           kv_heads(student_params))
  hdim = _head_dim_indices(lt, ls, positions)
  units = uniform_indices(ft, fs)
  ratio = math.sqrt(dt / ds)

  def fold_in(gain, kernel):           # (d_T, ...) -> (d_S, ...)
    return ratio * jnp.tensordot(pm.T * gain[None, :], kernel, axes=1)

  def gain(norm):                      # the effective gain of a norm
    return 1.0 + norm['scale'] if plus_one else norm['scale']

  def unit_gain(norm):                 # the student's norm, gain 1
    return {'scale': (jnp.zeros_like if plus_one else jnp.ones_like)(
        norm['scale'])}

  g1, g2 = gain(t['norm1']), gain(t['norm2'])
  attn = dict(s['attn'])
  for name in ('query', 'key', 'value'):
    sel = heads if name == 'query' else kv
    scale = math.sqrt(ls / lt) if (name == 'query' and
                                   preserve_logit_scale) else 1.0
    new = {'kernel': scale * fold_in(g1, t['attn'][name]['kernel'])[
        :, sel][:, :, hdim]}
    if 'bias' in t['attn'][name]:
      new['bias'] = scale * t['attn'][name]['bias'][sel][:, hdim]
    attn[name] = new
  for name in ('query_norm', 'key_norm'):
    if name in t['attn']:
      attn[name] = {'scale': t['attn'][name]['scale'][hdim]}
  o = t['attn']['out']['kernel'][heads][:, hdim]          # (h, l, d_T)
  attn['out'] = {'kernel': jnp.tensordot(o, pm, axes=1)}
  mlp_out = t['mlp_out']['dense']
  block = dict(s)
  block.update(norm1=unit_gain(s['norm1']), norm2=unit_gain(s['norm2']),
               attn=attn)
  for name in ('mlp_in', 'mlp_gate'):
    if name in t:
      dense = {'kernel': fold_in(g2, t[name]['dense']['kernel'])[:, units]}
      if 'bias' in t[name]['dense']:
        dense['bias'] = t[name]['dense']['bias'][units]
      block[name] = {'dense': dense}
  dense = {'kernel': mlp_out['kernel'][units] @ pm}
  if 'bias' in mlp_out:
    dense['bias'] = mlp_out['bias'] @ pm
  block['mlp_out'] = {'dense': dense}
  block = jax.tree.map(lambda new, old: new.astype(old.dtype), block,
                       dict(s))
  return _set_block0(out, block)


def fold_projection(params):
  """A trainable-projection student's params (frozen teacher table
  `embed/embedding` (V, d_T) and `embed_proj` (d_T, d_S)) as a plain
  student's: `embed/embedding` = table @ M (and positions likewise)."""
  params = dict(params)
  proj = params.pop('embed_proj')
  params['embed'] = {'embedding': params['embed']['embedding'] @ proj}
  if 'pos_embed' in params:
    params['pos_embed'] = params['pos_embed'] @ proj
  return params
