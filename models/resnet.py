"""CIFAR ResNets (He et al. 2016, section 4.2): depth 6n+2, three stages.

ResNet-8/20/32/56/110 are `depth=8/20/32/56/110`; `width` multiplies the
stage widths (16, 32, 64). Shortcuts that change shape use a 1x1 conv + BN
(option B). The residual sum is the swappable `models.residual` piece
(`residual`, `residual_kw`): it acts on the (projected) shortcut, and the
history of earlier block inputs that LAuReL-PA reads restarts at each stage.
`remat` rematerialises each block (`models/layers.py: REMAT_POLICIES`);
activations are constrained by logical names at the stem, every block's
output and the logits.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from core.errors import ConfigError
from models import layers
from models import residual as residual_lib

IMAGE = layers.IMAGE
LOGITS = ('activation_batch', 'activation_classes')


def _shortcut(x, features, strides, dtype, train, kernels):
  """Identity, or 1x1 conv + BN ('proj', 'proj_bn') when the shape changes.
  Called inside a block's compact __call__, so the layers are the block's."""
  if x.shape[-1] == features and strides == 1:
    return x
  x = layers.conv(features, (1, 1), strides, dtype, name='proj',
                  kernels=kernels)(x)
  return layers.batch_norm(train, dtype, name='proj_bn', kernels=kernels)(x)


def _combine(block, shortcut, norm, y, prev):
  """relu(residual(shortcut, norm(y))) and the history after this block. The
  standard residual's add and the ReLU are the batch norm's (one library
  call in a CPU training step: layers.BatchNorm)."""
  prev = residual_lib.fit_history(prev, shortcut)
  residual = residual_lib.residual_module(
      block.residual, block.residual_kw, dtype=block.dtype, name='residual')
  if isinstance(residual, residual_lib.StandardResidual):
    out = norm(y, residual=shortcut, relu=True)
  else:
    out = nn.relu(residual(shortcut, norm(y), prev))
  return (layers.constrain(out, IMAGE),
          residual_lib.push_history(prev, shortcut))


def _pads(kernel, torch_padding):
  return layers.torch_pads(kernel) if torch_padding else 'SAME'


def _stem(x, width, kernel, strides, dtype, train, kernels,
          torch_padding=False):
  x = layers.conv(width, kernel, strides, dtype, name='stem',
                  kernels=kernels, padding=_pads(kernel, torch_padding))(
                      x.astype(dtype))
  x = layers.batch_norm(train, dtype, name='stem_bn',
                        kernels=kernels)(x, relu=True)
  return layers.constrain(x, IMAGE)


def _head(module, x):
  """Global average pool, the sown features, the constrained logits."""
  x = jnp.mean(x, axis=(1, 2))
  module.sow('intermediates', 'pre_logits', x)
  logits = layers.Dense(module.num_classes, names=('embed', 'classes'),
                        dtype=module.dtype, name='head')(x)
  return layers.constrain(logits.astype(jnp.float32), LOGITS)


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  residual: str = 'standard'
  residual_kw: tuple = ()
  dtype: jnp.dtype = jnp.float32
  kernels: Any = layers.XlaKernels    # the model's (layers.kernels_for)
  torch_padding: bool = False         # 3x3 pads (1, 1) also when strided

  @nn.compact
  def __call__(self, x, prev=(), train=False):
    y = layers.conv(self.features, (3, 3), self.strides, self.dtype,
                    name='conv1', kernels=self.kernels,
                    padding=_pads((3, 3), self.torch_padding))(x)
    y = layers.batch_norm(train, self.dtype, name='bn1',
                          kernels=self.kernels)(y, relu=True)
    y = layers.conv(self.features, (3, 3), 1, self.dtype, name='conv2',
                    kernels=self.kernels)(y)
    shortcut = _shortcut(x, self.features, self.strides, self.dtype, train,
                         self.kernels)
    return _combine(self, shortcut, layers.batch_norm(
        train, self.dtype, name='bn2', kernels=self.kernels), y, prev)


class CifarResNet(nn.Module):
  """`extra_blocks` adds identity blocks to each stage beyond the depth's
  (depth - 2) / 6, e.g. (1, 0, 0): the "baseline + 1 layer" naive scaling
  that LAuReL is compared with."""
  num_classes: int
  depth: int = 20
  width: float = 1.0
  extra_blocks: tuple = (0, 0, 0)
  residual: str = 'standard'
  residual_kw: tuple = ()
  remat: str = 'none'
  conv: str = 'auto'           # layers.CONV_IMPLEMENTATIONS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ConfigError(f'model.depth={self.depth} is not a CIFAR ResNet '
                        'depth 6n+2; valid choices: 8, 20, 32, 44, 56, 110')
    if len(self.extra_blocks) != 3 or min(self.extra_blocks) < 0:
      raise ConfigError(f'model.extra_blocks={self.extra_blocks} must be '
                        'three non-negative block counts, one per stage')
    blocks = (self.depth - 2) // 6
    widths = [max(1, int(round(w * self.width))) for w in (16, 32, 64)]
    kernels = layers.kernels_for(self.conv)
    x = _stem(x, widths[0], (3, 3), 1, self.dtype, train, kernels)
    prev = residual_lib.init_history(
        residual_lib.history_length(self.residual, self.residual_kw), x)
    block = layers.remat(BasicBlock, self.remat, static_argnums=(3,))
    for stage, w in enumerate(widths):
      for b in range(blocks + self.extra_blocks[stage]):
        x, prev = block(w, 2 if stage and not b else 1, self.residual,
                        self.residual_kw, self.dtype, kernels,
                        name=f'stage{stage}_block{b}')(x, prev, train)
    return _head(self, x)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> 1x1 (x4) block of ResNet-50/101/152."""
  features: int
  strides: int = 1
  residual: str = 'standard'
  residual_kw: tuple = ()
  dtype: jnp.dtype = jnp.float32
  kernels: Any = layers.XlaKernels    # the model's (layers.kernels_for)
  torch_padding: bool = False         # 3x3 pads (1, 1) also when strided

  @nn.compact
  def __call__(self, x, prev=(), train=False):
    y = layers.conv(self.features, (1, 1), 1, self.dtype, name='conv1',
                    kernels=self.kernels)(x)
    y = layers.batch_norm(train, self.dtype, name='bn1',
                          kernels=self.kernels)(y, relu=True)
    y = layers.conv(self.features, (3, 3), self.strides, self.dtype,
                    name='conv2', kernels=self.kernels,
                    padding=_pads((3, 3), self.torch_padding))(y)
    y = layers.batch_norm(train, self.dtype, name='bn2',
                          kernels=self.kernels)(y, relu=True)
    y = layers.conv(4 * self.features, (1, 1), 1, self.dtype, name='conv3',
                    kernels=self.kernels)(y)
    shortcut = _shortcut(x, 4 * self.features, self.strides, self.dtype,
                         train, self.kernels)
    return _combine(self, shortcut, layers.batch_norm(
        train, self.dtype, name='bn3', kernels=self.kernels), y, prev)


IMAGENET_DEPTHS = {18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
                   50: ('bottleneck', (3, 4, 6, 3)),
                   101: ('bottleneck', (3, 4, 23, 3)),
                   152: ('bottleneck', (3, 8, 36, 3))}


class ImageNetResNet(nn.Module):
  """ResNet-18/34/50/101/152 (He et al. 2016, table 1): 7x7/2 stem and
  3x3/2 max-pool, four stages of widths (64, 128, 256, 512) x `width`.

  Padded like torchvision's (stem (3, 3), strided 3x3 convolutions and the
  max pool (1, 1)), the stride of a bottleneck in its 3x3 (ResNet v1.5), so
  torchvision, timm and Hugging Face weights load with the same outputs
  (models/resnet_weights.py)."""
  num_classes: int
  depth: int = 50
  width: float = 1.0
  residual: str = 'standard'
  residual_kw: tuple = ()
  remat: str = 'none'
  conv: str = 'auto'           # layers.CONV_IMPLEMENTATIONS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    if self.depth not in IMAGENET_DEPTHS:
      raise ConfigError(f'model.depth={self.depth} is not an ImageNet ResNet '
                        'depth; valid choices: 18, 34, 50, 101, 152')
    kind, blocks = IMAGENET_DEPTHS[self.depth]
    block = layers.remat(BasicBlock if kind == 'basic' else Bottleneck,
                         self.remat, static_argnums=(3,))
    widths = [max(1, int(round(w * self.width))) for w in (64, 128, 256, 512)]
    kernels = layers.kernels_for(self.conv)
    x = _stem(x, widths[0], (7, 7), 2, self.dtype, train, kernels,
              torch_padding=True)
    x = nn.max_pool(x, (3, 3), strides=(2, 2),
                    padding=layers.torch_pads((3, 3)))
    prev = residual_lib.init_history(
        residual_lib.history_length(self.residual, self.residual_kw), x)
    for stage, (w, n) in enumerate(zip(widths, blocks)):
      for b in range(n):
        x, prev = block(w, 2 if stage and not b else 1, self.residual,
                        self.residual_kw, self.dtype, kernels,
                        torch_padding=True,
                        name=f'stage{stage}_block{b}')(x, prev, train)
    return _head(self, x)
