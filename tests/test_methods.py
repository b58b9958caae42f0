"""Golden values for the registered losses (torchdistill-style)."""
import jax.numpy as jnp
import numpy as np
import pytest

from distill import methods

LOGITS = jnp.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
LABELS = jnp.array([0, 1, 2])


def test_supervised_golden_value():
  batch = {'label': LABELS, 'mask': jnp.array([1.0, 1.0, 0.0])}
  loss, metrics = methods.supervised(LOGITS, None, batch)
  # -log softmax by hand: row0 label0, row1 label1; row2 masked out.
  l0 = -(2.0 - np.log(np.exp(2.0) + np.exp(0.5) + np.exp(-1.0)))
  l1 = -(0.0 - np.log(2 + np.exp(3.0)))
  assert float(loss) == pytest.approx((l0 + l1) / 2, rel=1e-6)
  assert float(loss) == pytest.approx(1.66812, abs=1e-5)   # golden
  s, c = metrics['accuracy']
  assert (float(s), float(c)) == (1.0, 2.0)
  s, c = metrics['loss']
  assert float(s) / float(c) == pytest.approx(float(loss))


def test_supervised_label_smoothing_golden_value():
  batch = {'label': LABELS, 'mask': jnp.ones(3)}
  loss, _ = methods.supervised(LOGITS, None, batch, label_smoothing=0.3)
  logp = np.log(np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True))
  target = np.full((3, 3), 0.1) + 0.7 * np.eye(3)[np.asarray(LABELS)]
  assert float(loss) == pytest.approx(-(target * logp).sum(-1).mean(),
                                      rel=1e-6)


def test_supervised_on_sequences_weights_every_token():
  logits = jnp.stack([LOGITS, LOGITS])             # (2 sequences, 3 steps, 3)
  batch = {'targets': jnp.stack([LABELS, LABELS]),
           'mask': jnp.array([1.0, 0.0])}
  loss, metrics = methods.supervised(logits, None, batch)
  full, _ = methods.supervised(LOGITS, None, {'label': LABELS,
                                              'mask': jnp.ones(3)})
  assert float(loss) == pytest.approx(float(full), rel=1e-6)
  assert float(metrics['accuracy'][1]) == 3.0


def test_registry_lists_valid_choices():
  with pytest.raises(ValueError, match='valid choices: supervised'):
    methods.get('nope')
