"""A multi-layer perceptron classifier on flattened inputs."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import layers


class MLP(nn.Module):
  """Flatten, `len(hidden)` ReLU layers, a linear classifier."""
  num_classes: int
  hidden: Sequence[int] = (256, 256)
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    for i, width in enumerate(self.hidden):
      x = layers.Dense(width, names=('embed', 'mlp'), dtype=self.dtype,
                       name=f'hidden{i}')(x)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return layers.Dense(self.num_classes, names=('mlp', 'classes'),
                        dtype=self.dtype, name='head')(x).astype(jnp.float32)
