"""A method's loss over an LM's sequence in chunks, with each chunk's logits
computed inside the loop (config.loss_chunk_len > 0).

    loss, metrics = chunked.loss(loss_fn, (s_hidden, s_head, s_project),
                                 (t_hidden, t_head, t_project), batch, 256)

The models return their final hidden states (batch, seq, width) and
unembedding (width, vocab) (models/transformer.py: `hidden=True`); the
loop runs over the sequence in chunks of `chunk` positions, all of the
batch at once (so each chunk keeps the batch's sharding), computes the
student's and the teacher's float32 logits (batch, chunk, vocab) with
their `project`, and calls the method's loss on them: the chunk's batch
holds the per-position entries (`targets`, `target_mask`, a sparse
cache's `topk_ids`, ...) of those positions and the per-example ones
(`mask`, ...) whole. Each chunk's body is rematerialised (jax.checkpoint),
so the backward pass keeps the hidden states, not the logits: memory for
the logits is O(batch x chunk x vocab) instead of O(batch x seq x vocab).

Every registered loss is a weighted mean whose `loss` metric is its
(numerator, denominator) (distill/methods.py: `finish`, `supervised`), and
every metric is a (sum, count) pair, so the chunks' metrics add up to the
whole batch's and the loss is their `loss` sum over its count: the plain
computation's, up to float32 summation order (tests/test_chunked_loss.py).
A method with a fitted per-example state of the teacher's outputs (`fit`)
needs the whole sequence's logits, and is refused (`check`).
"""
import jax
import jax.numpy as jnp

from core.errors import ConfigError


def check(chunk, model_name, method):
  """One-line ConfigErrors for config.loss_chunk_len = `chunk` with this
  model and method (a registry entry)."""
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    raise ConfigError(f'loss_chunk_len={chunk!r} must be an integer >= 0 '
                      '(sequence positions per loss chunk; 0: off)')
  if chunk and model_name != 'transformer_lm':
    raise ConfigError(f'loss_chunk_len={chunk} chunks an LM\'s sequence; '
                      f'model {model_name!r} is not one: valid choices: '
                      'transformer_lm, or loss_chunk_len=0')
  if chunk and method.fit is not None:
    raise ConfigError(
        f'loss_chunk_len={chunk}: method {method.name!r} fits a state on '
        "the whole sequence's teacher outputs; set loss_chunk_len=0")


def _chunks(x, seq, chunk):
  """`x` (batch, seq, ...) -> (n, batch, chunk, ...), the sequence padded
  with zeros to n * chunk; other arrays None (passed whole)."""
  if jnp.ndim(x) < 2 or x.shape[1] != seq:
    return None
  pad = -seq % chunk
  x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  x = x.reshape((x.shape[0], -1, chunk) + x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _split(tree, seq, chunk):
  """(the per-position leaves in chunks, the rest whole) of a dict tree."""
  per = jax.tree.map(lambda x: _chunks(x, seq, chunk), tree)
  whole = jax.tree.map(lambda x, p: x if p is None else None, tree, per)
  return per, whole


def _join(per, whole):
  return jax.tree.map(lambda p, w: w if p is None else p, per, whole,
                      is_leaf=lambda x: x is None)


def loss(loss_fn, student, teacher, batch, chunk):
  """(loss, metrics) of `loss_fn(logits, teacher_targets, batch)` on the
  whole batch, computed `chunk` sequence positions at a time (module doc).
  `student`, `teacher`: (hidden (B, T, D), head (D, V), project(hidden,
  head) -> float32 logits); `teacher` None without one, or a dict of
  teacher targets (a sparse cache's, chunked like the batch)."""
  s_hidden, s_head, s_project = student
  seq = s_hidden.shape[1]
  mask = jnp.ones(s_hidden.shape[:2], jnp.float32)
  if 'target_mask' in batch:
    mask = batch['target_mask'].astype(jnp.float32)
  # Positions padded to a whole chunk weigh 0 (their target_mask).
  batch = dict(batch, target_mask=mask)
  online = isinstance(teacher, tuple)
  targets = {} if teacher is None else (
      {'hidden': teacher[0]} if online else dict(teacher))
  per, whole = _split({'batch': batch, 'teacher': targets,
                       'student': s_hidden}, seq, chunk)

  def body(s_head, t_head, xs):
    tree = _join(xs, whole)
    logits = s_project(tree['student'], s_head)
    t = tree['teacher']
    if online:
      t = {'logits': jax.lax.stop_gradient(teacher[2](t['hidden'], t_head))}
    _, metrics = loss_fn(logits, None if teacher is None else t,
                         tree['batch'])
    return metrics

  t_head = teacher[1] if online else None
  body = jax.checkpoint(body)
  first = jax.tree.map(lambda p: p if p is None else p[0], per,
                       is_leaf=lambda x: x is None)
  zeros = jax.tree.map(jnp.zeros_like,
                       jax.eval_shape(body, s_head, t_head, first))

  def step(total, xs):
    metrics = body(s_head, t_head, xs)
    return jax.tree.map(jnp.add, total, metrics), None

  metrics, _ = jax.lax.scan(step, zeros, per)
  numerator, count = metrics['loss']
  return numerator / jnp.maximum(count, 1e-12), metrics
