"""Training objectives, registered by name: pure losses returning metrics.

A method's loss is `fn(student_out, teacher_targets, batch, **options) ->
(loss, metrics)`:
- `student_out`: the model's float32 logits, (B, C) or (B, T, C) for LMs;
- `teacher_targets`: `batch['teacher']`, whatever the method's teacher stage
  put there (cached teacher logits, weights, ...), `None` for supervised
  training;
- `batch`: the input batch (`label` or `targets`, `mask`, `id`, ...);
- `metrics`: name -> (sum, count) pairs, summed across steps and hosts and
  divided at logging time, so averages are exact.
The train loop is the same for every method; `config.method` picks one.

A method is one registry entry (`register`, `Method`): its loss; its options
with their defaults (a built-in method's are declared once, in
core/defaults.py's METHOD_OPTIONS, where a config file reads them without
the pipeline; any other method declares them in `register`); its fit,
`fit(fit_options, probs_v, labels_v) -> Fitted`, run on the teacher's
validation outputs before the student trains: the per-example state as a
function of the teacher's probabilities (weighted: w(x); SLaM: alpha(x),
k(x)), applied to the cached outputs of the unlabeled part, or inside the
student's step to the teacher's outputs on the augmented view (online), and
the fit's options; a check of its options; and its capabilities
(`needs_teacher`; `online`: it can run with the teacher inside the
student's step, as every method with a teacher can on a classifier). `config.method_kw` holds every method's
options (loss and fit); `Method.options_of` gives a method its own. The
pipelines, the active loop and the trainer ask the entry (`get(name)`).
"""
import dataclasses
import inspect
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from core import defaults
from core.errors import ConfigError, check_choice
from distill import divergences
from distill import fitting

METHODS = {}            # name -> Method

# How a method meets its teacher (Method.check_teacher): none (plain
# training), cached (the pipelines: the teacher's cached outputs and the
# fitted state ride in batch['teacher']), online (the teacher runs inside
# the student's step).
TEACHER_MODES = ('none', 'cached', 'online')
_LOSS_ARGS = ('student_out', 'teacher_targets', 'batch')


@dataclasses.dataclass(frozen=True)
class Fitted:
  """What a method's fit returns. `state(probs, xp)`: the per-example state
  ({name: (N,) array}) of teacher probabilities `probs` (N, C), in numpy
  (`xp=np`, the cached outputs) or jax.numpy (`xp=jnp`, inside the
  student's step); `stats(state, probs)`: {name: float} logged with it."""
  state: Callable
  stats: Callable = lambda state, probs: {}


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's registry entry (see the module doc)."""
  name: str
  loss: Callable                    # the pure loss, options as keywords
  options: Mapping                  # the loss's options -> default
  needs_teacher: bool = False
  fit: Optional[Callable] = None
  fit_options: Mapping = dataclasses.field(default_factory=dict)
  check: Optional[Callable] = None  # check(options): one-line ConfigErrors
  # check_cached(options, cache_topk): one-line ConfigErrors for options
  # that the cached pipelines cannot serve (the student trains on the
  # unlabeled part, from the teacher's cached, maybe top-k, logits).
  check_cached: Optional[Callable] = None

  @property
  def online(self):
    """Runs with the teacher inside the student's step (a fit's state is
    computed there from the teacher's outputs: `fit_online`)."""
    return self.needs_teacher

  def options_of(self, kw):
    """(loss options, fit options) of this method from `config.method_kw`
    (`kw`, a dict): its own, with its defaults where absent, checked.
    Options of other methods (config.method_kw holds every method's) are
    dropped while at their defaults; one set away from its default, or one
    no method has, is a ConfigError naming the valid choices."""
    own = {**self.options, **self.fit_options}
    shared = method_options()
    unknown = sorted(k for k in kw if k not in own and (
        k not in shared or kw[k] != shared[k]))
    if unknown:
      raise ConfigError(
          f'method_kw.{unknown[0]}={kw[unknown[0]]!r} is not an option of '
          f'method {self.name!r}; its options: {", ".join(own) or "none"}')
    mine = {k: kw.get(k, v) for k, v in own.items()}
    if self.check:
      self.check(mine)
    return ({k: mine[k] for k in self.options},
            {k: mine[k] for k in self.fit_options})

  def loss_fn(self, kw):
    """The loss with this method's options from `config.method_kw`."""
    options, _ = self.options_of(kw)
    return lambda *args: self.loss(*args, **options)

  def fit_state(self, kw, probs_v, labels_v, probs_u):
    """(per-example state, statistics) of the fit on the teacher's
    validation (`probs_v`, `labels_v`) and unlabeled (`probs_u`)
    probabilities; ({}, {}) for a method without a fit."""
    if self.fit is None:
      return {}, {}
    _, options = self.options_of(kw)
    fitted = self.fit(options, probs_v, labels_v)
    state = fitted.state(probs_u, np)
    return state, fitted.stats(state, probs_u)

  def fit_online(self, kw, probs_v, labels_v):
    """(state_of, statistics): the fit on the teacher's validation
    probabilities, as `state_of(teacher_logits) -> {name: (B,) array}` in
    jax.numpy for the student's step (None without a fit), and the
    statistics of the state on validation."""
    if self.fit is None:
      return None, {}
    _, options = self.options_of(kw)
    fitted = self.fit(options, probs_v, labels_v)
    state = fitted.state(probs_v, np)
    return (lambda logits: fitted.state(jax.nn.softmax(logits), jnp),
            fitted.stats(state, probs_v))

  def check_teacher(self, teacher, kw=None, cache_topk=0):
    """That this method runs with `teacher` (TEACHER_MODES), and, with
    its options from `config.method_kw` (`kw`) and the teacher cache's
    `distill.cache_topk`, that the cached pipelines serve them; else one
    line naming the methods (or the option) that do."""
    check_choice('teacher mode', teacher, TEACHER_MODES)
    if teacher == 'cached' and kw is not None and self.check_cached:
      self.check_cached(self.options_of(kw)[0], cache_topk)
    if teacher == 'none' and self.needs_teacher:
      raise ConfigError(
          f'method {self.name!r} learns from a teacher: give the config a '
          'teacher block (see configs/digits_distill.py)')
    if teacher == 'cached' and not self.needs_teacher:
      raise ConfigError(
          f'method {self.name!r} does not learn from a teacher; valid '
          f'choices: {", ".join(names(needs_teacher=True))}')


def register(name, needs_teacher=False, fit=None, options=None,
             fit_options=None, check=None, check_cached=None):
  """Decorator: registers a loss as method `name` (see the module doc).
  `options` / `fit_options`: {option: default} of the loss / fit; a
  built-in method's come from core/defaults.py (METHOD_OPTIONS), declared
  there once. The decorated name stays the loss, with those defaults."""
  declared = defaults.METHOD_OPTIONS.get(name, {})
  options = dict(declared.get('loss', {}) if options is None else options)
  fit_options = dict(declared.get('fit', {}) if fit_options is None
                     else fit_options)

  def wrap(fn):
    if name in METHODS:
      raise ValueError(f'method {name!r} is registered twice')
    params = [p for p in inspect.signature(fn).parameters
              if p not in _LOSS_ARGS]
    if sorted(params) != sorted(options):
      raise ValueError(f'method {name!r}: the loss takes {params}, its '
                       f'declared options are {sorted(options)}')
    if fit_options and fit is None:
      raise ValueError(f'method {name!r} has fit options but no fit')
    METHODS[name] = Method(name, fn, options, needs_teacher, fit,
                           fit_options, check, check_cached)

    def with_defaults(student_out, teacher_targets, batch, **kw):
      return fn(student_out, teacher_targets, batch, **{**options, **kw})
    with_defaults.__name__ = fn.__name__
    with_defaults.__doc__ = fn.__doc__
    return with_defaults
  return wrap


def get(name):
  """The registry entry of method `name` (one line naming the valid
  choices if there is none)."""
  check_choice('method', name, METHODS)
  return METHODS[name]


def names(needs_teacher=None, online=None):
  """Sorted names of the methods with these capabilities."""
  return sorted(n for n, m in METHODS.items()
                if needs_teacher in (None, m.needs_teacher)
                and online in (None, m.online))


def method_options():
  """{option: default} of every registered method's options, loss and fit
  (equal defaults where methods share an option)."""
  out = defaults.method_options()
  for m in METHODS.values():
    for key, value in {**m.options, **m.fit_options}.items():
      out.setdefault(key, value)
  return out


def fit_weighted(options, probs_v, labels_v):
  """Weighted distillation's w(x): the teacher's estimated correctness
  (method_kw.weight_mode: isotonic | debiased)."""
  weight = fitting.correctness_map(probs_v, labels_v, options['weight_mode'])
  return Fitted(
      lambda probs, xp: {'weight': weight(probs, xp)},
      lambda state, probs: {f'weight_{k}': v for k, v in
                            fitting.weight_stats(state['weight']).items()})


def fit_slam(options, probs_v, labels_v):
  """SLaM's alpha(x) (the teacher's correctness clipped to
  [method_kw.alpha_floor, 1]) and k(x) (method_kw.k: global, or
  per_example over k_bins margin bins: the top-k reaching accuracy
  1 - k_delta on validation)."""
  alpha = fitting.correctness_map(probs_v, labels_v,
                                  floor=options['alpha_floor'])
  k = fitting.k_map(probs_v, labels_v, options['k_delta'], bins=(
      None if options['k'] == 'global' else options['k_bins']))

  def stats(state, probs):
    out = {f'alpha_{n}': v
           for n, v in fitting.weight_stats(state['alpha']).items()}
    out['k_mean'] = float(np.mean(state['k']))
    out.update(slam_regime_stats(state['alpha'], state['k'], probs))
    return out
  return Fitted(lambda probs, xp: {'alpha': alpha(probs, xp),
                                   'k': k(probs, xp)}, stats)


def slam_regime_stats(alpha, k, probs_u):
  """What decides whether SLaM's target keeps the student in the teacher's
  top-k (tests/test_method_registry.py pins it): the share of examples with
  alpha < 1/2, the teacher's mean probability mass outside its top-k(x), and
  the distribution of k."""
  k = np.asarray(k)
  cum = np.cumsum(-np.sort(-np.asarray(probs_u), -1), -1)
  inside = np.take_along_axis(cum, np.clip(k, 1, cum.shape[-1])[:, None] - 1,
                              -1)[:, 0]
  out = {'alpha_below_half_fraction': float(np.mean(np.asarray(alpha) < 0.5)),
         'teacher_mass_outside_topk_mean': float(np.mean(1.0 - inside))}
  values, counts = np.unique(k, return_counts=True)
  out.update({f'k_fraction_{int(v)}': float(c / len(k))
              for v, c in zip(values, counts)})
  return out


def example_weights(batch, logits):
  """Per-position weights: the batch mask, broadcast over LM time steps
  (times `target_mask` where windows are padded)."""
  return _per_position(batch['mask'], batch, logits.shape[:2]) if (
      logits.ndim == 3) else batch['mask']


def _per_position(weights, batch, shape):
  """Per-example weights (B,) broadcast to an LM's (B, T) positions, padding
  (`target_mask` 0) weighted 0."""
  w = jnp.broadcast_to(weights[:, None], shape)
  return w * batch['target_mask'] if 'target_mask' in batch else w


def labels_of(batch):
  return batch['targets'] if 'targets' in batch else batch['label']


def classification_metrics(logits, labels, weights):
  """Loss-free metrics shared by train and eval: accuracy as (sum, count)."""
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return {'accuracy': (jnp.sum(correct * weights), jnp.sum(weights))}


def weighted_mean(values, weights):
  total = jnp.sum(weights)
  return jnp.sum(values * weights) / jnp.maximum(total, 1e-12), total


@register('supervised')
def supervised(student_out, teacher_targets, batch, *, label_smoothing):
  """Cross-entropy against the ground-truth labels (teacher training)."""
  del teacher_targets
  labels = labels_of(batch)
  num_classes = student_out.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  ce = optax.softmax_cross_entropy(student_out, targets)
  weights = example_weights(batch, student_out)
  loss, count = weighted_mean(ce, weights)
  metrics = {'loss': (loss * count, count)}
  metrics.update(classification_metrics(student_out, labels, weights))
  return loss, metrics


# --- distillation from (cached) teacher outputs ------------------------------
# `teacher_targets` is a dict: 'logits' (B, C) teacher logits, and the fitted
# per-example state a method needs ('weight', 'alpha', 'k'), joined by id.


def _soft_ce(student_logits, target_probs, temperature=1.0):
  logp = jax.nn.log_softmax(student_logits / temperature)
  return -jnp.sum(target_probs * logp, -1)


def teacher_argmax(teacher):
  """The teacher's top class: from its dense 'logits', or the first of a
  sparse top-k cache's 'topk_ids' (distill/lm_cache.py)."""
  if 'topk_ids' in teacher:
    return teacher['topk_ids'][..., 0]
  return jnp.argmax(teacher['logits'], -1)


def _distill_metrics(student_out, teacher, batch):
  """Agreement with the teacher, and true-label accuracy where the batch
  carries labels (never used for training on the unlabeled part)."""
  agree = (jnp.argmax(student_out, -1) == teacher_argmax(teacher))
  w = example_weights(batch, student_out)
  metrics = {'teacher_agreement': (jnp.sum(agree * w), jnp.sum(w))}
  if 'targets' in batch:              # a language model's next tokens
    metrics.update(classification_metrics(student_out, batch['targets'], w))
  if 'label' in batch:  # -1: an out-of-distribution example, no true label
    metrics.update(classification_metrics(
        student_out, batch['label'],
        batch['mask'] * (batch['label'] >= 0).astype(jnp.float32)))
  return metrics


def finish(per_example, weights, student_out, teacher, batch):
  """How a distillation loss ends: the weighted mean of its per-example (or
  per-token) loss, with the loss and the teacher-agreement metrics the loop
  logs, as (loss, metrics)."""
  if per_example.ndim == 2 and weights.ndim == 1:     # (batch, tokens)
    weights = _per_position(weights, batch, per_example.shape)
  loss, total = weighted_mean(per_example, weights)
  metrics = {'loss': (loss * total, total)}
  metrics.update(_distill_metrics(student_out, teacher, batch))
  return loss, metrics


@register('vanilla', needs_teacher=True)
def vanilla(student_out, teacher_targets, batch, *, temperature):
  """Soft distillation: CE(softmax(t/T), softmax(s/T)) * T^2 (Hinton); on
  a sparse top-k cache, the teacher renormalised on its k tokens."""
  if 'topk_ids' in teacher_targets:
    t = jax.nn.softmax(teacher_targets['topk_logp'].astype(jnp.float32)
                       / temperature)
    logq = jnp.take_along_axis(jax.nn.log_softmax(student_out / temperature),
                               teacher_targets['topk_ids'], -1)
    ce = -jnp.sum(t * logq, -1) * temperature ** 2
    return finish(ce, batch['mask'], student_out, teacher_targets, batch)
  t = jax.nn.softmax(teacher_targets['logits'] / temperature)
  ce = _soft_ce(student_out, t, temperature) * temperature ** 2
  return finish(ce, batch['mask'], student_out, teacher_targets, batch)


@register('hard', needs_teacher=True)
def hard(student_out, teacher_targets, batch):
  """Hard distillation: CE against the teacher's argmax."""
  y = jnp.argmax(teacher_targets['logits'], -1)
  ce = optax.softmax_cross_entropy_with_integer_labels(student_out, y)
  return finish(ce, batch['mask'], student_out, teacher_targets, batch)


def _check_weighted(options):
  check_choice('method_kw.weight_mode', options['weight_mode'],
               fitting.WEIGHT_MODES)


@register('weighted', needs_teacher=True, fit=fit_weighted,
          check=_check_weighted)
def weighted(student_out, teacher_targets, batch, *, soft, temperature):
  """Weighted distillation (Iliopoulos et al. 2022): each example's loss is
  scaled by w(x), the fitted probability that the teacher is right, and the
  batch loss normalised by the sum of weights."""
  logits = teacher_targets['logits']
  if soft:
    target = jax.nn.softmax(logits / temperature)
    ce = _soft_ce(student_out, target, temperature) * temperature ** 2
  else:
    ce = optax.softmax_cross_entropy_with_integer_labels(
        student_out, jnp.argmax(logits, -1))
  w = teacher_targets['weight'] * batch['mask']
  return finish(ce, w, student_out, teacher_targets, batch)


def topk_mask(probs, k):
  """1 for the k(x) largest entries of each row (the teacher's ranking)."""
  ranks = jnp.argsort(jnp.argsort(-probs, -1), -1)
  return (ranks < jnp.reshape(k, (-1, 1))).astype(probs.dtype)


SLAM_TARGETS = ('soft', 'topk', 'hard')
K_MODES = ('global', 'per_example')     # slam's method_kw.k


def _check_slam(options):
  check_choice('method_kw.target', options['target'], SLAM_TARGETS)
  check_choice('method_kw.k', options['k'], K_MODES)


@register('slam', needs_teacher=True, fit=fit_slam, check=_check_slam)
def slam(student_out, teacher_targets, batch, *, eps, normalize, target):
  """SLaM (Kontonis et al. 2023), the unnormalised mixing of Remark B.1 that
  the paper's experiments use: mix = a f + (1 - a)(1 - f) * top(y_s; k),
  loss CE(y_s, mix). `normalize=True` divides the second term by k - 1 (the
  paper's theoretical form).

  A variant for the regime study (docs/methods/slam.md), not in the paper:
  `target='topk'` renormalises the teacher's distribution over its own
  top-k(x) before the cross-entropy, so no teacher mass pulls the student
  outside the top-k ('soft', the default, is the paper's y_s);
  `target='hard'` takes the teacher's argmax as a one-hot label, the form
  of the paper's theory (a noisy label drawn from the mixing model;
  experiments/theory.py). alpha and k are fitted on the soft outputs
  either way. The study's
  other variant, an alpha floor, is the fit's `method_kw.alpha_floor` (alpha
  clipped to [floor, 1]; at 1/2 and above, the loss's optimum stays in a
  peaked teacher's top-k: tests/test_method_registry.py)."""
  check_choice('method_kw.target', target, SLAM_TARGETS)
  ys = jax.nn.softmax(teacher_targets['logits'])
  f = jax.nn.softmax(student_out)
  a = teacher_targets['alpha'][:, None]
  k = teacher_targets['k']
  top = topk_mask(ys, k)
  if target == 'topk':
    ys = ys * top / jnp.sum(ys * top, -1, keepdims=True)
  elif target == 'hard':
    ys = jax.nn.one_hot(jnp.argmax(ys, -1), ys.shape[-1], dtype=ys.dtype)
  mask = top
  if normalize:
    mask = mask / jnp.maximum(jnp.reshape(k, (-1, 1)) - 1, 1)
  mix = a * f + (1.0 - a) * (1.0 - f) * mask
  ce = -jnp.sum(ys * jnp.log(jnp.clip(mix, eps, None)), -1)
  return finish(ce, batch['mask'], student_out, teacher_targets, batch)


@register('taylor_ce', needs_teacher=True)
def taylor_ce(student_out, teacher_targets, batch, *, order):
  """Taylor cross-entropy (Feng et al. 2020) on the teacher's hard label:
  sum_{j=1..order} (1 - p_y)^j / j."""
  y = jnp.argmax(teacher_targets['logits'], -1)
  p = jnp.take_along_axis(jax.nn.softmax(student_out), y[:, None], -1)[:, 0]
  loss = sum((1.0 - p) ** j / j for j in range(1, order + 1))
  return finish(loss, batch['mask'], student_out, teacher_targets, batch)


@register('pseudo_label', needs_teacher=True)
def pseudo_label(student_out, teacher_targets, batch, *, threshold):
  """Confidence-thresholded hard pseudo-labels (UPS without MC dropout):
  only examples whose teacher confidence is >= threshold count."""
  t = jax.nn.softmax(teacher_targets['logits'])
  keep = (jnp.max(t, -1) >= threshold).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      student_out, jnp.argmax(t, -1))
  loss, metrics = finish(ce, keep * batch['mask'], student_out,
                          teacher_targets, batch)
  metrics['kept_fraction'] = (jnp.sum(keep * batch['mask']),
                              jnp.sum(batch['mask']))
  return loss, metrics


# --- the LM distillation objectives: (1 - alpha) CE + alpha T^2 D ------------
# D(P_T, Q_T) between the teacher's and the student's distributions at
# temperature T (distill/divergences.py: forward KL, reverse KL, GKD's
# generalised JSD), on the teacher's full or truncated support (top_k,
# top_p; the dropped mass renormalised away or kept as one "other"
# category); CE the student's cross-entropy on the true labels (an LM's next
# tokens, a classifier's `label`) at temperature 1. Per token, weighted by
# the batch mask times `target_mask` (padding 0) and normalised by the real
# tokens. No fit: they run online (configs/guide_lm.py:method=jsd) and on
# the cached pipelines (alpha = 1 there: the unlabeled part has no labels).


def _check_objective(options):
  alpha, temperature = options['alpha'], options['temperature']
  top_k, top_p = options['teacher_top_k'], options['teacher_top_p']
  if not 0.0 <= alpha <= 1.0:
    raise ConfigError(f'method_kw.alpha={alpha!r} must be in [0, 1] (the '
                      'weight of the distillation term; 1 - alpha: of the '
                      'cross-entropy on the labels)')
  if not temperature > 0:
    raise ConfigError(f'method_kw.temperature={temperature!r} must be > 0')
  if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
    raise ConfigError(f'method_kw.teacher_top_k={top_k!r} must be an '
                      'integer >= 0 (0: the whole support)')
  if not 0.0 < top_p <= 1.0:
    raise ConfigError(f'method_kw.teacher_top_p={top_p!r} must be in (0, 1] '
                      '(1.0: the whole support)')
  check_choice('method_kw.truncation', options['truncation'],
               divergences.TRUNCATIONS)
  if 'beta' in options and not 0.0 < options['beta'] < 1.0:
    raise ConfigError(
        f'method_kw.beta={options["beta"]!r} must be in (0, 1); its limits '
        'are the methods forward_kl (beta -> 0) and reverse_kl (beta -> 1)')


def _check_objective_cached(options, cache_topk):
  """The cached pipelines train the student on the unlabeled part (no
  labels) from cached logits (the top-k only with distill.cache_topk)."""
  if options['alpha'] != 1.0:
    raise ConfigError(
        f'method_kw.alpha={options["alpha"]!r}: the cross-entropy term needs '
        "labels, and the student's unlabeled part has none here (the cached "
        'pipeline); set method_kw.alpha=1.0, or distill online')
  truncates = options['teacher_top_k'] or options['teacher_top_p'] < 1.0
  if cache_topk and truncates and options['truncation'] == 'other_bucket':
    raise ConfigError(
        "method_kw.truncation='other_bucket' needs the teacher's dropped "
        f'mass, which distill.cache_topk={cache_topk} does not keep; valid '
        'choices with a top-k cache: renormalize')
  if cache_topk and options['teacher_top_k'] > cache_topk:
    raise ConfigError(
        f'method_kw.teacher_top_k={options["teacher_top_k"]} exceeds '
        f'distill.cache_topk={cache_topk}, the teacher logits cached; set '
        f'it to at most {cache_topk}')


def _objective(divergence, student_out, teacher_targets, batch, *, alpha,
               temperature, beta, teacher_top_k, teacher_top_p, truncation):
  """(1 - alpha) CE(labels) + alpha T^2 D(teacher_T, student_T), per token
  (see above), ended by `finish`, with the terms' metrics."""
  if 'topk_ids' in teacher_targets:     # a sparse offline cache
    if teacher_top_p < 1.0 or truncation != 'renormalize':
      raise ConfigError(
          'a sparse top-k teacher cache supports method_kw.teacher_top_p=1.0 '
          "and truncation='renormalize' only (got teacher_top_p="
          f'{teacher_top_p!r}, truncation={truncation!r})')
    d, kept = divergences.sparse_divergence(
        divergence, teacher_targets['topk_ids'], teacher_targets['topk_logp'],
        student_out, temperature, beta, teacher_top_k)
  else:
    d, kept = divergences.divergence(
        divergence, teacher_targets['logits'], student_out, temperature,
        beta, teacher_top_k, teacher_top_p, truncation)
  kd = d * temperature ** 2
  weights = example_weights(batch, student_out)
  terms = {'kd': kd}
  per_token = alpha * kd if alpha else 0.0
  if alpha < 1.0:
    if 'targets' not in batch and 'label' not in batch:
      raise ConfigError(
          f'method_kw.alpha={alpha!r}: the cross-entropy term needs labels '
          "and this batch has none ('label' or 'targets'); set "
          'method_kw.alpha=1.0')
    labels = labels_of(batch)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        student_out, jnp.maximum(labels, 0)) * (labels >= 0)
    terms['ce'] = ce
    per_token = per_token + (1.0 - alpha) * ce
  loss, metrics = finish(per_token, weights, student_out, teacher_targets,
                         batch)
  total = jnp.sum(weights)
  metrics.update({k: (jnp.sum(v * weights), total) for k, v in terms.items()})
  if teacher_top_k or teacher_top_p < 1.0:
    metrics['teacher_kept_mass'] = (jnp.sum(kept * weights), total)
  return loss, metrics


_OBJECTIVE = dict(needs_teacher=True, check=_check_objective,
                  check_cached=_check_objective_cached)


@register('forward_kl', **_OBJECTIVE)
def forward_kl(student_out, teacher_targets, batch, *, alpha, temperature,
               teacher_top_k, teacher_top_p, truncation):
  """(1 - alpha) CE + alpha T^2 KL(P_T || Q_T), P the teacher, Q the
  student; at alpha = 1 and no truncation, `vanilla` minus T^2 H(P_T)."""
  return _objective('forward_kl', student_out, teacher_targets, batch,
                    alpha=alpha, temperature=temperature, beta=0.5,
                    teacher_top_k=teacher_top_k, teacher_top_p=teacher_top_p,
                    truncation=truncation)


@register('reverse_kl', **_OBJECTIVE)
def reverse_kl(student_out, teacher_targets, batch, *, alpha, temperature,
               teacher_top_k, teacher_top_p, truncation):
  """(1 - alpha) CE + alpha T^2 KL(Q_T || P_T) (MiniLLM's direction)."""
  return _objective('reverse_kl', student_out, teacher_targets, batch,
                    alpha=alpha, temperature=temperature, beta=0.5,
                    teacher_top_k=teacher_top_k, teacher_top_p=teacher_top_p,
                    truncation=truncation)


@register('jsd', **_OBJECTIVE)
def jsd(student_out, teacher_targets, batch, *, alpha, temperature, beta,
        teacher_top_k, teacher_top_p, truncation):
  """(1 - alpha) CE + alpha T^2 JSD(beta), GKD's generalised Jensen-Shannon
  divergence beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P +
  (1 - beta) Q (P the teacher, Q the student, at temperature T);
  JSD / beta -> forward KL as beta -> 0, JSD / (1 - beta) -> reverse KL as
  beta -> 1."""
  return _objective('jsd', student_out, teacher_targets, batch, alpha=alpha,
                    temperature=temperature, beta=beta,
                    teacher_top_k=teacher_top_k, teacher_top_p=teacher_top_p,
                    truncation=truncation)
