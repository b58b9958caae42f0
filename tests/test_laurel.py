"""LAuReL residuals: identity at init, the paper's parameter counts, gradients,
PA under nn.scan, options and errors, weight decay, checkpoints, distillation."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import normal, randint

from configs import common, digits_distill
from core.errors import ConfigError
from distill import checkpoint as ckpt_lib
from distill import distillation, optim
from models import laurel, residual
import models

VARIANTS = sorted(k for k in residual.RESIDUALS if k.startswith('laurel_'))
RANK, PA_K = 4, 3
KW = dict(rank=RANK, pa_k=PA_K)
IMAGES = normal(1, (2, 16, 16, 3))
TOKENS = randint(2, (2, 8), 0, 11)


def resnet(kind='standard', **kw):
  return models.build('resnet', 10, depth=8, residual=kind,
                      residual_kw=dict(KW, **kw)), IMAGES


def lm(kind='standard', scan=False, layers=3, **kw):
  return models.build('transformer_lm', 11, num_layers=layers, width=16,
                      num_heads=2, mlp_dim=32, max_len=8, residual=kind,
                      residual_kw=dict(KW, **kw), scan_layers=scan), TOKENS


def params(model, x, seed=0):
  return nn.meta.unbox(model.init(jax.random.PRNGKey(seed), x))


def transplant(src, dst):
  """`dst` with every array that `src` also has (same path) taken from it."""
  flat = {k: v for k, v in jax.tree_util.tree_flatten_with_path(src)[0]}
  return jax.tree_util.tree_map_with_path(lambda p, v: flat.get(p, v), dst)


def added(kind, **kw):
  """Parameters under the `residual` modules of a ResNet-8 and a 3-layer LM."""
  out = []
  for build in (resnet, lm):
    model, x = build(kind, **kw)
    flat = jax.tree_util.tree_flatten_with_path(params(model, x)['params'])[0]
    out.append(sum(v.size for p, v in flat if 'residual' in str(p)))
  return out


@pytest.mark.slow
@pytest.mark.parametrize('kind', VARIANTS)
@pytest.mark.parametrize('build', [resnet, lm], ids=['resnet', 'lm'])
def test_identity_at_initialisation(kind, build):
  """A LAuReL model equals the plain model with the same other weights."""
  base, x = build()
  model, _ = build(kind)
  vb = params(base, x, seed=3)
  v = transplant(vb, params(model, x, seed=4))   # other weights from base
  assert jax.tree.leaves(v['params']) != jax.tree.leaves(vb['params'])
  np.testing.assert_allclose(model.apply(v, x), base.apply(vb, x),
                             rtol=1e-6, atol=1e-6)


def test_pa_identity_with_lowrank_h_also_starts_as_plain():
  base, x = lm()
  model, _ = lm('laurel_pa', pa_h='lowrank')
  vb = params(base, x)
  np.testing.assert_allclose(
      model.apply(transplant(vb, params(model, x)), x), base.apply(vb, x),
      rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_parameter_counts_follow_table_4():
  """Per block: RW 2, LR 2rD, PA k (identity h), PA 2rD + k (low-rank h),
  RW+LR 2rD + 2, RW+PA k + 2, LR+PA 2rkD + k, RW+LR+PA 2rkD + k + 2.
  ResNet-8 has one block per stage, D = 16, 32, 64; the LM 3 blocks, D = 16."""
  r, k = RANK, PA_K
  widths = {'resnet': (16, 32, 64), 'lm': (16, 16, 16)}
  formulas = {
      'laurel_rw': lambda d: 2, 'laurel_lr': lambda d: 2 * r * d,
      'laurel_pa': lambda d: k, 'laurel_rw_lr': lambda d: 2 * r * d + 2,
      'laurel_rw_pa': lambda d: k + 2,
      'laurel_lr_pa': lambda d: 2 * r * k * d + k,
      'laurel_rw_lr_pa': lambda d: 2 * r * k * d + k + 2}
  assert set(formulas) == set(VARIANTS)
  for kind, f in formulas.items():
    assert added(kind) == [sum(map(f, widths['resnet'])),
                           sum(map(f, widths['lm']))], kind
  assert added('laurel_pa', pa_h='lowrank') == [
      sum(2 * r * d + k for d in w) for w in widths.values()]
  assert added('laurel_rw', rw_vector=True) == [
      sum(2 * d for d in w) for w in widths.values()]
  assert added('standard') == [0, 0]


def test_column_orthogonal_init():
  a = laurel.column_orthogonal(None, (8, 3))
  expected = np.zeros((8, 3))
  for i in range(8):
    expected[i, i % 3] = 1 / np.sqrt(24)
  np.testing.assert_allclose(a, expected, rtol=1e-6)


def test_softmax_rw_halves_both_paths_and_sigmoid_does_not():
  x = jnp.arange(6.0).reshape(2, 3)
  fx = jnp.ones((2, 3))
  for mode, scale in (('softmax', 0.5), ('sigmoid', 1.0)):
    cls = residual.RESIDUALS['laurel_rw']
    out, _ = cls(rw_mode=mode).init_with_output(jax.random.PRNGKey(0), x, fx)
    np.testing.assert_allclose(out, scale * (x + fx))


@pytest.mark.slow
@pytest.mark.parametrize('kind', VARIANTS)
def test_gradients_reach_every_laurel_parameter(kind):
  """After one SGD step (B leaves zero), no LAuReL parameter has a zero
  gradient: alpha, beta, gamma, A and B all learn."""
  model, x = lm(kind, rw_vector=True)
  v = params(model, x)

  def loss(p):
    return jnp.mean(model.apply({'params': p}, x)[..., 0] ** 2)

  p = v['params']
  for _ in range(2):
    g = jax.grad(loss)(p)
    p = jax.tree.map(lambda a, b: a - 0.5 * b, p, g)
  flat = jax.tree_util.tree_flatten_with_path(g)[0]
  laurel_grads = {jax.tree_util.keystr(k): float(jnp.abs(v).max())
                  for k, v in flat if 'residual' in jax.tree_util.keystr(k)}
  assert laurel_grads
  stuck = {k for k, v in laurel_grads.items() if v == 0.0}
  # Only the pairs of eq. 6 that read x_{i-j} for j > i (before the first
  # block: zeros) get no gradient, in the unrolled model as in the paper's.
  dead = {f"['block{i}']['residual']['pa{j}_{m}']" for i in range(3)
          for j in range(i + 1, PA_K) for m in 'AB'} & set(laurel_grads)
  assert stuck == dead


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['laurel_pa', 'laurel_rw_lr_pa', 'standard'])
def test_scan_over_layers_equals_unrolled(kind):
  """PA's history as a fixed-size carry under nn.scan gives the unrolled
  model's output, with LAuReL parameters away from their init."""
  layers = 4
  unrolled, x = lm(kind, layers=layers)
  scanned, _ = lm(kind, scan=True, layers=layers)
  v = params(unrolled, x)
  rng = np.random.default_rng(5)
  v = jax.tree_util.tree_map_with_path(
      lambda p, a: a + 0.3 * rng.standard_normal(a.shape).astype(np.float32)
      if 'residual' in jax.tree_util.keystr(p) else a, v)
  blocks = [v['params'].pop(f'block{i}') for i in range(layers)]
  sv = {'params': dict(v['params'], blocks={'block': jax.tree.map(
      lambda *a: jnp.stack(a), *blocks)})}
  ref = params(scanned, x)
  assert jax.tree.structure(ref) == jax.tree.structure(sv)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(sv)):
    assert a.shape == b.shape
  v['params'].update({f'block{i}': b for i, b in enumerate(blocks)})
  np.testing.assert_allclose(scanned.apply(sv, x), unrolled.apply(v, x),
                             rtol=2e-5, atol=2e-5)


def test_pa_keeps_only_the_last_k_activations():
  assert residual.history_length('laurel_pa', {'pa_k': 5}) == 4
  assert residual.history_length('laurel_rw_lr', {'pa_k': 5}) == 0
  prev = residual.init_history(2, jnp.zeros(3))
  for i in range(5):
    prev = residual.push_history(prev, jnp.full(3, float(i)))
  assert [float(p[0]) for p in prev] == [4.0, 3.0]
  # a shape change (new ResNet stage) restarts the history from zeros
  fresh = residual.fit_history(prev, jnp.ones(6))
  assert [p.shape for p in fresh] == [(6,), (6,)] and not any(
      bool(p.any()) for p in fresh)


@pytest.mark.slow
def test_scalars_are_not_weight_decayed():
  model, x = lm('laurel_rw_lr_pa', rw_vector=True)
  p = params(model, x)['params']
  tx, _ = optim.make(ml_collections.ConfigDict(dict(
      name='adamw', lr=0.0, weight_decay=1.0, b1=0.9, b2=0.999)),
                     ml_collections.ConfigDict(dict(name='constant')), 10, 0)
  p = jax.tree.map(lambda a: a + 1.0, p)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
  new = optax.apply_updates(p, updates)
  res = new['block1']['residual']
  for name in ('alpha', 'beta', 'gamma'):
    np.testing.assert_array_equal(res[name], p['block1']['residual'][name])
  assert res['pa0_A'].shape == (16, RANK)   # the lr=0 step leaves all alone


def test_bad_options_are_one_line_errors():
  with pytest.raises(ConfigError, match='valid choices: .*laurel_rw_lr'):
    models.build('resnet', 10, depth=8, residual='laurel')
  with pytest.raises(ConfigError, match=r'unknown option\(s\) rnak .*valid '
                     'choices: a_init, pa_h, pa_k, rank'):
    models.build('resnet', 10, depth=8, residual='laurel_lr',
                 residual_kw={'rnak': 3})
  with pytest.raises(ConfigError, match='rank=99 must be in'):
    model, x = lm('laurel_lr', rank=99)
    params(model, x)
  with pytest.raises(ConfigError, match='rw_mode.*valid choices: sigmoid, '
                     'softmax'):
    model, x = lm('laurel_rw', rw_mode='tanh')
    params(model, x)
  # LAuReL options are ignored by the standard residual (switch back freely)
  model, x = lm('standard', rank=99)
  params(model, x)


@pytest.mark.slow
def test_laurel_teacher_and_student_distill_and_checkpoints_load(tmp_path):
  """A LAuReL ResNet teacher and a LAuReL ResNet student (vanilla
  distillation) train, and both checkpoints load back."""
  c = digits_distill.get_config('method=vanilla,runlocal')
  t = c.teacher.config
  for m, kind in ((t, 'laurel_rw_lr_pa'), (c, 'laurel_rw_lr')):
    m.model_name = 'resnet'
    m.model = ml_collections.ConfigDict(dict(depth=8, width=0.5))
    common.set_residual(m.model, kind, rank=2)
  summary = distillation.run(c, str(tmp_path))
  assert summary['student/step'] == 2
  for sub, kind in (('teacher', 'laurel_rw_lr_pa'), ('student',
                                                     'laurel_rw_lr')):
    config, variables, _ = ckpt_lib.load_trained(str(tmp_path / sub))
    assert config.model.residual == kind
    assert 'alpha' in variables['params']['stage0_block0']['residual']
    model = models.build(config.model_name, 10, config.model_dtype,
                         **config.model.to_dict())
    assert model.apply(variables, jnp.zeros((1, 8, 8, 1))).shape == (1, 10)


@pytest.mark.slow
def test_a_trajectory_table_reports_the_learned_weights_over_training(
    tmp_path):
  """`trajectory`: every kept checkpoint's learned alpha, beta, gamma (as
  they act: 2 sigmoid(a), 1 at init) in the report and a plot."""
  from conftest import shared_file  # pylint: disable=g-import-not-at-top
  from experiments import harness  # pylint: disable=g-import-not-at-top
  manual_dir = os.path.dirname(shared_file('tiny_shakespeare.txt'))
  table = tmp_path / 'traj.py'
  table.write_text(
      "TABLE = dict(kind='laurel', config='configs/shakespeare_lm.py',\n"
      "    arg='layers=2,width=32,heads=2,mlp=64,seq_len=32,steps=20',\n"
      "    base={'batch_size': 8, 'eval_every_steps': -1,\n"
      "          'log_every_steps': 10},\n"
      "    seeds=(0,), metric='test/loss', higher=False, trajectory=10,\n"
      "    timing_rounds=1,\n"
      "    rows={'baseline': {},\n"
      "          'RW+PA': {'model.residual': 'laurel_rw_pa'}})\n")
  cells, _ = harness.run(str(table), workdir=str(tmp_path / 'runs'),
                         results=str(tmp_path / 'results'),
                         manual_dir=manual_dir)
  traj = cells[('RW+PA', 0)]['trajectory']
  assert sorted(traj) == [10, 20]
  assert set(traj[20]) == {'alpha', 'beta', 'gamma'}
  assert cells[('baseline', 0)]['trajectory'] == {10: {}, 20: {}}
  alpha = traj[20]['alpha']
  assert 0 < alpha['min'] <= alpha['mean'] <= alpha['max'] < 2
  assert alpha['mean'] != 1.0          # it moved from its initial 1
  md = (tmp_path / 'results' / 'traj.md').read_text()
  assert '| RW+PA: alpha |' in md and '(step 20) |' in md
  assert (tmp_path / 'results' / 'traj_trajectory.png').exists()
  # The records beside the results (experiments/records.py) hold each
  # cell with its trajectory: another root without the runs trains
  # nothing and reports the same cells.
  again, _ = harness.run(str(table), workdir=str(tmp_path / 'fresh'),
                         results=str(tmp_path / 'results'),
                         manual_dir=manual_dir, report_only=True)
  assert again == cells and not (tmp_path / 'fresh').exists()
