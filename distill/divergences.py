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
Every log-probability is a log_softmax or a masked logsumexp; entries
outside the support or of zero teacher probability are masked with `where`
before any log or product, so no NaN reaches the value or the gradient.
"""
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


def divergence(name, teacher_logits, student_logits, temperature=1.0,
               beta=0.5, top_k=0, top_p=1.0, truncation='renormalize'):
  """(D(P_T, Q_T) per row, the teacher's mass P_T(S) on the kept support
  per row); see the module doc. Options are static Python values."""
  if truncation not in TRUNCATIONS:
    raise ValueError(f'unknown truncation {truncation!r}; valid choices: '
                     f'{", ".join(TRUNCATIONS)}')
  lp = jax.nn.log_softmax(teacher_logits / temperature)
  lq = jax.nn.log_softmax(student_logits / temperature)
  keep = support(lp, top_k, top_p)
  if keep is None:
    valid = jnp.ones(lp.shape, bool)
    return (jnp.sum(_terms(name, lp, lq, valid, beta), -1),
            jnp.ones(lp.shape[:-1]))
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
