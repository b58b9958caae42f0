"""Pretrained ResNet weights: Hugging Face and torchvision layouts give the
reference's logits (models/resnet_weights.py).

    python -m pytest -q tests/test_resnet_weights.py
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core.errors import ConfigError
import models
from models import resnet_weights


@pytest.fixture(autouse=True, scope='module')
def _torch_cache_outside_tmpdir(tmp_path_factory):
  """torch makes its inductor cache folder in $TMPDIR (the session's, which
  must end empty): here it is in pytest's own folder."""
  import os  # pylint: disable=g-import-not-at-top
  os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR',
                        str(tmp_path_factory.mktemp('torchinductor')))


def _hf_model(kind, hidden, depths, num_labels, seed=0):
  """A tiny transformers ResNet with random weights and random BN running
  statistics, in eval mode."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  torch.manual_seed(seed)
  config = transformers.ResNetConfig(
      embedding_size=hidden[0] if kind == 'basic' else hidden[0] // 4,
      hidden_sizes=list(hidden), depths=list(depths), layer_type=kind,
      num_labels=num_labels, downsample_in_bottleneck=False)
  model = transformers.ResNetForImageClassification(config).eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  return model


def _torch_logits(model, images):
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return model(pixel_values=x).logits.numpy()


def _ours(depth, width, num_classes):
  model = models.build('resnet_imagenet', num_classes, depth=depth,
                       width=width, conv='xla')
  like = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
  like = jax.tree.map(np.asarray, {k: v for k, v in like.items()
                                   if k in ('params', 'batch_stats')})
  return model, jax.tree.map(lambda a: a, like)


def _unboxed(tree):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.meta.unbox(tree)


def _logits(model, variables, images):
  return np.asarray(model.apply(variables, jnp.asarray(images), train=False))


def _to_torchvision(state):
  """The Hugging Face state dict renamed to torchvision's layout."""
  out = {}
  for k, v in state.items():
    k2 = k.replace('resnet.embedder.embedder.convolution', 'conv1')
    k2 = k2.replace('resnet.embedder.embedder.normalization', 'bn1')
    k2 = k2.replace('classifier.1', 'fc')
    m = __import__('re').match(
        r'resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)', k2)
    if m:
      s, b, rest = m.groups()
      rest = rest.replace('shortcut.convolution', 'downsample.0')
      rest = rest.replace('shortcut.normalization', 'downsample.1')
      for i in range(3):
        rest = rest.replace(f'layer.{i}.convolution', f'conv{i + 1}')
        rest = rest.replace(f'layer.{i}.normalization', f'bn{i + 1}')
      k2 = f'layer{int(s) + 1}.{b}.{rest}'
    out[k2] = v
  return out


@pytest.mark.slow
@pytest.mark.parametrize('depth,kind,hidden,depths', [
    (18, 'basic', (8, 16, 32, 64), (2, 2, 2, 2)),
    (50, 'bottleneck', (16, 32, 64, 128), (3, 4, 6, 3)),
])
def test_hugging_face_and_torchvision_weights_give_the_reference_logits(
    tmp_path, depth, kind, hidden, depths):
  ref = _hf_model(kind, hidden, depths, num_labels=5)
  ref.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  images = np.random.default_rng(0).normal(
      size=(3, 33, 32, 3)).astype(np.float32)   # odd size: padding shows
  want = _torch_logits(ref, images)
  width = hidden[0] / 64 if kind == 'basic' else hidden[0] / 256
  model, like = _ours(depth, width, 5)
  like = _unboxed(like)
  variables, took_head = resnet_weights.load(str(tmp_path / 'hf'), like)
  assert took_head
  np.testing.assert_allclose(_logits(model, variables, images), want,
                             atol=1e-4, rtol=1e-4)
  # the same weights in torchvision's layout (timm's resnets use it too)
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  state = _to_torchvision(st.load_file(
      str(tmp_path / 'hf' / 'model.safetensors')))
  assert 'layer1.0.conv1.weight' in state and 'fc.weight' in state
  st.save_file(state, str(tmp_path / 'tv.safetensors'))
  variables, _ = resnet_weights.load(str(tmp_path / 'tv.safetensors'), like)
  np.testing.assert_allclose(_logits(model, variables, images), want,
                             atol=1e-4, rtol=1e-4)
  # a torch pickle of the same (torch is installed here)
  import torch  # pylint: disable=g-import-not-at-top
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in
                             state.items()}}, tmp_path / 'tv.pth')
  variables, _ = resnet_weights.load(str(tmp_path / 'tv.pth'), like)
  np.testing.assert_allclose(_logits(model, variables, images), want,
                             atol=1e-4, rtol=1e-4)


def _tiny_state(tmp_path):
  ref = _hf_model('basic', (8, 16, 32, 64), (2, 2, 2, 2), num_labels=5)
  ref.save_pretrained(tmp_path / 'hf', safe_serialization=True)
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  return st.load_file(str(tmp_path / 'hf' / 'model.safetensors'))


@pytest.mark.slow
def test_a_new_head_when_the_class_count_differs(tmp_path):
  state = _tiny_state(tmp_path)
  _, like = _ours(18, 0.125, 3)
  like = _unboxed(like)
  variables, took_head = resnet_weights.convert(state, like)
  assert not took_head
  np.testing.assert_array_equal(variables['params']['head']['dense']['kernel'],
                                like['params']['head']['dense']['kernel'])
  np.testing.assert_allclose(
      variables['params']['stem']['kernel'],
      state['resnet.embedder.embedder.convolution.weight'].transpose(
          2, 3, 1, 0))
  with pytest.raises(ConfigError, match='classifier.1.weight is'):
    resnet_weights.convert(state, like, head='pretrained')


@pytest.mark.parametrize('change,match', [
    (lambda s: s.pop('resnet.encoder.stages.1.layers.0.layer.1.convolution.'
                     'weight'),
     'missing key resnet.encoder.stages.1.layers.0.layer.1.convolution.weight'),
    (lambda s: s.update({'resnet.encoder.stages.3.layers.2.layer.0.'
                         'convolution.weight': np.zeros((1,))}),
     'key resnet.encoder.stages.3.layers.2.layer.0.convolution.weight is not '
     'used'),
    (lambda s: [s.pop(k) for k in list(s)] and s.update({'w': np.zeros(1)}),
     'unknown ResNet checkpoint layout'),
])
def test_a_bad_checkpoint_is_one_line_naming_the_key(tmp_path, change, match):
  state = _tiny_state(tmp_path)
  change(state)
  _, like = _ours(18, 0.125, 5)
  with pytest.raises(ConfigError, match=match):
    resnet_weights.convert(state, _unboxed(like))


def test_the_wrong_depth_is_one_line(tmp_path):
  state = _tiny_state(tmp_path)
  _, like = _ours(34, 0.125, 5)
  with pytest.raises(ConfigError, match='missing key resnet.encoder.stages.0.'
                     'layers.2'):
    resnet_weights.convert(state, _unboxed(like))


@pytest.mark.parametrize('kw,match', [
    (dict(model_name='resnet'), 'init.method=pretrained loads ResNet '
     'checkpoints into model_name=resnet_imagenet; model is'),
    (dict(weights=''), 'init.method=pretrained needs init.weights'),
    (dict(head='old'), "unknown init.head 'old'; valid choices: auto, new, pretrained"),
])
def test_pretrained_init_options_are_checked(kw, match):
  from configs import common  # pylint: disable=g-import-not-at-top
  from distill import config_lib  # pylint: disable=g-import-not-at-top
  c = common.base_config()
  c.model_name = kw.pop('model_name', 'resnet_imagenet')
  c.total_steps = 1
  c.init.method = 'pretrained'
  c.init.weights = 'w.safetensors'
  c.init.update(kw)
  with pytest.raises(ConfigError, match=match):
    config_lib.validate(c)


def test_a_missing_weights_file_is_one_line(tmp_path):
  with pytest.raises(ConfigError, match='no such file'):
    resnet_weights.load(str(tmp_path / 'nope.safetensors'), {})
  (tmp_path / 'w.npz').write_bytes(b'x')
  with pytest.raises(ConfigError, match='unknown file type; valid choices: '
                     '.safetensors'):
    resnet_weights.load(str(tmp_path / 'w.npz'), {})
  with pytest.raises(ConfigError, match='a folder without model.safetensors '
                     'or pytorch_model.bin'):
    resnet_weights.load(str(tmp_path), {})


def test_reference_export_loads_strictly_into_the_reference(tmp_path):
  """--format=reference (distill/export.py: write_reference): a ResNet-18
  initialised here, with random BN statistics, written in torchvision's
  layout, loads with strict=True into the reference -- transformers'
  ResNetForImageClassification, torchvision not being installed; its keys
  are renamed by this file's own _to_torchvision, not by the library -- and
  gives the same logits in eval mode."""
  torch = pytest.importorskip('torch')
  from distill import export  # pylint: disable=g-import-not-at-top
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  model, like = _ours(18, 8 / 64, 5)
  rng = np.random.default_rng(3)
  variables = _unboxed(like)
  variables['batch_stats'] = jax.tree.map(
      lambda a: rng.uniform(0.5, 2.0, a.shape).astype(np.float32),
      variables['batch_stats'])
  variables['params'] = jax.tree.map(
      lambda a: a + rng.normal(0, 0.1, a.shape).astype(np.float32),
      variables['params'])
  export_config = {'model': {'depth': 18, 'width': 8 / 64},
                   'num_classes': 5, 'preprocessing': {'task': 'classify'}}
  export.write_reference(variables, export_config, str(tmp_path / 'ref'))
  state = st.load_file(str(tmp_path / 'ref' / 'model.safetensors'))
  ref = _hf_model('basic', (8, 16, 32, 64), (2, 2, 2, 2), num_labels=5)
  theirs = _to_torchvision({k: k for k in ref.state_dict()})
  assert sorted(theirs) == sorted(state)     # the same keys, no others
  ref.load_state_dict({hf: torch.from_numpy(state[tv].copy())
                       for tv, hf in theirs.items()}, strict=True)
  images = rng.normal(size=(3, 33, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(_logits(model, variables, images),
                             _torch_logits(ref.eval(), images),
                             atol=1e-4, rtol=1e-4)
  config = json.load(open(tmp_path / 'ref' / 'config.json'))
  assert config['architecture'] == 'resnet18'
  assert config['hidden_sizes'] == [8, 16, 32, 64]
  with pytest.raises(ConfigError, match='no reference equivalent.*params'):
    export.check_reference('cnn', {})
  with pytest.raises(ConfigError, match='residual=laurel.*params'):
    export.check_reference('resnet_imagenet', {'residual': 'laurel'})
