"""Offline LM distillation (distill/lm_cache.py): the sparse top-k cache,
the objectives on its support against the dense truncated ones, and
configs/guide_lm.py:offline_topk=k end to end against online distillation
with the same truncation.

    python -m pytest -q tests/test_lm_offline.py
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.errors import ConfigError
from distill import divergences, lm_cache, methods

OBJECTIVES = ('forward_kl', 'reverse_kl', 'jsd')


def _logits(seed, shape):
  return jnp.asarray(np.random.RandomState(seed).randn(*shape) * 2,
                     jnp.float32)


@pytest.mark.slow
@pytest.mark.parametrize('name', OBJECTIVES)
@pytest.mark.parametrize('top_k', [0, 3])
def test_the_sparse_divergence_is_the_dense_truncated_one(name, top_k):
  """On the teacher's top-k log-probabilities (cached at temperature 1),
  the divergence equals the dense one truncated to those k tokens with
  renormalize, at any temperature (top_k: a smaller k than cached)."""
  t, s = _logits(0, (2, 5, 40)), _logits(1, (2, 5, 40))
  logp, ids = jax.lax.top_k(jax.nn.log_softmax(t), 6)
  for temperature in (1.0, 2.5):
    dense, _ = divergences.divergence(name, t, s, temperature, 0.3,
                                      top_k or 6, 1.0, 'renormalize')
    sparse, _ = divergences.sparse_divergence(name, ids, logp, s,
                                              temperature, 0.3, top_k)
    np.testing.assert_allclose(sparse, dense, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize('name', OBJECTIVES + ('vanilla',))
def test_a_method_on_sparse_targets_is_the_truncated_dense_method(name):
  """The registry entries read batch['teacher'] = {topk_ids, topk_logp}:
  the loss (padding excluded, normalised by real tokens) equals the dense
  method with teacher_top_k = k (vanilla: forward_kl plus the kept
  support's entropy, i.e. soft CE on the renormalised top-k)."""
  t, s = _logits(2, (3, 4, 30)), _logits(3, (3, 4, 30))
  logp, ids = jax.lax.top_k(jax.nn.log_softmax(t), 5)
  targets = jnp.asarray(np.random.RandomState(4).randint(0, 30, (3, 4)))
  batch = {'targets': targets, 'mask': jnp.array([1.0, 1.0, 0.0]),
           'target_mask': jnp.array([[1, 1, 1, 0]] * 3, jnp.float32)}
  method = methods.get(name)
  kw = {'temperature': 2.0}
  if name != 'vanilla':
    kw.update(alpha=0.7, teacher_top_k=5)
  sparse, _ = method.loss_fn(kw)(s, {'topk_ids': ids, 'topk_logp': logp},
                                 batch)
  if name == 'vanilla':
    p = jax.nn.softmax(logp / 2.0)
    lq = jnp.take_along_axis(jax.nn.log_softmax(s / 2.0), ids, -1)
    per = -jnp.sum(p * lq, -1) * 4.0
    w = batch['mask'][:, None] * batch['target_mask']
    dense = jnp.sum(per * w) / jnp.sum(w)
  else:
    dense, _ = method.loss_fn(kw)(s, {'logits': t}, batch)
  assert float(sparse) == pytest.approx(float(dense), abs=1e-5)


@pytest.mark.parametrize('dtype', list(lm_cache.DTYPES))
def test_the_cache_round_trips_by_example_id(tmp_path, dtype):
  """build writes batch by batch (any order of positions) into memory-mapped
  files; rows are looked up by example id; values round to the storage
  dtype; a stale meta rebuilds, an unknown id is a KeyError."""
  n, seq, k = 7, 5, 3
  ids = np.array([40, 12, 33, 5, 18, 27, 9])
  rng = np.random.RandomState(0)
  top_ids = rng.randint(0, 50, (n, seq, k)).astype(np.int32)
  logp = -np.abs(rng.randn(n, seq, k)).astype(np.float32)
  meta = {'k': k, 'dtype': dtype, 'n': n}
  cache = lm_cache.SparseCache(str(tmp_path / 'part'))
  batches = lambda: ((p, top_ids[p], logp[p]) for p in
                     (np.array([3, 4, 5, 6]), np.array([0, 1, 2])))
  targets, built = cache.get_or_build(meta, ids, batches, seq)
  assert built and not os.path.exists(str(tmp_path / 'part.tmp'))
  got = targets.get(targets.rows([33, 5]))
  np.testing.assert_array_equal(got['topk_ids'], top_ids[[2, 3]])
  tol = {'float32': 0, 'bfloat16': 2 ** -8, 'float16': 2 ** -11}[dtype]
  np.testing.assert_allclose(got['topk_logp'], logp[[2, 3]], rtol=tol,
                             atol=1e-7)
  assert cache.get_or_build(meta, ids, batches, seq)[1] is False
  assert cache.get_or_build(dict(meta, n=8), ids, batches, seq)[1] is True
  with pytest.raises(KeyError, match='not in the teacher cache'):
    targets.rows([41])
  assert lm_cache.bytes_per_token(8, dtype) == 8 * (4 + (
      4 if dtype == 'float32' else 2))


def _corpus(tmp_path):
  text = tmp_path / 'corpus.txt'
  rng = np.random.default_rng(0)
  text.write_text(' '.join(rng.choice(['the cat sat', 'on a mat',
                                        'a dog ran', 'to the sea'])
                           for _ in range(2500)))
  return text


def _losses(workdir):
  with open(os.path.join(workdir, 'student', 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return np.array([r['train/loss'] for r in rows if 'train/loss' in r])


@pytest.mark.slow
def test_guide_lm_offline_topk_matches_online_with_the_same_truncation(
    tmp_path):
  """configs/guide_lm.py:offline_topk=4 (one argument) runs end to end: the
  teacher, the labeling pass into the sparse cache, the student; its
  per-step losses equal online distillation's with teacher_top_k=4 within
  1e-5 (float32 cache) and within the storage precision (bfloat16,
  float16)."""
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  from distill import run  # pylint: disable=g-import-not-at-top
  text = _corpus(tmp_path)
  kw = dict(alpha=0.5, temperature=2.0, beta=0.3)

  def config(extra):
    c = guide_lm.get_config(f'method=jsd,text={text},runlocal'
                            + extra)
    c.log_every_steps = 1
    c.method_kw.update(kw)
    return c

  off = config(',offline_topk=4')
  # A teacher trained past its initialisation: a near-uniform one has
  # near-ties at the k-th token (gaps ~1e-6, the float difference of the
  # labeling pass and the in-step teacher), which the two paths may break
  # differently (the support then differs; 0.01% of tokens at 2 steps).
  off.teacher.config.steps = 60
  off.teacher.config.optimizer.lr = 1e-2
  out = run.execute(off, str(tmp_path / 'off'))
  assert out['teacher_cache/bytes_per_token'] == 32
  assert out['student/step'] == 2
  teacher = str(tmp_path / 'off' / 'teacher')
  on = config('')
  on.teacher.workdir = teacher
  on.method_kw.teacher_top_k = 4
  run.execute(on, str(tmp_path / 'on'))
  online = _losses(tmp_path / 'on')
  assert len(online) == 2
  np.testing.assert_allclose(_losses(tmp_path / 'off'), online, atol=1e-5)
  for dtype, rtol in (('bfloat16', 2 ** -7), ('float16', 2 ** -10)):
    c = config(f',offline_topk=4,cache_dtype={dtype}')
    c.teacher.workdir = teacher
    run.execute(c, str(tmp_path / dtype))
    np.testing.assert_allclose(_losses(tmp_path / dtype), online, rtol=rtol)


def test_the_offline_lm_path_checks_its_options():
  """One line naming what is wrong: a method without a sparse path, a
  teacher_top_k above the cache's k, top_p or other_bucket offline, an
  unknown storage dtype."""
  from configs import guide_lm  # pylint: disable=g-import-not-at-top
  from distill import distillation  # pylint: disable=g-import-not-at-top
  c = guide_lm.get_config('method=forward_kl,runlocal,offline_topk=4')
  assert not c.distill.online and c.distill.cache_topk == 4
  distillation.check_lm_offline(c)
  c.method_kw.teacher_top_k = 5
  with pytest.raises(ConfigError, match='exceeds distill.cache_topk=4'):
    distillation.check_lm_offline(c)
  c.method_kw.teacher_top_k = 0
  c.method_kw.truncation = 'other_bucket'
  with pytest.raises(ConfigError, match='truncation renormalize'):
    distillation.check_lm_offline(c)
  c.method_kw.truncation = 'renormalize'
  c.distill.cache_dtype = 'int8'
  with pytest.raises(ConfigError, match='cache_dtype'):
    distillation.check_lm_offline(c)
  c = guide_lm.get_config('method=hard,runlocal,offline_topk=4')
  with pytest.raises(ConfigError, match='no offline language-model path'):
    distillation.check_lm_offline(c)
