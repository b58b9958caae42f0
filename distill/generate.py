"""Sampling from and scoring with a TransformerLM: a KV cache, left padding.

    python -m launch.generate --model=WORKDIR_OR_EXPORT --prompt='ROMEO:' \
        --max_new_tokens=200 --temperature=0.8 --top_k=40

    from distill import generate
    tokens = generate.generate(model, params, [[5, 6, 7], [8]], 32)

Prompts of different lengths run as one batch, padded on the left: each
row's tokens carry their own positions (0 at the row's first real token)
and padding is masked from every attention (models/transformer.py:
`positions`, `valid`), so a row's result is the one it gets alone. With
the cache (`cache=True`, the default) the prompt runs once (prefill) and
each new token is one position through a decoder whose attention layers
keep their keys and values (`cache_len`); without it every step recomputes
the whole window (the reference the tests compare with, and the
benchmark's baseline). A scanned model's parameters are unstacked for the
unrolled decoder (`unstack_layers`).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from core.errors import ConfigError
from distill import divergences


def unstack_layers(params, num_layers):
  """A scanned TransformerLM's parameters (params/blocks/block, a leading
  layer axis) as the unrolled model's (params/block0, block1, ...)."""
  if 'blocks' not in params:
    return params
  out = {k: v for k, v in params.items() if k != 'blocks'}
  stacked = params['blocks']['block']
  for i in range(num_layers):
    out[f'block{i}'] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out


def decoder(model, cache_len=0):
  """`model` (a TransformerLM) for padded batches and decoding: unrolled
  layers, no remat or dropout, and a KV cache of `cache_len` positions."""
  if type(model).__name__ != 'TransformerLM':
    raise ConfigError(f'generation needs a language model (transformer_lm); '
                      f'this model is {type(model).__name__}')
  return model.clone(scan_layers=False, remat='none', dropout=0.0,
                     cache_len=cache_len)


def left_pad(prompts, pad_id=0):
  """(tokens, valid, positions), each (B, P): `prompts` (lists of token
  ids, none empty) right-aligned in a row of the longest one's length."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ConfigError('every prompt needs at least one token')
  width = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), width), pad_id, np.int32)
  valid = np.zeros((len(prompts), width), bool)
  for row, prompt in enumerate(prompts):
    tokens[row, width - len(prompt):] = prompt
    valid[row, width - len(prompt):] = True
  positions = np.maximum(np.cumsum(valid, 1) - 1, 0).astype(np.int32)
  return tokens, valid, positions


def sample(logits, key, temperature=0.0, top_k=0, top_p=1.0):
  """The next token of each row of `logits` (B, V): the argmax at
  temperature 0; else a draw from softmax(logits / temperature) over the
  `top_k` most likely tokens (0: all) within the smallest set holding
  `top_p` of the probability (1.0: all)."""
  if temperature <= 0:
    return jnp.argmax(logits, -1).astype(jnp.int32)
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    logits = jnp.where(divergences.top_k_mask(logits, top_k), logits,
                       -jnp.inf)
  if top_p < 1.0:
    nucleus = divergences.top_p_mask(jax.nn.softmax(logits, -1), top_p)
    logits = jnp.where(nucleus, logits, -jnp.inf)
  return jax.random.categorical(key, logits).astype(jnp.int32)


def check_options(temperature, top_k, top_p, max_new_tokens):
  if temperature < 0:
    raise ConfigError(f'temperature={temperature} must be >= 0 (0: greedy)')
  if top_k < 0:
    raise ConfigError(f'top_k={top_k} must be >= 0 (0: every token)')
  if not 0.0 < top_p <= 1.0:
    raise ConfigError(f'top_p={top_p} must be in (0, 1]')
  if max_new_tokens < 1:
    raise ConfigError(f'max_new_tokens={max_new_tokens} must be >= 1')


def _check_length(model, length):
  if model.positions == 'learned' and length > model.max_len:
    raise ConfigError(
        f'the longest prompt plus max_new_tokens is {length} tokens, more '
        f'than the model\'s learned positions (max_len={model.max_len}); '
        'shorten them')


def generate(model, params, prompts, max_new_tokens, temperature=0.0,
             top_k=0, top_p=1.0, seed=0, cache=True, pad_id=0):
  """The `max_new_tokens` tokens sampled after each prompt (a list of
  token-id lists), as an int32 array (B, max_new_tokens). See `sample`
  for the options; draws are a function of (seed, step)."""
  check_options(temperature, top_k, top_p, max_new_tokens)
  params = unstack_layers(params, model.num_layers)
  tokens, valid, positions = left_pad(prompts, pad_id)
  b, width = tokens.shape
  total = width + max_new_tokens
  _check_length(model, int(positions[:, -1].max()) + max_new_tokens)
  key = jax.random.PRNGKey(seed)
  pick = lambda logits, step: sample(logits, jax.random.fold_in(key, step),
                                     temperature, top_k, top_p)
  if cache:
    return _generate_cached(decoder(model, total), params, tokens, valid,
                            positions, max_new_tokens, pick)
  return _generate_uncached(decoder(model), params, tokens, valid, positions,
                            max_new_tokens, pick, total)


def _generate_cached(model, params, tokens, valid, positions, steps, pick):
  @jax.jit
  def prefill(tokens, valid, positions):
    logits, state = model.apply({'params': params}, tokens,
                                positions=positions, valid=valid,
                                mutable=['cache'])
    return pick(logits[:, -1], 0), state['cache']

  @jax.jit
  def step(cache, token, position, i):
    logits, state = model.apply({'params': params, 'cache': cache},
                                token[:, None], positions=position[:, None],
                                mutable=['cache'])
    return pick(logits[:, -1], i), state['cache']

  token, cache = prefill(tokens, valid, positions)
  out = [token]
  position = jnp.asarray(positions[:, -1])
  for i in range(1, steps):
    position = position + 1
    token, cache = step(cache, token, position, i)
    out.append(token)
  return np.asarray(jnp.stack(out, 1))


def _generate_uncached(model, params, tokens, valid, positions, steps, pick,
                       total):
  b, width = tokens.shape
  buf = np.zeros((b, total), np.int32)
  buf[:, :width] = tokens
  ok = np.zeros((b, total), bool)
  ok[:, :width] = valid
  pos = np.zeros((b, total), np.int32)
  pos[:, :width] = positions
  pos[:, width:] = positions[:, -1:] + 1 + np.arange(total - width)

  @jax.jit
  def step(buf, ok, last, i):
    logits = model.apply({'params': params}, buf, positions=pos, valid=ok)
    return pick(jnp.take_along_axis(logits, last[:, None, None], 1)[:, 0], i)

  buf, ok = jnp.asarray(buf), jnp.asarray(ok)
  out = []
  for i in range(steps):
    last = jnp.full((b,), width - 1 + i, jnp.int32)
    token = step(buf, ok, last, i)
    out.append(token)
    buf = buf.at[:, width + i].set(token)
    ok = ok.at[:, width + i].set(True)
  return np.asarray(jnp.stack(out, 1))


def score(model, params, tokens, window=0):
  """Per-token negative log-likelihood of `tokens` (a 1-D id sequence):
  each token after the first given the ones before it, in windows of
  `window` tokens (default the model's max_len for learned positions,
  else 1024) that overlap by half, every token scored once with the
  longest context its window gives. Returns float32 (len(tokens) - 1,)."""
  tokens = np.asarray(tokens, np.int32)
  if tokens.ndim != 1 or len(tokens) < 2:
    raise ConfigError('scoring needs a text of at least two tokens')
  params = unstack_layers(params, model.num_layers)
  model = decoder(model)
  window = window or (model.max_len if model.positions == 'learned'
                      else 1024)
  window = min(window, len(tokens))
  stride = max(1, window // 2)

  @jax.jit
  def nll(chunk):
    logits = model.apply({'params': params}, chunk[None, :-1])[0]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return -jnp.take_along_axis(logp, chunk[1:, None], -1)[:, 0]

  out = np.zeros(len(tokens) - 1, np.float32)
  done = 0                          # tokens 1..done are scored
  start = 0
  while done < len(tokens) - 1:
    start = min(start, len(tokens) - window)
    values = np.asarray(nll(jnp.asarray(tokens[start:start + window])))
    # values[j] scores token start + j + 1
    first = done - start            # the first not yet scored, in values
    out[done:start + window - 1] = values[first:]
    done = start + window - 1
    start += stride
  return out


def perplexity(nll):
  return float(math.exp(float(np.mean(nll))))
