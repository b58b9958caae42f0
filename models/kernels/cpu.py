"""The CPU kernel library as a conv model's kernel provider (model.conv auto
on the CPU backend, or onednn; models/layers.py: kernels_for): oneDNN's
convolutions, the fused batch norm (+ residual add + ReLU) and the max pool
of onednn.py where they apply, XLA's (layers.XlaKernels) elsewhere.

Only this provider imports the library (models/kernels/onednn.py); a model
on an accelerator, or with model.conv=xla, never loads it
(tests/test_layering.py).
"""
from core.errors import ConfigError
from models import layers
from models.kernels import onednn


def check_available():
  """model.conv=onednn: one line when the library cannot be built here."""
  if not onednn.available():
    raise ConfigError('model.conv=onednn but the oneDNN kernel is not '
                      f'available: {onednn.unavailable_reason()}; valid '
                      'choices here: auto, xla')


class CpuKernels(layers.XlaKernels):
  """layers.XlaKernels with the library's kernels where they apply (each
  falls back to XLA's per call: onednn.applies, max_pool_applies,
  batch_norm_applies)."""
  name = 'onednn'

  @staticmethod
  def conv_general_dilated(lhs, *args, **kwargs):
    """oneDNN's convolution, told how the input's batch is sharded (the
    image's logical names under the rules in force), so each device
    computes the gradient of its own slice."""
    spec = layers.partition_spec(lhs.shape, layers.IMAGE)
    return onednn.conv_general_dilated(lhs, *args, input_spec=spec, **kwargs)

  @staticmethod
  def max_pool(x, window):
    if onednn.max_pool_applies(x, window):
      return onednn.max_pool(x, window)
    return layers.XlaKernels.max_pool(x, window)

  batch_norm_applies = staticmethod(onednn.batch_norm_applies)
  batch_norm_train = staticmethod(onednn.batch_norm_train)
