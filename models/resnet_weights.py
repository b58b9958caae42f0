"""Pretrained ResNet weights (torchvision, timm, Hugging Face) as the
variables of `models/resnet_imagenet` (resnet.ImageNetResNet).

    variables = resnet_weights.load('resnet50.safetensors', like=variables)

Layouts (told apart by their keys; a `module.` prefix is dropped):
  torchvision / timm: conv1.weight, bn1.*, layer1.0.conv1.weight, ...,
    layer1.0.downsample.0/1.*, fc.weight / fc.bias;
  Hugging Face (ResNetForImageClassification, save_pretrained):
    resnet.embedder.embedder.convolution.weight, ...,
    resnet.encoder.stages.0.layers.0.layer.0.convolution.weight,
    ...shortcut.convolution/normalization.*, classifier.1.weight / bias.
Files: .safetensors (read with `safetensors`, no torch), or a torch pickle
(.pth, .pt, .bin) when torch is installed (imported here only then); a
Hugging Face folder (save_pretrained) names its model.safetensors.

The model's own variables (`like`: shapes, or arrays) say which keys are
read: every one must be in the file with the transposed shape (a missing or
misshapen key is one line naming it), and every weight of the file must be
used (a deeper ResNet's leftover keys are one line). The head (`fc`,
`classifier.1`) is taken when its class count fits, else the model's own
(new, untrained) head is kept: `head='auto'`; 'new' always keeps it,
'pretrained' requires the file's. Batch-norm running statistics become
`batch_stats`; torch's eps (1e-5) is the model's.

Weights must be of the v1.5 ResNet (the stride of a bottleneck in its 3x3
convolution): torchvision's, timm's `resnet*` and Hugging Face's
`microsoft/resnet-*` with downsample_in_bottleneck=False are.

The inverse, `to_state_dict(variables)`, writes the same keys and shapes
(conv OIHW, fc (out, in), BN running statistics and num_batches_tracked):
`python -m launch.export --format=reference` (distill/export.py).

Tested by tests/test_resnet_weights.py:
    python -m pytest -q tests/test_resnet_weights.py
"""
import os
import re

import numpy as np

from core.errors import ConfigError, check_choice

HEADS = ('auto', 'new', 'pretrained')
TORCH_SUFFIXES = ('.pth', '.pt', '.bin')


HF_FILES = ('model.safetensors', 'pytorch_model.bin')


def weights_file(path):
  """`path`, or the checkpoint file of a Hugging Face folder (HF_FILES)."""
  if os.path.isdir(path):
    for name in HF_FILES:
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    raise ConfigError(f'pretrained weights {path}: a folder without '
                      f'{" or ".join(HF_FILES)}')
  return path


def read_state_dict(path):
  """{key: numpy array} of a checkpoint file (.safetensors, or a torch
  pickle when torch is installed), or of a Hugging Face folder's."""
  path = weights_file(path)
  if not os.path.isfile(path):
    raise ConfigError(f'pretrained weights {path}: no such file')
  if path.endswith('.safetensors'):
    from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
    try:
      return dict(st.load_file(path))
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f'pretrained weights {path}: not a readable '
                        f'safetensors file ({type(e).__name__})') from e
  if not path.endswith(TORCH_SUFFIXES):
    raise ConfigError(f'pretrained weights {path}: unknown file type; valid '
                      'choices: .safetensors, ' + ', '.join(TORCH_SUFFIXES)
                      + ' (with torch installed)')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ConfigError(f'pretrained weights {path}: a torch pickle needs torch '
                      '(pip install torch), or convert it to .safetensors') from e
  obj = torch.load(path, map_location='cpu', weights_only=True)
  for key in ('state_dict', 'model', 'model_state_dict'):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  if not isinstance(obj, dict):
    raise ConfigError(f'pretrained weights {path}: holds a '
                      f'{type(obj).__name__}, not a state dict')
  return {k: v.detach().float().numpy() for k, v in obj.items()
          if hasattr(v, 'detach')}


def layout(state):
  """'torchvision' (timm's too) or 'hf', from the keys; else one line."""
  if 'conv1.weight' in state and 'bn1.weight' in state:
    return 'torchvision'
  if 'resnet.embedder.embedder.convolution.weight' in state:
    return 'hf'
  some = ', '.join(sorted(state)[:3]) or 'no keys'
  raise ConfigError(f'unknown ResNet checkpoint layout (keys {some}, ...); '
                    'valid choices: torchvision/timm (conv1.weight, bn1.*, '
                    'layer1.0.*, fc.*), Hugging Face (resnet.embedder.*, '
                    'resnet.encoder.stages.*, classifier.1.*)')


_BN = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
       'var': 'running_var'}


def _key(path, kind):
  """The checkpoint key of our variable `path` ('stem/kernel',
  'stage0_block1/bn2/mean', 'head/dense/bias') in layout `kind`."""
  parts = path.split('/')
  leaf = parts[-1]
  if parts[0] == 'head':
    base = 'fc' if kind == 'torchvision' else 'classifier.1'
    return f'{base}.{"weight" if leaf == "kernel" else "bias"}'
  layer = parts[-2]
  suffix = 'weight' if leaf == 'kernel' else _BN[leaf]
  if parts[0] in ('stem', 'stem_bn'):
    if kind == 'torchvision':
      return f'{"conv1" if parts[0] == "stem" else "bn1"}.{suffix}'
    sub = 'convolution' if parts[0] == 'stem' else 'normalization'
    return f'resnet.embedder.embedder.{sub}.{suffix}'
  stage, block = re.fullmatch(r'stage(\d+)_block(\d+)', parts[0]).groups()
  if kind == 'torchvision':
    prefix = f'layer{int(stage) + 1}.{block}'
    name = {'proj': 'downsample.0', 'proj_bn': 'downsample.1'}.get(layer,
                                                                   layer)
    return f'{prefix}.{name}.{suffix}'
  prefix = f'resnet.encoder.stages.{stage}.layers.{block}'
  if layer in ('proj', 'proj_bn'):
    sub = 'convolution' if layer == 'proj' else 'normalization'
    return f'{prefix}.shortcut.{sub}.{suffix}'
  i = int(layer[-1]) - 1
  sub = 'convolution' if layer.startswith('conv') else 'normalization'
  return f'{prefix}.layer.{i}.{sub}.{suffix}'


def _ours(value, leaf):
  """A checkpoint array in our layout: OIHW -> HWIO, (out, in) -> (in, out)."""
  value = np.asarray(value, np.float32)
  if leaf == 'kernel' and value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if leaf == 'kernel' and value.ndim == 2:
    return value.T
  return value


def _theirs(value, leaf):
  """The inverse of `_ours`: HWIO -> OIHW, (in, out) -> (out, in)."""
  value = np.asarray(value, np.float32)
  if leaf == 'kernel' and value.ndim == 4:
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
  if leaf == 'kernel' and value.ndim == 2:
    return np.ascontiguousarray(value.T)
  return value


def to_state_dict(variables, kind='torchvision'):
  """{key: numpy array}: the state dict of the reference ResNet (`kind`:
  'torchvision', timm's too, or 'hf') holding `variables` (params and
  batch_stats of models/resnet_imagenet, unboxed) -- `convert`'s inverse,
  through the same key mapping (`_key`)."""
  check_choice('kind', kind, ('torchvision', 'hf'))
  out = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in _flat(dict(variables[collection])).items():
      out[_key(path, kind)] = _theirs(leaf, path.split('/')[-1])
      if path.endswith('/mean'):      # torch BatchNorm2d's counter
        out[_key(path, kind)[:-len('running_mean')] + 'num_batches_tracked'
            ] = np.zeros((), np.int64)
  return out


def _flat(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    path = f'{prefix}{k}'
    if isinstance(v, dict) or hasattr(v, 'items'):
      out.update(_flat(v, path + '/'))
    else:
      out[path] = v
  return out


def _nest(flat):
  out = {}
  for path, v in flat.items():
    node = out
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


def convert(state, like, head='auto', name='the checkpoint'):
  """`like` ({'params': ..., 'batch_stats': ...}: the model's variables or
  their shapes, unboxed) with every array read from `state` (a state dict);
  the head as `head` (HEADS) says. Returns (variables, whether the head was
  read)."""
  check_choice('init.head', head, HEADS)
  state = {k[len('module.'):] if k.startswith('module.') else k: v
           for k, v in state.items()}
  kind = layout(state)
  ours = {c: _flat(dict(like[c])) for c in ('params', 'batch_stats')}
  misfits = [p for p in sorted(ours['params'], reverse=True)   # kernel first
             if p.startswith('head/') and (
                 _key(p, kind) not in state or
                 _ours(state[_key(p, kind)], p.split('/')[-1]).shape !=
                 tuple(ours['params'][p].shape))]
  head_fits = not misfits
  if head == 'pretrained' and not head_fits:
    p = misfits[0]
    got = (np.shape(state[_key(p, kind)]) if _key(p, kind) in state
           else 'absent')
    raise ConfigError(f'{name}: {_key(p, kind)} is {got}; the model needs '
                      f'{tuple(ours["params"][p].shape)} (transposed); set '
                      'init.head=new for a new head')
  take_head = head_fits and head != 'new'
  used, out = set(), {}
  for collection, flat in ours.items():
    read = {}
    for path, leaf in flat.items():
      if path.startswith('head/') and not take_head:
        read[path] = leaf
        used.add(_key(path, kind))
        continue
      key = _key(path, kind)
      if key not in state:
        raise ConfigError(f'{name}: missing key {key} (for {collection}/'
                          f'{path}); is it a ResNet of this depth and width?')
      value = _ours(state[key], path.split('/')[-1])
      if value.shape != tuple(leaf.shape):
        raise ConfigError(f'{name}: {key} is {tuple(value.shape)} after '
                          f'transposing; the model needs {tuple(leaf.shape)}'
                          ' (another model.width or depth?)')
      read[path] = value
      used.add(key)
    out[collection] = _nest(read)
  extra = sorted(k for k in state if k not in used
                 and not k.endswith('num_batches_tracked'))
  if extra:
    raise ConfigError(f'{name}: key {extra[0]} is not used by this model '
                      f'({len(extra)} unused); a deeper ResNet?')
  return out, take_head


def load(path, like, head='auto'):
  """`convert` of the file (or Hugging Face folder) at `path`."""
  return convert(read_state_dict(path), like, head, name=weights_file(path))
