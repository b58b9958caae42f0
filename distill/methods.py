"""Training objectives, registered by name: pure losses returning metrics.

A method is `fn(student_out, teacher_targets, batch, **kw) -> (loss, metrics)`:
- `student_out`: the model's float32 logits, (B, C) or (B, T, C) for LMs;
- `teacher_targets`: `batch['teacher']`, whatever the method's teacher stage
  put there (cached teacher logits, weights, ...), `None` for supervised
  training;
- `batch`: the input batch (`label` or `targets`, `mask`, `id`, ...);
- `metrics`: name -> (sum, count) pairs, summed across steps and hosts and
  divided at logging time, so averages are exact.
`kw` comes from `config.method_kw`. The train loop is the same for every
method; `config.method` picks one.
"""
import jax
import jax.numpy as jnp
import optax

from distill.errors import ConfigError, check_choice

METHODS = {}


def register(name):
  def wrap(fn):
    METHODS[name] = fn
    return fn
  return wrap


def get(name):
  check_choice('method', name, METHODS)
  return METHODS[name]


def example_weights(batch, logits):
  """Per-position weights: the batch mask, broadcast over LM time steps."""
  w = batch['mask']
  if logits.ndim == 3:
    w = jnp.broadcast_to(w[:, None], logits.shape[:2])
  return w


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
def supervised(student_out, teacher_targets, batch, label_smoothing=0.0):
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


def check_kwargs(name, fn, kw):
  """Raise a ConfigError for method_kw keys that `fn` does not take."""
  import inspect  # pylint: disable=g-import-not-at-top
  params = inspect.signature(fn).parameters
  valid = [p for p in params if p not in ('student_out', 'teacher_targets',
                                          'batch')]
  unknown = sorted(set(kw) - set(valid))
  if unknown:
    raise ConfigError(f'unknown method_kw {", ".join(unknown)} for method '
                      f'{name!r}; valid choices: {", ".join(valid)}')
