"""A small convolutional classifier (conv-BN-ReLU stages with max pooling).

Works on images (NHWC) and on 1-D signals (NLC): the kernel rank follows the
input rank.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from models import layers


class SmallCNN(nn.Module):
  """`len(widths)` stages of conv3-BN-ReLU + 2x max-pool, global pool, dense."""
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  dense: int = 0            # width of an extra hidden dense layer (0: none)
  dropout: float = 0.0
  conv: str = 'auto'        # layers.CONV_IMPLEMENTATIONS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    x = x.astype(self.dtype)
    spatial = x.ndim - 2
    kernels = layers.kernels_for(self.conv)
    for i, w in enumerate(self.widths):
      x = layers.conv(w, (3,) * spatial, dtype=self.dtype, name=f'conv{i}',
                      kernels=kernels)(x)
      x = layers.batch_norm(train, self.dtype, name=f'bn{i}',
                            kernels=kernels)(x, relu=True)
      if x.shape[1] >= 2:
        x = layers.max_pool(x, (2,) * spatial, kernels=kernels)
    x = jnp.mean(x, axis=tuple(range(1, 1 + spatial)))
    if self.dense:
      x = nn.relu(layers.Dense(self.dense, names=('embed', 'mlp'),
                               dtype=self.dtype, name='hidden')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    self.sow('intermediates', 'pre_logits', x)
    return layers.Dense(self.num_classes, names=('mlp', 'classes'),
                        dtype=self.dtype, name='head')(x).astype(jnp.float32)
