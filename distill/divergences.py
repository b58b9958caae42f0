"""Divergences between a teacher's and a student's distributions over the
last axis, in log space, optionally on a truncated teacher support.

    d, kept_mass = divergences.divergence('jsd', teacher_logits,
                                          student_logits, temperature=2.0,
                                          beta=0.5, top_k=20, top_p=0.95,
                                          truncation='other_bucket')

P is the teacher, Q the student, both softmax(logits / temperature):
- forward_kl: KL(P || Q) = sum P (log P - log Q);
- reverse_kl: KL(Q || P) = sum Q (log Q - log P);
- jsd: the generalised Jensen-Shannon divergence of GKD (Agarwal et al.
  2024), beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q.
  JSD(beta) / beta -> KL(P || Q) (forward) as beta -> 0 and
  JSD(beta) / (1 - beta) -> KL(Q || P) (reverse) as beta -> 1.

Truncation keeps the teacher's support S: its top_k tokens (0: all) and its
nucleus (the most probable tokens whose mass reaches top_p, at least one;
1.0: all), both of P at this temperature; S is their intersection (ties at
the boundary are kept). With truncation
- `renormalize`: the teacher is P_S, P restricted to S and renormalised
  (exact zeros outside S), and D = D(P_S, Q) with the student's whole
  distribution Q (forward KL: the usual top-k distillation, which also
  pulls Q's mass into S). KL(Q || P_S) would be infinite, so reverse_kl
  takes Q_S, Q on S renormalised, too: KL(Q_S || P_S) (Q's mass outside S
  is then free; with top_k = 1 it is 0);
- `other_bucket`: D on S plus one category holding the dropped mass,
  1 - P(S) for the teacher and 1 - Q(S) for the student (absent when
  nothing is dropped): every divergence is finite and constrains Q's mass
  outside S.
Every log-probability is a log_softmax or a (masked) logsumexp; entries
outside the support or of zero teacher probability are masked with `where`
before any log or product, so no NaN reaches the value or the gradient.
Untruncated, the three are computed from the two logsumexps without
storing log P or log Q (`_dense`), reverse KL and JSD with their gradients
written out; forward KL as sum P (t - s) - lse(t) + lse(s), exact up to
float32 rounding of the logsumexps (~1e-7 of their size: a KL near 0 may
come out a few 1e-6 below it at logits of scale 20).
"""
import functools

import jax
import jax.numpy as jnp

DIVERGENCES = ('forward_kl', 'reverse_kl', 'jsd')
TRUNCATIONS = ('renormalize', 'other_bucket')


# Rows per pass of the threshold search hold about this many elements
# (2 MiB of f32): on CPU a pass over a block that stays in cache is ~10x
# faster per element than one over a whole (tokens, vocabulary) array.
_BLOCK_ELEMENTS = 1 << 19


def _order_keys(x):
  """uint32 keys ordered as the float32 values of `x` (-0.0 as +0.0)."""
  x = x.astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))


def _largest_threshold(keys, weights, target):
  """Per row of `keys` (R, V): the largest key t whose weight at or above
  it, sum(weights[keys >= t]), reaches `target` (0 when none does); a
  bisection over the 32 bits, so t is one of the row's keys."""
  def step(i, best):
    candidate = best | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
    above = jnp.sum(jnp.where(keys >= candidate, weights, 0.0), -1,
                    keepdims=True)
    return jnp.where(above >= target, candidate, best)
  return jax.lax.fori_loop(0, 32, step, jnp.zeros(keys.shape[:-1] + (1,),
                                                  jnp.uint32))


def threshold_mask(x, weights, target):
  """Mask of the entries of `x` (..., V) at or above their row's threshold:
  the largest value of the row whose `weights` (None: 1 each) at or above
  it sum to at least `target` (everything when no value does). Exact
  (ties kept), and on CPU many times faster than a sort or lax.top_k: a
  32-step bisection on the values' bits, a block of rows at a time."""
  keys = _order_keys(x)
  v = x.shape[-1]
  flat = keys.reshape(-1, v)
  w = (jnp.ones((), jnp.float32) if weights is None else
       weights.astype(jnp.float32).reshape(-1, v))
  rows = flat.shape[0]
  block = max(1, min(rows, _BLOCK_ELEMENTS // v))
  blocks = -(-rows // block)
  pad = blocks * block - rows
  def blocked(a):
    return jnp.pad(a, ((0, pad), (0, 0))).reshape(blocks, block, v)
  if weights is None:
    t = jax.lax.map(lambda k: _largest_threshold(k, w, target), blocked(flat))
  else:
    t = jax.lax.map(lambda kw: _largest_threshold(kw[0], kw[1], target),
                    (blocked(flat), blocked(w)))
  t = t.reshape(blocks * block, 1)[:rows]
  return (flat >= t).reshape(x.shape)


def top_k_mask(x, k):
  """The k largest entries of each row of `x` (ties at the k-th value
  kept): `x >= lax.top_k(x, k)[0][..., -1:]`, without a sort."""
  return threshold_mask(x, None, k)


def top_p_mask(p, top_p):
  """The nucleus of each row of probabilities `p`: the most probable
  entries whose mass reaches `top_p`, at least one (ties at the boundary
  kept); an entry is in it when the mass strictly above it is below
  `top_p`."""
  return threshold_mask(p, p, top_p)


def support(log_p, top_k=0, top_p=1.0):
  """Boolean mask of the kept teacher support S (see the module doc), or
  None when nothing is truncated. `log_p`: the teacher's log-probabilities;
  `top_k`, `top_p` static."""
  keep = None
  if top_k and top_k < log_p.shape[-1]:
    keep = top_k_mask(jax.lax.stop_gradient(log_p), top_k)
  if top_p < 1.0:
    nucleus = top_p_mask(jnp.exp(jax.lax.stop_gradient(log_p)), top_p)
    keep = nucleus if keep is None else keep & nucleus
  return keep


def _masked_lse(x, where):
  """(log sum exp(x) over `where`, whether `where` holds anywhere), per row:
  -inf where the sum is 0 (nowhere, or only -inf entries), with finite
  gradients either way."""
  any_ = jnp.any(where, -1, keepdims=True)
  top = jnp.max(jnp.where(where, x, -jnp.inf), -1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  total = jnp.sum(jnp.where(where, jnp.exp(jnp.where(where, x - top, 0.0)),
                            0.0), -1, keepdims=True)
  positive = total > 0
  return jnp.where(positive, top + jnp.log(jnp.where(positive, total, 1.0)),
                   -jnp.inf), any_


def _terms(name, lp, lq, valid, beta):
  """Per-category contributions of divergence `name` (summing to it), 0
  where `valid` is False; `lp`, `lq` finite wherever `valid` holds, except
  lp = -inf for categories the teacher gives probability 0."""
  zero = valid & jnp.isneginf(lp)          # the teacher's exact zeros
  pos = valid & ~zero
  lp = jnp.where(pos, lp, 0.0)
  lq = jnp.where(valid, lq, 0.0)
  p = jnp.where(pos, jnp.exp(lp), 0.0)
  q = jnp.where(valid, jnp.exp(lq), 0.0)
  if name == 'forward_kl':
    out = jnp.where(pos, p * (lp - lq), 0.0)
  elif name == 'reverse_kl':
    # Q (log Q - log P): infinite where P = 0 < Q, as it is.
    out = jnp.where(pos, q * (lq - lp), jnp.where(zero & (q > 0), jnp.inf,
                                                  0.0))
  elif name == 'jsd':
    log_m_pos = jnp.logaddexp(jnp.log(beta) + lp, jnp.log1p(-beta) + lq)
    log_m = jnp.where(pos, log_m_pos, jnp.log1p(-beta) + lq)
    out = (beta * jnp.where(pos, p * (lp - log_m), 0.0)
           + (1.0 - beta) * q * (lq - log_m))
  else:
    raise ValueError(f'unknown divergence {name!r}; valid choices: '
                     f'{", ".join(DIVERGENCES)}')
  return jnp.where(valid, out, 0.0)


def _lse(x):
  return jax.nn.logsumexp(x, -1, keepdims=True)


def _forward_kl(t, s):
  """KL(softmax(t) || softmax(s)) per row: sum P (t - s) - lse(t) + lse(s),
  as sum P = 1; the teacher's exact zeros (t = -inf) add nothing."""
  lse_t, lse_s = _lse(t), _lse(s)
  pos = t > -jnp.inf
  p = jnp.exp(t - lse_t)
  terms = jnp.where(pos, p * (jnp.where(pos, t, 0.0) - s), 0.0)
  return jnp.sum(terms, -1) - (lse_t - lse_s)[..., 0]


# The two hand-written gradients skip the one of an argument that is not
# differentiated (a teacher's logits, under stop_gradient): XLA does not
# remove it by itself, and on CPU it cost ~8% of a dense reverse-KL step.
# Whether an argument is differentiated travels in the residuals as the
# pytree structure of an empty tuple (yes) or None (no).
def _wants(arg):
  return () if arg.perturbed else None


def _cotangent(wanted, compute, like):
  return jnp.zeros_like(like) if wanted is None else compute()


def _reverse_kl_parts(t, s, lse_t, lse_s):
  pos = t > -jnp.inf                       # P > 0
  lq = s - lse_s
  lp = jnp.where(pos, t - lse_t, 0.0)
  return pos, lp, lq, jnp.exp(lq)


@jax.custom_vjp
def _reverse_kl(t, s):
  """KL(softmax(s) || softmax(t)) per row; infinite where P = 0 < Q."""
  lse_t, lse_s = _lse(t), _lse(s)
  return _reverse_kl_value(t, s, lse_t, lse_s)[0]


def _reverse_kl_value(t, s, lse_t, lse_s):
  pos, lp, lq, q = _reverse_kl_parts(t, s, lse_t, lse_s)
  finite = jnp.sum(jnp.where(pos, q * (lq - lp), 0.0), -1)
  infinite = jnp.any(~pos & (q > 0), -1)
  return jnp.where(infinite, jnp.inf, finite), finite


def _reverse_kl_fwd(t, s):
  # Only per-row residuals, as for _jsd_fwd.
  lse_t, lse_s = _lse(t.value), _lse(s.value)
  value, finite = _reverse_kl_value(t.value, s.value, lse_t, lse_s)
  return value, (t.value, s.value, lse_t, lse_s, finite, _wants(t),
                 _wants(s))


def _reverse_kl_bwd(res, g):
  # d/ds_j = Q_j (log Q_j - log P_j - KL), d/dt_j = P_j - Q_j (on P > 0;
  # a row with P = 0 < Q, infinite, gets the gradient of its finite part).
  t, s, lse_t, lse_s, finite, want_t, want_s = res
  pos, lp, lq, q = _reverse_kl_parts(t, s, lse_t, lse_s)
  g = g[..., None]
  return (_cotangent(want_t, lambda: g * jnp.where(pos, jnp.exp(lp) - q,
                                                   0.0), t),
          _cotangent(want_s, lambda: g * jnp.where(
              pos, q * (lq - lp - finite[..., None]), 0.0), s))


_reverse_kl.defvjp(_reverse_kl_fwd, _reverse_kl_bwd, symbolic_zeros=True)


def _jsd_parts(beta, t, s, lse_t, lse_s):
  """(P, Q, per-category terms of KL(P || M), of KL(Q || M), log P, log Q,
  log M), zeros of P or Q masked."""
  lp, lq = t - lse_t, s - lse_s
  pos = lp > -jnp.inf
  lp = jnp.where(pos, lp, 0.0)
  p, q = jnp.where(pos, jnp.exp(lp), 0.0), jnp.exp(lq)
  log_m = jnp.where(pos, jnp.logaddexp(jnp.log(beta) + lp,
                                       jnp.log1p(-beta) + lq),
                    jnp.log1p(-beta) + lq)
  return (p, q, jnp.where(pos, p * (lp - log_m), 0.0),
          jnp.where(q > 0, q * (lq - log_m), 0.0), lp, lq, log_m)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _jsd(beta, t, s):
  """beta KL(P || M) + (1 - beta) KL(Q || M) per row, M = beta P +
  (1 - beta) Q."""
  return _jsd_value(beta, t, s, _lse(t), _lse(s))[0]


def _jsd_value(beta, t, s, lse_t, lse_s):
  _, _, a, b, _, _, _ = _jsd_parts(beta, t, s, lse_t, lse_s)
  kp, kq = jnp.sum(a, -1), jnp.sum(b, -1)
  return beta * kp + (1.0 - beta) * kq, kp, kq


def _jsd_fwd(beta, t, s):
  # Only per-row residuals: the backward pass recomputes the per-category
  # terms (storing Q and log M measured no faster, and would hold two more
  # logits-sized arrays).
  lse_t, lse_s = _lse(t.value), _lse(s.value)
  value, kp, kq = _jsd_value(beta, t.value, s.value, lse_t, lse_s)
  return value, (t.value, s.value, lse_t, lse_s, kp, kq, _wants(t),
                 _wants(s))


def _jsd_bwd(beta, res, g):
  # d/dQ_j = (1 - beta) log(Q_j / M_j), so through the softmax
  # d/ds_j = (1 - beta) Q_j (log Q_j - log M_j - KL(Q || M)); likewise
  # d/dt_j = beta P_j (log P_j - log M_j - KL(P || M)).
  t, s, lse_t, lse_s, kp, kq, want_t, want_s = res
  p, q, _, _, lp, lq, log_m = _jsd_parts(beta, t, s, lse_t, lse_s)
  g = g[..., None]
  return (_cotangent(want_t, lambda: g * beta * jnp.where(
              p > 0, p * (lp - log_m - kp[..., None]), 0.0), t),
          _cotangent(want_s, lambda: g * (1.0 - beta) * jnp.where(
              q > 0, q * (lq - log_m - kq[..., None]), 0.0), s))


_jsd.defvjp(_jsd_fwd, _jsd_bwd, symbolic_zeros=True)


def _dense(name, t, s, beta):
  """D(softmax(t), softmax(s)) per row on the whole support: `_terms`'
  values, written for few passes over the logits (log P and log Q are
  formed inside the sums, never stored; the two divergences whose
  gradient autodiff spreads over extra passes have theirs written out,
  without the teacher's when it is not differentiated). Their step times
  against CE: `python -m experiments.bench_methods --section=lm`
  (experiments/results/bench_methods_lm.md)."""
  if name == 'forward_kl':
    return _forward_kl(t, s)
  if name == 'reverse_kl':
    return _reverse_kl(t, s)
  return _jsd(float(beta), t, s)


def divergence(name, teacher_logits, student_logits, temperature=1.0,
               beta=0.5, top_k=0, top_p=1.0, truncation='renormalize'):
  """(D(P_T, Q_T) per row, the teacher's mass P_T(S) on the kept support
  per row); see the module doc. Options are static Python values."""
  if truncation not in TRUNCATIONS:
    raise ValueError(f'unknown truncation {truncation!r}; valid choices: '
                     f'{", ".join(TRUNCATIONS)}')
  if name not in DIVERGENCES:
    raise ValueError(f'unknown divergence {name!r}; valid choices: '
                     f'{", ".join(DIVERGENCES)}')
  truncated = (top_k and top_k < teacher_logits.shape[-1]) or top_p < 1.0
  if not truncated:
    return (_dense(name, teacher_logits / temperature,
                   student_logits / temperature, beta),
            jnp.ones(teacher_logits.shape[:-1]))
  lp = jax.nn.log_softmax(teacher_logits / temperature)
  lq = jax.nn.log_softmax(student_logits / temperature)
  keep = support(lp, top_k, top_p)
  lp_kept, _ = _masked_lse(lp, keep)           # log P(S)
  kept_mass = jnp.exp(lp_kept[..., 0])
  if truncation == 'renormalize' and name == 'reverse_kl':
    # KL(Q || P_S) is infinite: Q on S too, renormalised.
    lq_kept, _ = _masked_lse(lq, keep)
    d = jnp.sum(_terms(name, lp - lp_kept, lq - lq_kept, keep, beta), -1)
    return d, kept_mass
  if truncation == 'renormalize':
    # P_S: exact zeros outside S; Q whole.
    lp_s = jnp.where(keep, lp - lp_kept, -jnp.inf)
    d = jnp.sum(_terms(name, lp_s, lq, jnp.ones(lp.shape, bool), beta), -1)
    return d, kept_mass
  d = jnp.sum(_terms(name, lp, lq, keep, beta), -1)
  # The dropped mass as one more category, in log space.
  lp_out, dropped = _masked_lse(lp, ~keep)
  lq_out, _ = _masked_lse(lq, ~keep)
  bucket = _terms(name, lp_out, jnp.where(dropped, lq_out, 0.0), dropped,
                  beta)
  return d + bucket[..., 0], kept_mass


def sparse_divergence(name, topk_ids, topk_logp, student_logits,
                      temperature=1.0, beta=0.5, top_k=0):
  """(D(P_T, Q_T), ones) per row from a sparse teacher: its top-k token ids
  (..., k) int and log-probabilities at temperature 1 (..., k), best first
  (an offline cache, distill/lm_cache.py), truncated to the first `top_k`
  (0: all k) with `renormalize`. Equals `divergence(name, teacher_logits,
  student_logits, temperature, beta, top_k or k, 1.0, 'renormalize')` on the
  teacher's logits (ties at the k-th value aside): P_S at temperature T is
  softmax(log p / T) over S, since log p and the logits differ by a
  constant. The student's log-probabilities are gathered at the ids; JSD's
  terms outside S (P_S = 0 there) sum to -(1 - beta) log(1 - beta) Q(not S).
  The kept mass P(S) is unknown offline: ones are returned."""
  k = topk_ids.shape[-1]
  if top_k and top_k < k:
    topk_ids, topk_logp = topk_ids[..., :top_k], topk_logp[..., :top_k]
  lp = jax.nn.log_softmax(topk_logp.astype(jnp.float32) / temperature)
  lq_all = jax.nn.log_softmax(student_logits / temperature)
  lq = jnp.take_along_axis(lq_all, topk_ids.astype(jnp.int32), -1)
  valid = jnp.ones(lp.shape, bool)
  ones = jnp.ones(lp.shape[:-1])
  if name == 'reverse_kl':
    lq_s = lq - jax.nn.logsumexp(lq, -1, keepdims=True)
    return jnp.sum(_terms(name, lp, lq_s, valid, beta), -1), ones
  d = jnp.sum(_terms(name, lp, lq, valid, beta), -1)
  if name == 'jsd':
    q_out = jnp.clip(1.0 - jnp.sum(jnp.exp(lq), -1), 0.0, 1.0)
    d = d - (1.0 - beta) * jnp.log1p(-beta) * q_out
  return d, ones
